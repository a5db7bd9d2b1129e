"""The signed model bundle (format 1) as files: manifest, signing, verification, packing.

A bundle is a directory (or the same files in a ``.tar.gz``)::

    manifest.json   sorted-key JSON: format, model, version, name, embedder_id, labels,
                    thresholds, method, metrics, created, files {name: sha256}
    manifest.sig    raw 64-byte Ed25519 signature over manifest.json's exact bytes
    model.npz       plain arrays (no pickle); what they mean is ``facefleet.registry.inference``

Owns the one manifest builder (:func:`build_manifest`), the one manifest reader
(:func:`read_manifest`, unverified, for folders and archives) and the checks (:func:`verify`,
:func:`verify_bundle`, :func:`verify_checksums`). Imports numpy and cryptography only (never
sklearn, mlflow or pandas), and never loads a pickle.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from facefleet.errors import BundleError
from facefleet.fileio import replace_dir, sha256_file
from facefleet.fileio import sha256_bytes as _sha256_bytes

FORMAT = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
MODEL_FILE = "model.npz"
SIGNED_FILES = (MANIFEST, SIGNATURE)
MAX_MANIFEST_BYTES = 1 << 20


def _utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def build_manifest(
    *,
    model: str,
    version: int,
    name: str,
    embedder_id: str,
    labels: list[str],
    thresholds: dict[str, float],
    method: str,
    metrics: dict[str, float],
    created: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The manifest of a new bundle (``files`` is added by :func:`write_bundle`)."""
    return {
        "format": FORMAT,
        "model": model,
        "version": int(version),
        "name": name,
        "embedder_id": embedder_id,
        "labels": list(labels),
        "thresholds": {k: float(v) for k, v in thresholds.items()},
        "method": method,
        "metrics": {k: round(float(v), 6) for k, v in metrics.items()},
        "created": created
        or datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        **extra,
    }


# -- files -------------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if (
        not name
        or name in (MANIFEST, SIGNATURE, ".", "..")
        or "/" in name
        or "\\" in name
        or name.startswith(".")
    ):
        raise BundleError(f"bad bundle file name {name!r}")


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """The canonical bytes of a manifest: sorted keys, UTF-8, trailing newline."""
    return (json.dumps(manifest, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    for key, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise BundleError(f"array {key!r} has dtype object: bundles hold plain arrays only")
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


@contextlib.contextmanager
def _staged_dir(out_dir: Path) -> Iterator[Path]:
    """A hidden folder beside ``out_dir`` to fill; renamed over ``out_dir`` when the block
    ends without error, removed when it fails."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bundle(
    out_dir: Path,
    *,
    manifest: dict[str, Any],
    arrays: dict[str, np.ndarray],
    private_key,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write and sign a bundle directory atomically (built beside ``out_dir``, then renamed)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    files = {MODEL_FILE: _npz_bytes(arrays)}
    for name, data in (extra_files or {}).items():
        _check_name(name)
        if name == MODEL_FILE:
            raise BundleError(f"extra file {name!r} would replace the model arrays")
        files[name] = bytes(data)
    manifest = dict(manifest)
    manifest.setdefault("format", FORMAT)
    manifest["files"] = {name: _sha256_bytes(data) for name, data in sorted(files.items())}
    mbytes = manifest_bytes(manifest)
    signature = private_key.sign(mbytes)
    with _staged_dir(out_dir) as tmp:
        for name, data in [*files.items(), (MANIFEST, mbytes), (SIGNATURE, signature)]:
            with open(tmp / name, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
    return out_dir


def pack_bundle(bundle_dir: Path, out_path: Path) -> Path:
    """The bundle's files (flat, no folder) as a ``.tar.gz``, written atomically."""
    bundle_dir, out_path = Path(bundle_dir), Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp{os.getpid()}")
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for f in sorted(bundle_dir.iterdir()):
                if not f.is_file() or f.is_symlink():
                    raise BundleError(f"{f}: bundles hold regular files only")
                info = tar.gettarinfo(str(f), arcname=f.name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o644
                with open(f, "rb") as fh:
                    tar.addfile(info, fh)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out_path


def unpack_bundle(tar_path: Path, dest_dir: Path) -> Path:
    """Extract a packed bundle into ``dest_dir`` (atomically); refuses anything but flat
    regular files: absolute paths, '..', folders, links and devices are errors."""
    tar_path, dest_dir = Path(tar_path), Path(dest_dir)
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    with _staged_dir(dest_dir) as tmp:
        try:
            tar = tarfile.open(tar_path, "r:*")  # noqa: SIM115 - closed by the with below
        except (OSError, tarfile.TarError) as exc:
            raise BundleError(f"{tar_path}: not a readable bundle archive ({exc})") from None
        with tar:
            try:
                members = tar.getmembers()
            except (OSError, tarfile.TarError, EOFError) as exc:
                raise BundleError(f"{tar_path}: corrupt bundle archive ({exc})") from None
            seen: set[str] = set()
            for m in members:
                name = m.name
                if name.startswith("./"):
                    name = name[2:]
                if name.startswith("/") or ".." in name.split("/") or "/" in name:
                    raise BundleError(f"{tar_path}: refusing entry {m.name!r} (path outside)")
                if not m.isfile():
                    raise BundleError(f"{tar_path}: refusing entry {m.name!r} (not a file)")
                if name in seen:
                    raise BundleError(f"{tar_path}: duplicate entry {m.name!r}")
                seen.add(name)
                src = tar.extractfile(m)
                if src is None:  # pragma: no cover - isfile() guarantees a stream
                    raise BundleError(f"{tar_path}: unreadable entry {m.name!r}")
                try:
                    with src, open(tmp / name, "wb") as out:
                        shutil.copyfileobj(src, out)
                except (OSError, tarfile.TarError, EOFError) as exc:
                    raise BundleError(f"{tar_path}: corrupt bundle archive ({exc})") from None
    return dest_dir


def _is_archive(path: Path) -> bool:
    return path.is_file() and (path.name.endswith((".tar.gz", ".tgz")) or tarfile.is_tarfile(path))


def _verify_dir(bundle_dir: Path, public_key) -> dict[str, Any]:
    from cryptography.exceptions import InvalidSignature

    try:
        mbytes = (bundle_dir / MANIFEST).read_bytes()
        signature = (bundle_dir / SIGNATURE).read_bytes()
    except FileNotFoundError as exc:
        raise BundleError(f"{bundle_dir}: not a bundle ({Path(exc.filename).name} missing)") from None
    try:
        public_key.verify(signature, mbytes)
    except InvalidSignature:
        raise BundleError(
            f"{bundle_dir}: signature check failed (manifest or signature altered, "
            "or signed with another key)"
        ) from None
    try:
        manifest = json.loads(mbytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:  # signed but malformed
        raise BundleError(f"{bundle_dir}: manifest is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(
            f"{bundle_dir}: unsupported bundle format {manifest.get('format')!r} "
            f"(this facefleet reads format {FORMAT})"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or MODEL_FILE not in files:
        raise BundleError(f"{bundle_dir}: manifest lists no {MODEL_FILE}")
    for name, digest in files.items():
        _check_name(name)
        path = bundle_dir / name
        if not path.is_file() or path.is_symlink():
            raise BundleError(f"{bundle_dir}: {name} is missing")
        if sha256_file(path) != digest:
            raise BundleError(f"{bundle_dir}: checksum mismatch for {name} (file altered)")
    extra = sorted({p.name for p in bundle_dir.iterdir()} - set(files) - {MANIFEST, SIGNATURE})
    if extra:
        raise BundleError(f"{bundle_dir}: files not listed in the manifest: {', '.join(extra)}")
    return manifest


def verify_bundle(path: Path, public_key) -> dict[str, Any]:
    """Check signature, then every file's sha256 and that no unlisted file is present.

    ``path`` is a bundle directory or a packed ``.tar.gz``; returns the manifest.
    """
    path = Path(path)
    if path.is_dir():
        return _verify_dir(path, public_key)
    if not path.exists():
        raise BundleError(f"{path}: no such bundle")
    with tempfile.TemporaryDirectory(prefix="facefleet-bundle-") as tmp:
        return _verify_dir(unpack_bundle(path, Path(tmp) / "bundle"), public_key)


# -- reading and checking manifests -----------------------------------------------------


def _manifest_from_tar(path: Path) -> Any:
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if member.isfile() and member.name.rsplit("/", 1)[-1] == MANIFEST:
                    fh = tar.extractfile(member)
                    if fh is None:
                        break
                    return json.loads(fh.read(MAX_MANIFEST_BYTES))
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise BundleError(f"{path}: not a readable bundle archive ({exc})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: manifest.json is not valid JSON ({exc})") from None
    raise BundleError(f"{path}: no manifest.json in the archive (not a model bundle)")


def read_manifest(path: Path, *, need_files: bool = True) -> dict[str, Any]:
    """The manifest of a bundle folder or archive, NOT verified (see :func:`verify`): for
    listing and finding bundles. Checks model, version (and ``files`` with ``need_files``)."""
    path = Path(path)
    if path.is_dir():
        return _read_dir_manifest(path, need_files=need_files)
    if not path.is_file():
        raise BundleError(f"{path}: no such bundle")
    return check_manifest(_manifest_from_tar(path), str(path), need_files=need_files)


def sha256sum_lines(files: dict[str, str]) -> str:
    """The ``sha256sum -c`` input for ``{name: sha256}`` (two spaces, text mode)."""
    for name in files:
        if "/" in name or name.startswith(".") or "\n" in name:
            raise BundleError(f"manifest lists an unsafe file name {name!r}")
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(files.items()))


def _read_dir_manifest(bundle_dir: Path, *, need_files: bool = True) -> dict[str, Any]:
    """``manifest.json`` of an unpacked bundle, with a clear error when it is unusable."""
    path = Path(bundle_dir) / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{bundle_dir}: no manifest.json (not a model bundle)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    return check_manifest(manifest, str(path), need_files=need_files)


def check_manifest(manifest: Any, where: str = "manifest", *, need_files: bool = True) -> dict[str, Any]:
    """Validate the fields deployment relies on: model, version, files."""
    if not isinstance(manifest, dict):
        raise BundleError(f"{where}: expected a JSON object")
    model, version, files = manifest.get("model"), manifest.get("version"), manifest.get("files")
    if not isinstance(model, str) or not model or "/" in model or model.startswith("."):
        raise BundleError(f"{where}: 'model' must be a plain name, got {model!r}")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise BundleError(f"{where}: 'version' must be a non-negative integer, got {version!r}")
    if not need_files:
        return manifest
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
    manifest = _read_dir_manifest(bundle_dir)
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
    manifest = verify_bundle(Path(bundle_dir), public_key)
    return check_manifest(manifest, f"{bundle_dir}/manifest.json")


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """The plain arrays of ``model.npz`` (pickles refused)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (ValueError, OSError) as exc:  # checksum matched, so this is a writer bug
        raise BundleError(f"{path}: model arrays unreadable ({exc})") from None
