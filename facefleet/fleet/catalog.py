"""The server's bundle lookups for deploy, package and the model server: a reference or a
bundle path to a bundle, and packed archives of it.

Resolving references (number, ``vN``, ``@alias``, name, newest; MLflow or a plain folder with
``aliases.json``) is ``facefleet.registry.catalog``; this module adds bundle paths and packing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from facefleet.errors import BundleError, FacefleetError
from facefleet.registry.catalog import BundleRef, ResolvedVersion, resolve
from facefleet.registry.format import read_manifest

__all__ = ["BundleRef", "ResolvedVersion", "packed", "resolve_bundle"]

if TYPE_CHECKING:
    from facefleet.workspace import Workspace


def resolve_bundle(ws: Workspace, ref: str | None, *, alias: str | None = None) -> Path:
    """The bundle path a deploy/package reference names (a path always works)."""
    if ref is None and alias is None:
        raise FacefleetError("name a version, a bundle path, or --alias")
    if ref is not None:
        as_path = Path(ref).expanduser()
        if as_path.exists():
            try:
                read_manifest(as_path, need_files=False)
            except BundleError:
                raise BundleError(f"{as_path}: not a model bundle (no readable manifest.json)") from None
            return as_path
    text = f"@{alias.lstrip('@')}" if ref is None else str(ref)
    return resolve(ws, text).path


def packed(ws: Workspace, bundle: BundleRef | ResolvedVersion) -> Path:
    """A ``.tar.gz`` of the bundle: itself, or a cached pack in ``cache/bundles/``."""
    if bundle.path.is_file():
        return bundle.path
    from facefleet.registry.format import pack_bundle

    out = Path(ws.cache_dir) / "bundles" / f"{bundle.model}-{bundle.version}.tar.gz"
    manifest = bundle.path / "manifest.json"
    # a bundle folder is written once; a rewritten one (newer manifest) gets a fresh pack
    if not out.is_file() or out.stat().st_mtime < manifest.stat().st_mtime:
        pack_bundle(bundle.path, out)
    return out
