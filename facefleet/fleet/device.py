"""The device side of a deployment: install a bundle, switch ``current``, roll back, prune.

Layout under a models dir (the contract in docs/ARCHITECTURE.md)::

    <models_dir>/<model>/<version>/     one unpacked, verified bundle
    <models_dir>/<model>/current        symlink -> <version>
    <models_dir>/<model>/previous       symlink -> the version current pointed at before

Every change is atomic: bundles are unpacked and verified in a hidden temporary directory and
renamed into place; symlinks are switched by renaming a temporary symlink over the old one.
A crash leaves either the old state or the new one, plus at most a hidden ``.incoming-*`` dir
that the next install removes. Pure Python (numpy, cryptography through the bundle module):
usable on devices, by ``install.sh`` (``python3 -m facefleet.fleet.device install ...``) and
locally. Never imports sklearn, mlflow or pandas.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from facefleet.errors import BundleError, DeployError, FacefleetError
from facefleet.fileio import sha256_file

CURRENT = "current"
PREVIOUS = "previous"
TMP_PREFIX = ".incoming-"
SIGNED_FILES = ("manifest.json", "manifest.sig")
DEFAULT_KEEP = 3
# A hidden temp dir older than this is an abandoned install (a crash), not one in progress.
STALE_TMP_SECONDS = 3600


@dataclass
class InstallResult:
    """What an install did on one device."""

    model: str
    version: int
    old_version: int | None
    path: str
    switched: bool
    pruned: list[int]


# -- small pure helpers -------------------------------------------------------------------


def version_dirs(names: Sequence[str]) -> list[int]:
    """The version numbers among directory names (``"3"`` -> 3), ascending."""
    return sorted(int(n) for n in names if n.isdigit())


def versions_to_prune(versions: Sequence[int], keep: int, protect: Sequence[int | None]) -> list[int]:
    """Versions to remove so that the newest ``keep`` remain; never one in ``protect``."""
    if keep < 1:
        raise DeployError(f"keep must be at least 1, got {keep}")
    newest = set(sorted(versions, reverse=True)[:keep])
    guarded = {p for p in protect if p is not None}
    return sorted(v for v in versions if v not in newest and v not in guarded)


def sha256sum_lines(files: dict[str, str]) -> str:
    """The ``sha256sum -c`` input for ``{name: sha256}`` (two spaces, text mode)."""
    for name in files:
        if "/" in name or name.startswith(".") or "\n" in name:
            raise BundleError(f"manifest lists an unsafe file name {name!r}")
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(files.items()))


def read_manifest(bundle_dir: Path) -> dict[str, Any]:
    """``manifest.json`` of an unpacked bundle, with a clear error when it is unusable."""
    path = Path(bundle_dir) / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{bundle_dir}: no manifest.json (not a model bundle)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    return check_manifest(manifest, str(path))


def check_manifest(manifest: Any, where: str = "manifest") -> dict[str, Any]:
    """Validate the fields deployment relies on: model, version, files."""
    if not isinstance(manifest, dict):
        raise BundleError(f"{where}: expected a JSON object")
    model, version, files = manifest.get("model"), manifest.get("version"), manifest.get("files")
    if not isinstance(model, str) or not model or "/" in model or model.startswith("."):
        raise BundleError(f"{where}: 'model' must be a plain name, got {model!r}")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise BundleError(f"{where}: 'version' must be a non-negative integer, got {version!r}")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{where}: 'files' must map file names to sha256 digests")
    sha256sum_lines(files)  # rejects unsafe names
    return manifest


def verify_checksums(bundle_dir: Path) -> dict[str, Any]:
    """Check every file the manifest lists against its sha256, and that nothing else is there.

    This is what ``sha256sum -c`` does on a device without Python; it does not check the
    signature (see :func:`verify`).
    """
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    files: dict[str, str] = manifest["files"]
    present = {p.name for p in bundle_dir.iterdir()}
    extra = present - set(files) - set(SIGNED_FILES)
    if extra:
        raise BundleError(f"{bundle_dir}: files not in the manifest: {', '.join(sorted(extra))}")
    for name, digest in sorted(files.items()):
        path = bundle_dir / name
        if not path.is_file() or path.is_symlink():
            raise BundleError(f"{bundle_dir}: {name} is missing")
        if sha256_file(path) != digest:
            raise BundleError(f"{bundle_dir}: {name} does not match its sha256 in the manifest")
    return manifest


def verify(bundle_dir: Path, public_key: Any | None) -> dict[str, Any]:
    """Verify an unpacked bundle: the signature (when a key is given), then every sha256."""
    if public_key is None:
        return verify_checksums(bundle_dir)
    from facefleet.registry.bundle import verify_bundle

    manifest = verify_bundle(Path(bundle_dir), public_key)
    return check_manifest(manifest, f"{bundle_dir}/manifest.json")


# -- symlinks -----------------------------------------------------------------------------


def link_target(link: Path) -> int | None:
    """The version a ``current``/``previous`` symlink points at, or None."""
    try:
        target = os.readlink(link)
    except (FileNotFoundError, OSError):
        return None
    name = Path(target).name
    return int(name) if name.isdigit() else None


def set_link(model_dir: Path, name: str, version: int | None) -> None:
    """Point ``model_dir/name`` at ``version`` atomically (remove it when ``version`` is None)."""
    link = Path(model_dir) / name
    if version is None:
        if link.is_symlink():
            link.unlink()
        return
    if not (Path(model_dir) / str(version)).is_dir():
        raise DeployError(f"{model_dir}: no version {version} to point {name} at")
    tmp = Path(model_dir) / f".{name}.tmp{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(str(version), tmp)  # relative: the models dir can move or be mounted elsewhere
    os.replace(tmp, link)


def switch(model_dir: Path, version: int) -> int | None:
    """Make ``version`` current, the old current previous. Returns the old current."""
    model_dir = Path(model_dir)
    old = link_target(model_dir / CURRENT)
    if old == version:
        return old
    set_link(model_dir, CURRENT, version)
    if old is not None and (model_dir / str(old)).is_dir():
        set_link(model_dir, PREVIOUS, old)
    return old


def rollback(model_dir: Path) -> tuple[int | None, int]:
    """Swap ``current`` and ``previous``; returns ``(from, to)``."""
    model_dir = Path(model_dir)
    cur, prev = link_target(model_dir / CURRENT), link_target(model_dir / PREVIOUS)
    if prev is None or not (model_dir / str(prev)).is_dir():
        raise DeployError(f"{model_dir}: no previous version to roll back to")
    set_link(model_dir, CURRENT, prev)
    if cur is not None and (model_dir / str(cur)).is_dir():
        set_link(model_dir, PREVIOUS, cur)
    return cur, prev


def prune(model_dir: Path, keep: int = DEFAULT_KEEP) -> list[int]:
    """Remove all but the newest ``keep`` versions (never current or previous) and stale temps."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    names = [p.name for p in model_dir.iterdir() if p.is_dir() and not p.is_symlink()]
    protect = [link_target(model_dir / CURRENT), link_target(model_dir / PREVIOUS)]
    doomed = versions_to_prune(version_dirs(names), keep, protect)
    for version in doomed:
        shutil.rmtree(model_dir / str(version))
    now = time.time()
    for name in names:
        path = model_dir / name
        if name.startswith(TMP_PREFIX) and now - path.stat().st_mtime > STALE_TMP_SECONDS:
            shutil.rmtree(path, ignore_errors=True)
    return doomed


def state(models_dir: Path, model: str) -> dict[str, Any]:
    """What a device holds for ``model``: current, previous, and the versions on disk."""
    model_dir = Path(models_dir) / model
    names = [p.name for p in model_dir.iterdir() if p.is_dir()] if model_dir.is_dir() else []
    return {
        "model": model,
        "current": link_target(model_dir / CURRENT),
        "previous": link_target(model_dir / PREVIOUS),
        "versions": version_dirs(names),
    }


# -- install ------------------------------------------------------------------------------


def _unpack(source: Path, dest: Path) -> None:
    if source.is_dir():
        for item in source.iterdir():
            if item.is_symlink() or not item.is_file():
                raise BundleError(f"{source}: {item.name} is not a regular file")
            shutil.copy2(item, dest / item.name)
        return
    from facefleet.registry.bundle import unpack_bundle

    inner = Path(unpack_bundle(source, dest / "unpacked"))
    # unpack_bundle may return the bundle folder itself or a folder holding it
    if not (inner / "manifest.json").is_file():
        found = [p for p in inner.iterdir() if (p / "manifest.json").is_file()]
        if len(found) != 1:
            raise BundleError(f"{source}: no bundle (manifest.json) inside the archive")
        inner = found[0]
    for item in inner.iterdir():
        os.replace(item, dest / item.name)
    shutil.rmtree(dest / "unpacked")


def install(
    models_dir: Path,
    source: Path,
    public_key: Any | None,
    *,
    keep: int = DEFAULT_KEEP,
    switch_current: bool = True,
) -> InstallResult:
    """Unpack ``source`` (bundle dir or .tar.gz), verify it, move it into place, switch, prune.

    With ``public_key`` None only the sha256s are checked (the caller has said so explicitly).
    On any failure nothing changes: the temporary directory is removed and ``current`` stays.
    """
    models_dir, source = Path(models_dir), Path(source)
    if not source.exists():
        raise BundleError(f"{source}: no such bundle")
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=models_dir))
    try:
        _unpack(source, staging)
        manifest = verify(staging, public_key)
        model, version = manifest["model"], int(manifest["version"])
        model_dir = models_dir / model
        model_dir.mkdir(exist_ok=True)
        final = model_dir / str(version)
        if final.is_dir():
            try:
                verify(final, public_key)
            except BundleError:
                if link_target(model_dir / CURRENT) == version:
                    raise DeployError(
                        f"{final} is current but damaged; switch to another version first"
                    ) from None
                shutil.rmtree(final)
        if not final.is_dir():
            os.replace(staging, final)  # same filesystem: atomic
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    old = link_target(model_dir / CURRENT)
    if switch_current:
        switch(model_dir, version)
    pruned = prune(model_dir, keep)
    return InstallResult(model, version, old, str(final), switch_current and old != version, pruned)


# -- command line (used by install.sh and for local use) ----------------------------------


def _load_key(path: str | None, insecure: bool) -> Any | None:
    if path:
        from facefleet.registry.keys import load_public_key

        return load_public_key(Path(path))
    if insecure:
        return None
    raise FacefleetError("--public-key FILE is required (or --checksums-only to skip the signature)")


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 -m facefleet.fleet.device install|switch|rollback|prune|status ...``"""
    parser = argparse.ArgumentParser(prog="python3 -m facefleet.fleet.device")
    parser.add_argument("--models-dir", required=True, help="models folder on this device")
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("install", help="verify a bundle and make it current")
    p.add_argument("bundle", help="bundle folder or .tar.gz")
    p.add_argument("--public-key", help="PEM public key the bundle must be signed with")
    p.add_argument("--checksums-only", action="store_true", help="skip the signature check")
    p.add_argument("--keep", type=int, default=DEFAULT_KEEP, help="versions to keep")
    p = sub.add_parser("switch", help="make an installed version current")
    p.add_argument("model")
    p.add_argument("version", type=int)
    p = sub.add_parser("rollback", help="swap current and previous")
    p.add_argument("model")
    p = sub.add_parser("prune", help="remove old versions")
    p.add_argument("model")
    p.add_argument("--keep", type=int, default=DEFAULT_KEEP)
    p = sub.add_parser("status", help="print current/previous/versions as JSON")
    p.add_argument("model")
    args = parser.parse_args(argv)
    models_dir = Path(args.models_dir)
    try:
        if args.action == "install":
            key = _load_key(args.public_key, args.checksums_only)
            out: Any = asdict(install(models_dir, Path(args.bundle), key, keep=args.keep))
        elif args.action == "switch":
            out = {"old": switch(models_dir / args.model, args.version), "new": args.version}
        elif args.action == "rollback":
            old, new = rollback(models_dir / args.model)
            out = {"old": old, "new": new}
        elif args.action == "prune":
            out = {"removed": prune(models_dir / args.model, args.keep)}
        else:
            out = state(models_dir, args.model)
    except (FacefleetError, OSError) as exc:
        print(f"facefleet: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
