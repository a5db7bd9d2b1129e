"""Installing a bundle on a device: unpack, verify, move into the model-folder layout, switch.

The folder layout and its switch/rollback/prune rules are ``facefleet.layout``; this
module adds installing a verified bundle into it.

Every change is atomic: bundles are unpacked and verified in a hidden temporary directory and
renamed into place; symlinks are switched by renaming a temporary symlink over the old one.
A crash leaves either the old state or the new one, plus at most a hidden ``.incoming-*`` dir
that the next install removes. Pure Python (cryptography through ``registry.format``):
usable on devices, by ``install.sh`` (``python3 -m facefleet.fleet.device install ...``), by
the pull client and locally; ``facefleet.fleet.device`` is its command line. Never imports
sklearn, mlflow or pandas.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facefleet.errors import BundleError, DeployError
from facefleet.layout import (
    CURRENT,
    DEFAULT_KEEP,
    TMP_PREFIX,
    link_target,
    prune,
    switch,
)
from facefleet.registry.format import unpack_bundle, verify
from facefleet.registry.inference import verify_complete


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


# -- install ------------------------------------------------------------------------------


def _unpack(source: Path, dest: Path) -> None:
    if source.is_dir():
        for item in source.iterdir():
            if item.is_symlink() or not item.is_file():
                raise BundleError(f"{source}: {item.name} is not a regular file")
            shutil.copy2(item, dest / item.name)
        return
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
    check_embedder: bool = True,
) -> InstallResult:
    """Unpack ``source`` (bundle dir or .tar.gz), verify it, move it into place, switch, prune.

    Verification is :func:`~facefleet.registry.inference.verify_complete` (what ``recognize``
    checks: signature, sha256s, loadable arrays, an embedder this device has). With
    ``public_key`` None the signature is skipped (the caller has said so explicitly).
    On any failure nothing changes: the temporary directory is removed and ``current`` stays.
    """
    models_dir, source = Path(models_dir), Path(source)
    if not source.exists():
        raise BundleError(f"{source}: no such bundle")
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=models_dir))
    try:
        _unpack(source, staging)
        manifest = verify_complete(staging, public_key, check_embedder=check_embedder)
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
