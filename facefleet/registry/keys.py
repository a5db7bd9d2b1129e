"""Ed25519 signing keys for model bundles.

The private key is created once on the training server (``facefleet keys init``), readable by
its owner only, and never leaves it; devices get the public key.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from facefleet.errors import BundleError, FacefleetError
from facefleet.settings import PRIVATE_KEY_NAME, PUBLIC_KEY_NAME

PRIVATE_NAME = PRIVATE_KEY_NAME
PUBLIC_NAME = PUBLIC_KEY_NAME


def private_key_path(keys_dir: Path) -> Path:
    return Path(keys_dir) / PRIVATE_NAME


def public_key_path(keys_dir: Path) -> Path:
    return Path(keys_dir) / PUBLIC_NAME


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write through a temp file created with ``mode`` (never briefly world-readable), rename."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def generate_keypair(keys_dir: Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Create ``signing_key.pem`` (0600) and ``signing_key.pub.pem`` in ``keys_dir``."""
    keys_dir = Path(keys_dir)
    priv_path, pub_path = private_key_path(keys_dir), public_key_path(keys_dir)
    if priv_path.exists() and not overwrite:
        raise FacefleetError(
            f"{priv_path} already exists; bundles signed with it would no longer verify "
            "on devices if it were replaced (use --force to replace it anyway)"
        )
    keys_dir.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    priv_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new(priv_path, priv_pem, 0o600)
    _write_new(pub_path, pub_pem, 0o644)
    return priv_path, pub_path


def ensure_keypair(keys_dir: Path) -> bool:
    """Create the key pair in ``keys_dir`` unless either half exists; True when created here.
    Serialised between processes (two first trainings at once must not each write a pair and
    sign with a key the other replaced)."""
    keys_dir = Path(keys_dir)
    priv_path, pub_path = private_key_path(keys_dir), public_key_path(keys_dir)
    if priv_path.exists() or pub_path.exists():
        return False
    import fcntl

    keys_dir.mkdir(parents=True, exist_ok=True)
    with open(keys_dir / ".create.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            if priv_path.exists() or pub_path.exists():
                return False  # another process made it while this one waited
            generate_keypair(keys_dir)
            return True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key at ``path`` (PEM, unencrypted)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FacefleetError(f"no signing key at {path}: create one with 'facefleet keys init'") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise FacefleetError(f"{path}: not a usable PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise FacefleetError(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(path_or_pem: Path | str | bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file or PEM bytes."""
    if isinstance(path_or_pem, bytes):
        data, where = path_or_pem, "public key"
    else:
        where = str(path_or_pem)
        try:
            data = Path(path_or_pem).read_bytes()
        except FileNotFoundError:
            raise BundleError(f"no public key at {where}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise BundleError(f"{where}: not a usable PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"{where}: not an Ed25519 public key")
    return key
