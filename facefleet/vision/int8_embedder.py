"""The int8 face embedder (``vision.embedder: onnx-int8``): dlib's ResNet in ONNX (see
:mod:`facefleet.vision.onnx_embedder`) statically quantised by ONNX Runtime (QDQ, int8
per-channel weights, uint8 activations), about twice as fast on one CPU core.

Owns the calibration set (aligned chips of real faces), the quantisation, its cache and the
embedder's id.

- Static quantisation needs real activations: the calibration chips come from photos (at most
  :data:`CALIBRATION_PHOTOS`, the workspace's ``images/`` by default: the enrolled photos;
  synthetic patterns give twice the error). The result is cached as
  ``<cache>/onnx/dlib-resnet-v1-<sha16>-c<N>-int8-<recipe>-<calib16>.onnx`` (``calib16``: sha256 of the
  calibration chips), and reused whenever a cached int8 model exists, so a device can get the
  file from the server instead of photos.
- The vectors differ from dlib's (L2 ~0.05 on real chips), so the id is
  ``dlib-resnet-v1-int8:<sha16>``: the store keeps them beside dlib's vectors, a model must be
  trained on int8 vectors to be used with this embedder, and a device refuses a bundle made
  for another embedder id.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path

import numpy as np

from facefleet.errors import ModelError
from facefleet.fileio import atomic_write_bytes
from facefleet.vision.models import file_sha256

log = logging.getLogger(__name__)

CALIBRATION_PHOTOS = 64
QUANT_RECIPE = "r7"  # in the cache name: a model quantised another way is made anew
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".webp")


def int8_embedder_id(source_sha256: str) -> str:
    return f"dlib-resnet-v1-int8:{source_sha256[:16]}"


def calibration_chips(folder: Path, limit: int = CALIBRATION_PHOTOS) -> np.ndarray:
    """Aligned 150x150 chips of the faces in up to ``limit`` photos under ``folder``."""
    from facefleet.vision.engine import FaceEngine, VisionConfig
    from facefleet.vision.image import load_image

    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not paths:
        return np.zeros((0, 150, 150, 3), np.uint8)
    step = max(1, len(paths) // limit)
    engine = FaceEngine(VisionConfig(detector="hog", upsample=1, fallback_detector=None))
    chips = []
    for path in paths[::step][:limit]:
        try:
            faces = engine.analyse(load_image(path), fallback=False, embed=False)
        except Exception:  # an unreadable photo is skipped, not fatal
            continue
        chips.extend(f.chip for f in faces[:1])
    return np.stack(chips) if chips else np.zeros((0, 150, 150, 3), np.uint8)


def quantize(onnx_bytes: bytes, chips: np.ndarray) -> bytes:
    """Static int8 (QDQ) quantisation of the fp32 face ResNet, calibrated on ``chips``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class _Chips(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(np.asarray(chips, np.uint8))

        def get_next(self):
            chip = next(self._it, None)
            return None if chip is None else {"chips": chip[None]}

    with tempfile.TemporaryDirectory(prefix="facefleet-int8-") as tmp:
        src, pre, out = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        src.write_bytes(onnx_bytes)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(out),
            _Chips(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            # 7-bit weights: x86 CPUs without VNNI (AVX2 only) multiply u8 x s8 pairs into a
            # saturating int16, which put a face 0.28 away from its fp32 vector; with 7 bits it
            # is 0.08 at most on such a CPU
            reduce_range=True,
        )
        return out.read_bytes()


def create_int8_embedder(
    cache_dir: Path | None = None,
    *,
    calibration_dir: Path | None = None,
    chips: np.ndarray | None = None,
    threads: int | None = None,
):
    """An :class:`~facefleet.vision.onnx_embedder.OnnxEmbedder` on the int8 model: the cached
    one, else quantised now from ``chips`` or photos in ``calibration_dir``. Raises
    :class:`ModelError` (one line) when there is neither."""
    from facefleet.vision.onnx_embedder import CONVERTER_VERSION, OnnxEmbedder, default_cache_dir, source_path

    folder = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "onnx"
    sha = file_sha256(source_path())
    fp32 = OnnxEmbedder.create(cache_dir=cache_dir, threads=1)
    stem = f"dlib-resnet-v1-{sha[:16]}-c{CONVERTER_VERSION}-int8-{QUANT_RECIPE}"
    cached = sorted(folder.glob(f"{stem}-*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)
    if cached and chips is None:
        data = cached[0].read_bytes()
    else:
        if chips is None and calibration_dir is not None and Path(calibration_dir).is_dir():
            chips = calibration_chips(Path(calibration_dir))
        if chips is None or len(chips) < 8:
            raise ModelError(
                "int8 embedder: no cached int8 model and fewer than 8 faces to calibrate on "
                f"(photos looked for in {calibration_dir or 'no folder'})"
            )
        calib = hashlib.sha256(np.ascontiguousarray(chips, np.uint8).tobytes()).hexdigest()[:16]
        data = quantize(fp32.onnx_bytes, chips)
        target = folder / f"{stem}-{calib}.onnx"
        try:
            atomic_write_bytes(target, data)
        except OSError as exc:
            log.warning("could not cache the int8 face model at %s: %s", target, exc)
        log.info("quantised the face ResNet to int8 on %d faces: %s", len(chips), target.name)
    return OnnxEmbedder(data, int8_embedder_id(sha), threads=threads)
