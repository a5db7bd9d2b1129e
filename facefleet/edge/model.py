"""Which model bundle the device runs, and hot reload: a changed ``current`` symlink (or a
changed bundle file) is noticed within about a second, verified, and swapped in without
stopping the stream; a bundle that fails verification is refused and the old one kept."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from facefleet.errors import BundleError
from facefleet.layout import CURRENT
from facefleet.registry.format import MANIFEST
from facefleet.registry.inference import load_bundle

log = logging.getLogger(__name__)


def _is_bundle_dir(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST).is_file()


def newest_version_dir(model_dir: Path) -> Path | None:
    """The highest numbered version folder holding a bundle, or None."""
    versions = [p for p in model_dir.iterdir() if p.name.isdigit() and _is_bundle_dir(p)]
    return max(versions, key=lambda p: int(p.name)) if versions else None


def resolve_model(path: Path) -> Path:
    """The bundle to load for ``path``: a bundle folder, a ``.tar.gz``, or a
    ``<models_dir>/<model>`` folder (its ``current`` symlink, else its newest version)."""
    path = Path(path).expanduser()
    if path.is_file() or _is_bundle_dir(path):
        return path
    if path.is_dir():
        current = path / CURRENT
        if current.is_symlink() or current.exists():
            target = current.resolve()
            if not _is_bundle_dir(target):
                raise BundleError(f"{current} points to {target}, which holds no bundle")
            return target
        newest = newest_version_dir(path)
        if newest is not None:
            return newest
        raise BundleError(f"{path}: no bundle here (no manifest.json, no 'current', no versions)")
    raise BundleError(f"{path}: no such model (give a bundle folder, a .tar.gz or a models folder)")


def fingerprint(path: Path) -> tuple:
    """What changes when the bundle ``path`` resolves to is replaced or altered."""
    target = resolve_model(path)
    if target.is_file():
        st = target.stat()
        return (str(target), st.st_mtime_ns, st.st_size)
    files = []
    for f in sorted(target.iterdir()):
        try:
            st = f.stat()
        except FileNotFoundError:
            continue
        files.append((f.name, st.st_mtime_ns, st.st_size))
    return (str(target), tuple(files))


class ModelWatcher:
    """Loads the bundle behind ``path`` and reloads it when it changes."""

    def __init__(
        self, path: Path, public_key, *, expected_embedder_id: str | None = None, interval: float = 1.0
    ) -> None:
        self.path = Path(path)
        self.public_key = public_key
        self.expected_embedder_id = expected_embedder_id
        self.interval = interval
        self.bundle = None
        self._seen: tuple | None = None
        self._next_check = 0.0
        self.reloads = 0
        self.refused = 0

    def load(self):
        """Load the current bundle (raises BundleError when it does not verify)."""
        seen = fingerprint(self.path)
        self.bundle = load_bundle(resolve_model(self.path), self.public_key, self.expected_embedder_id)
        self._seen = seen
        self._next_check = time.monotonic() + self.interval
        return self.bundle

    def poll(self, now: float | None = None):
        """A newly verified bundle when the installed one changed since the last check (at
        most every ``interval`` seconds), else None."""
        now = time.monotonic() if now is None else now
        if now < self._next_check:
            return None
        self._next_check = now + self.interval
        try:
            seen = fingerprint(self.path)
        except (BundleError, OSError) as exc:
            if self._seen != ("missing", str(exc)):
                log.error("model check: %s; keeping version %s", exc, self.version)
                self._seen = ("missing", str(exc))
            return None
        if seen == self._seen:
            return None
        self._seen = seen  # refuse a bad bundle once, not every second
        try:
            bundle = load_bundle(resolve_model(self.path), self.public_key, self.expected_embedder_id)
        except (BundleError, OSError) as exc:
            self.refused += 1
            log.error("refused new model: %s; keeping version %s", exc, self.version)
            return None
        old, self.bundle = self.version, bundle
        self.reloads += 1
        log.warning("model reloaded: version %s -> %s", old, self.version)
        return bundle

    @property
    def version(self):
        return None if self.bundle is None else self.bundle.version
