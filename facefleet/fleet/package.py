"""Offline packages for air-gapped devices: the bundle archive, the public key, ``install.sh``.

``install.sh`` (template beside this module) verifies the signature through
``python3 -m facefleet.fleet.device install`` when facefleet is on the device, and otherwise
at least checks every sha256 with ``sha256sum`` (``FILES.sha256``, from the verified manifest),
then switches ``current`` atomically like a push deploy.
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from facefleet import layout
from facefleet.errors import FacefleetError
from facefleet.fileio import atomic_write_bytes, atomic_write_text, sha256_file
from facefleet.registry.format import SIGNED_FILES, sha256sum_lines
from facefleet.registry.inference import verify_complete
from facefleet.settings import PUBLIC_KEY_NAME


def render_install_sh(model: str, version: int, name: str, archive: str) -> str:
    """The install script with this package's model, version and archive name filled in."""
    template = resources.files("facefleet.fleet").joinpath("install.sh").read_text("utf-8")
    for key, value in {
        "@MODEL@": model,
        "@VERSION@": str(version),
        "@NAME@": name or "-",
        "@ARCHIVE@": archive,
    }.items():
        if key != "@NAME@" and shlex.quote(value) != value:
            raise FacefleetError(f"{key.strip('@').lower()} {value!r} is not safe in a script")
        template = template.replace(key, value)
    # the folder rules come from the one layout definition, not a copy in the template
    for key, value in {
        "@SWITCH@": layout.sh_switch("MDIR", "VERSION"),
        "@PRUNE@": layout.sh_prune("MDIR", "KEEP"),
        "@TMP_PREFIX@": layout.TMP_PREFIX,
    }.items():
        template = template.replace(key, value)
    return template


def make_package(
    bundle: Path, public_key_path: Path, out_dir: Path, *, public_key: Any | None = None
) -> Path:
    """Write an offline package for ``bundle`` (folder or .tar.gz) to ``out_dir``."""
    from facefleet.registry.format import pack_bundle, unpack_bundle
    from facefleet.registry.keys import load_public_key

    key = public_key or load_public_key(Path(public_key_path))
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="facefleet-package-") as tmp:
        src = Path(bundle)
        if src.is_file():
            src = unpack_bundle(src, Path(tmp) / "bundle")
        manifest = verify_complete(src, key)  # never package something that would not install
        model, version = manifest["model"], int(manifest["version"])
        archive = f"{model}-{version}.tar.gz"
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
        try:
            pack_bundle(src, staging / archive)
            shutil.copyfile(public_key_path, staging / PUBLIC_KEY_NAME)
            sums = dict(manifest["files"])
            for name in SIGNED_FILES:
                sums[name] = sha256_file(src / name)
            atomic_write_text(staging / "FILES.sha256", sha256sum_lines(sums))
            script = staging / "install.sh"
            atomic_write_text(
                script, render_install_sh(model, version, str(manifest.get("name", "")), archive)
            )
            script.chmod(0o755)
            pkg_sums = {n: sha256_file(staging / n) for n in (archive, PUBLIC_KEY_NAME, "FILES.sha256")}
            atomic_write_bytes(staging / "SHA256SUMS", sha256sum_lines(pkg_sums).encode())
            if out_dir.exists():
                if any(out_dir.iterdir()):
                    raise FacefleetError(f"{out_dir} exists and is not empty")
                out_dir.rmdir()
            staging.rename(out_dir)  # the package appears whole or not at all
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return out_dir
