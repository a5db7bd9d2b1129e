"""Device snapshots: the small JPEG a device may send with its heartbeat, kept as the latest
one per device in ``snapshots/<device>.jpg`` in the workspace (written atomically)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from pathlib import Path
from typing import Any

from facefleet.errors import FacefleetError
from facefleet.fileio import atomic_write_bytes

MAX_BYTES = 256 * 1024
_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


def snapshot_dir(ws: Any) -> Path:
    return Path(ws.root) / "snapshots"


def file_name(device: str) -> str:
    """A file name for a device: the name itself when it is plain, else a hash of it (pure)."""
    if _SAFE.match(device) and not device.startswith("."):
        return f"{device}.jpg"
    return "d-" + hashlib.sha256(device.encode("utf-8")).hexdigest()[:24] + ".jpg"


def decode(text: str) -> bytes:
    """A base64 JPEG from a heartbeat: checked for size and the JPEG markers."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise FacefleetError("snapshot: not valid base64") from None
    if len(data) > MAX_BYTES:
        raise FacefleetError(f"snapshot: {len(data)} bytes, more than {MAX_BYTES}")
    if not (data.startswith(b"\xff\xd8\xff") and data.rstrip(b"\x00").endswith(b"\xff\xd9")):
        raise FacefleetError("snapshot: not a JPEG image")
    return data


def save_snapshot(ws: Any, device: str, data: bytes) -> Path:
    """Keep ``data`` as ``device``'s latest snapshot."""
    path = snapshot_dir(ws) / file_name(device)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return path


def snapshot_path(ws: Any, device: str) -> Path | None:
    path = snapshot_dir(ws) / file_name(device)
    return path if path.is_file() else None
