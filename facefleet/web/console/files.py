"""Files the console shows: workspace paths resolved safely, face thumbnails, upload checks.

A path is served only when, after resolving every symlink, it is a regular image file inside
the resolved workspace root: ``../`` and symlinks pointing out are refused. Files go to the
browser as they are, so only the types a browser shows; thumbnails (face box plus a margin,
longest side ``THUMB_PX``) are made from any photo facefleet reads (ORL's PGM, TIFF) and
cached as JPEG in ``cache/thumbs/<face id>-<image sha[:12]>.jpg``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from facefleet.errors import FacefleetError
from facefleet.vision.image import IMAGE_SUFFIXES as READABLE_SUFFIXES

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}
MEDIA_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
    ".gif": "image/gif",
}
THUMB_PX = 112
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class PathRefusedError(FacefleetError):
    """A requested file is outside the workspace, not an image, or missing."""


def inside(root: Path, candidate: Path | str, suffixes: set[str] = IMAGE_SUFFIXES) -> Path:
    """``candidate`` (absolute, or relative to ``root``) resolved, when it stays inside
    ``root`` and is an image file (one of ``suffixes``); ``PathRefusedError`` otherwise."""
    base = Path(root).resolve()
    raw = Path(candidate)
    if not raw.is_absolute():
        if ".." in raw.parts:
            raise PathRefusedError("path leaves the workspace")
        raw = base / raw
    try:
        real = raw.resolve(strict=True)
    except (OSError, RuntimeError):
        raise PathRefusedError("no such file") from None
    if not real.is_relative_to(base):
        raise PathRefusedError("path leaves the workspace")
    if real.suffix.lower() not in suffixes or not real.is_file():
        raise PathRefusedError("not an image file")
    return real


def relative(root: Path, path: Path | str) -> str | None:
    """``path`` relative to the workspace root, or None when it lies outside."""
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except (OSError, ValueError):
        return None


def crop_box(
    shape: tuple[int, int], box: tuple[int, int, int, int], margin: float = 0.25
) -> tuple[int, int, int, int]:
    """The face box grown by ``margin`` on each side, squared and clipped to the image (pure)."""
    h, w = shape
    left, top, right, bottom = box
    side = max(right - left, bottom - top) * (1 + 2 * margin)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    x1, y1 = int(min(w, cx + side / 2)), int(min(h, cy + side / 2))
    if x1 <= x0 or y1 <= y0:
        return 0, 0, w, h
    return x0, y0, x1, y1


def thumbnail(root: Path, cache: Path, face_id: int, image_path: str, sha: str, box: tuple) -> Path:
    """The cached JPEG thumbnail of one face (made on first request)."""
    out = Path(cache) / "thumbs" / f"{int(face_id)}-{sha[:12]}.jpg"
    if out.exists():
        return out
    import cv2

    source = inside(root, image_path, READABLE_SUFFIXES)
    bgr = cv2.imread(str(source), cv2.IMREAD_COLOR)
    if bgr is None:
        raise PathRefusedError("unreadable image")
    x0, y0, x1, y1 = crop_box(bgr.shape[:2], tuple(int(v) for v in box))
    crop = bgr[y0:y1, x0:x1]
    scale = THUMB_PX / max(crop.shape[:2])
    if scale < 1:
        crop = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))))
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(crop), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise PathRefusedError("could not encode a thumbnail")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data.tobytes())
    tmp.replace(out)
    return out


def safe_name(filename: str, index: int) -> str:
    """An upload's file name reduced to a safe base name (directories dropped)."""
    base = Path(filename.replace("\\", "/")).name
    stem, suffix = os.path.splitext(base)
    stem = _SAFE.sub("_", stem).strip("._")[:80] or f"upload{index}"
    suffix = suffix.lower() if suffix.lower() in IMAGE_SUFFIXES else ".img"
    return f"{index:03d}_{stem}{suffix}"
