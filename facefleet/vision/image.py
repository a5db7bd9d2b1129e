"""Image loading: any photo a user may have, as an RGB uint8 array, or a clear ImageError.

Handles EXIF rotation, greyscale, RGBA / LA (composited on white), 16-bit and palette PNG,
CMYK; refuses truncated, corrupt, non-image and absurdly large files.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from facefleet.errors import ImageError
from facefleet.fileio import open_regular

MAX_FILE_BYTES = 100 * 1024 * 1024
MAX_PIXELS = 60_000_000  # ~ 9500 x 6300: larger is a decompression bomb or a mistake
IMAGE_SUFFIXES = {
    ".jpg",
    ".jpeg",
    ".png",
    ".pgm",
    ".ppm",
    ".pbm",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
}


def is_image_name(path: Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _to_rgb_array(img) -> np.ndarray:  # img: PIL.Image.Image
    from PIL import Image

    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max(initial=0) > 255 else 255.0
        grey = np.clip(arr * (255.0 / peak), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
        grey = ((arr - lo) * (255.0 / max(hi - lo, 1e-9))).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def load_image(path: Path | str) -> np.ndarray:
    """Read ``path`` as an upright RGB uint8 array (H x W x 3).

    Only regular files are read (a FIFO or ``/dev/zero`` would never end), up to
    ``MAX_FILE_BYTES``; an animated image gives its first frame.
    """
    path = Path(path)
    try:
        fh = open_regular(path, MAX_FILE_BYTES)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except OSError as exc:  # NotARegularFileError, permission denied, symlink loop, ...
        raise ImageError(_os_message(path, exc)) from None
    with fh:
        return _decode(path, fh)


def _os_message(path: Path, exc: OSError) -> str:
    if exc.strerror:  # a plain OSError: "[Errno 40] Too many levels..." without the noise
        return f"{path}: {exc.strerror.lower()}"
    return str(exc)


def _decode(path: Path, fh) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    if os.fstat(fh.fileno()).st_size == 0:
        raise ImageError(f"{path}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fh) as img:
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise ImageError(f"{path}: image too large ({width}x{height} pixels)")
                img.load()  # raises on truncated data
                img = ImageOps.exif_transpose(img)
                return _to_rgb_array(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{path}: image too large (decompression bomb guard)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{path}: corrupt or truncated image ({exc})") from None
    except Exception as exc:  # Pillow's decoders raise many kinds on malformed data
        raise ImageError(f"{path}: corrupt image ({type(exc).__name__}: {exc})") from None


def iter_image_files(paths, *, recursive: bool = True):
    """Expand files and folders into image paths (sorted); non-image names in folders are skipped."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            for child in sorted(path.glob(pattern)):
                if child.is_file() and is_image_name(child):
                    yield child
        else:
            yield path
