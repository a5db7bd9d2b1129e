"""Where the server finds bundles: resolving a reference to a bundle, the aliases, packing.

A reference is a bundle path (folder or ``.tar.gz``, always accepted), a version number
(``3``/``v3``), a human name, or ``@alias``. Numbers, names and aliases go through the MLflow
registry (``facefleet.registry.versions``) when it is reachable; without it, versions are
found by scanning the workspace's ``models/`` for bundle manifests and aliases are read from
the JSON fallback file ``models/aliases.json`` (``{"face_model": {"production": 3}}``).
"""

from __future__ import annotations

import json
import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facefleet.errors import BundleError, FacefleetError

if TYPE_CHECKING:
    from facefleet.workspace import Workspace

log = logging.getLogger(__name__)

ALIASES_FILE = "aliases.json"
MAX_SCAN = 10_000  # files examined when scanning a models folder


@dataclass(frozen=True)
class BundleRef:
    """A bundle on the server: where it is and what its manifest says."""

    path: Path
    model: str
    version: int
    name: str


def _manifest_from_tar(path: Path) -> dict[str, Any] | None:
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if member.isfile() and member.name.rsplit("/", 1)[-1] == "manifest.json":
                    fh = tar.extractfile(member)
                    return json.loads(fh.read(1 << 20)) if fh else None
    except (OSError, tarfile.TarError, EOFError, ValueError):
        return None
    return None


def read_manifest_any(path: Path) -> dict[str, Any] | None:
    """The (unverified) manifest of a bundle folder or archive, or None when it is not one."""
    path = Path(path)
    try:
        if path.is_dir():
            data = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        elif path.is_file():
            data = _manifest_from_tar(path)
        else:
            return None
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("version"), int):
        return None
    if not isinstance(data.get("model"), str):
        return None
    return data


def scan_bundles(root: Path) -> dict[tuple[str, int], BundleRef]:
    """Every bundle (folder with manifest.json + manifest.sig, or .tar.gz) under ``root``.

    A folder wins over an archive of the same version; hidden entries are skipped.
    """
    found: dict[tuple[str, int], BundleRef] = {}
    root = Path(root)
    if not root.is_dir():
        return found
    seen = 0
    for path in sorted(root.rglob("*")):
        seen += 1
        if seen > MAX_SCAN:
            log.warning("stopped scanning %s after %d entries", root, MAX_SCAN)
            break
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        if path.is_symlink():
            continue
        is_dir = path.is_dir() and (path / "manifest.sig").is_file()
        is_tar = path.is_file() and path.name.endswith((".tar.gz", ".tgz"))
        if not (is_dir or is_tar):
            continue
        manifest = read_manifest_any(path)
        if manifest is None:
            continue
        key = (manifest["model"], int(manifest["version"]))
        if key in found and not is_dir:
            continue
        found[key] = BundleRef(path, key[0], key[1], str(manifest.get("name", "")))
    return found


def read_aliases(ws: Workspace) -> dict[str, dict[str, int]]:
    """The JSON alias fallback ``models/aliases.json`` (empty when absent)."""
    path = Path(ws.models_dir) / ALIASES_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise FacefleetError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise FacefleetError(f"{path}: expected {{model: {{alias: version}}}}")
    return {str(m): {str(a): int(v) for a, v in (al or {}).items()} for m, al in data.items()}


def _mlflow_version(ws: Workspace, ref: str) -> int | None:
    """The version MLflow resolves ``ref`` to, or None when the registry isn't usable."""
    db = Path(ws.root) / "mlflow.db"
    configured = ws.configured_tracking_uri
    if not configured and not db.exists():
        return None  # no registry in this workspace: don't pay for importing mlflow
    try:
        from facefleet.registry.versions import resolve_version
    except ImportError:
        return None
    try:
        return int(resolve_version(ws, ref).version)
    except FacefleetError as exc:
        log.info("registry could not resolve %s: %s", ref, exc)
        return None
    except Exception as exc:  # noqa: BLE001 - an unreachable tracking server is not fatal here
        log.warning("MLflow registry unreachable (%s); using %s", exc, ALIASES_FILE)
        return None


def resolve_version_number(ws: Workspace, model: str, ref: str) -> int:
    """A version number for ``ref``: the registry first, then the JSON aliases / bundle names."""
    ref = str(ref).strip()
    number = _mlflow_version(ws, ref)
    if number is not None:
        return number
    if ref.startswith("@"):
        alias = ref[1:]
        held = read_aliases(ws).get(model, {})
        if alias not in held:
            raise FacefleetError(
                f"no version of {model!r} holds @{alias} (registry unavailable or no such alias;"
                f" fallback file {Path(ws.models_dir) / ALIASES_FILE})"
            )
        return held[alias]
    digits = ref[1:] if ref[:1] in "vV" and ref[1:].isdigit() else ref
    if digits.isdigit():
        return int(digits)
    named = [b for b in scan_bundles(ws.models_dir).values() if b.model == model and b.name == ref]
    if len(named) == 1:
        return named[0].version
    raise FacefleetError(f"cannot resolve {ref!r} to a version of {model!r}")


def find_bundle(ws: Workspace, model: str, version: int) -> BundleRef:
    """The bundle for ``model`` version ``version`` in the workspace's models folder."""
    found = scan_bundles(ws.models_dir).get((model, version))
    if found is None:
        raise BundleError(f"no bundle for {model} v{version} under {ws.models_dir}")
    return found


def resolve_bundle(ws: Workspace, ref: str | None, *, alias: str | None = None) -> Path:
    """The bundle path a deploy/package reference names (a path always works)."""
    if ref is None and alias is None:
        raise FacefleetError("name a version, a bundle path, or --alias")
    if ref is not None:
        as_path = Path(ref).expanduser()
        if as_path.exists():
            if read_manifest_any(as_path) is None:
                raise BundleError(f"{as_path}: not a model bundle (no readable manifest.json)")
            return as_path
    text = f"@{alias.lstrip('@')}" if ref is None else str(ref)
    model = ws.model_name
    try:
        from facefleet.train.pipeline import latest_bundle  # the trainer's own lookup, if any
    except ImportError:
        latest_bundle = None
    if latest_bundle is not None:
        try:
            found = latest_bundle(ws, text)
        except FacefleetError:
            found = None
        if found is not None and Path(found).exists():
            return Path(found)
    return find_bundle(ws, model, resolve_version_number(ws, model, text)).path


def packed(ws: Workspace, bundle: BundleRef) -> Path:
    """A ``.tar.gz`` of the bundle: itself, or a cached pack in ``cache/bundles/``."""
    if bundle.path.is_file():
        return bundle.path
    from facefleet.registry.bundle import pack_bundle

    out = Path(ws.cache_dir) / "bundles" / f"{bundle.model}-{bundle.version}.tar.gz"
    manifest = bundle.path / "manifest.json"
    # a bundle folder is written once; a rewritten one (newer manifest) gets a fresh pack
    if not out.is_file() or out.stat().st_mtime < manifest.stat().st_mtime:
        pack_bundle(bundle.path, out)
    return out
