"""Face detectors behind one interface: dlib HOG (default), dlib CNN (accurate, ~3 s a frame on a
CPU), OpenCV Haar (fast, more false positives). Detection runs on a downscaled copy; boxes come
back in the original image's coordinates.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from facefleet.errors import ConfigError
from facefleet.vision.models import model_path

Box = tuple[int, int, int, int]  # left, top, right, bottom


@dataclass(frozen=True)
class Detection:
    box: Box
    score: float
    detector: str


class Detector(Protocol):
    name: str
    min_side: int  # shortest side (after upsampling) the native code is safe on

    def __call__(self, rgb: np.ndarray, upsample: int) -> list[tuple[Box, float]]: ...


_LOCAL = threading.local()


def _hog_for_this_thread():
    """dlib's HOG detector, built once per thread: building one parses its filters from text
    (~1.7 s on a loaded machine), which every new FaceEngine would otherwise pay."""
    det = getattr(_LOCAL, "hog", None)
    if det is None:
        import dlib

        det = _LOCAL.hog = dlib.get_frontal_face_detector()
    return det


class HogDetector:
    name = "hog"
    min_side = 8  # smaller images are safe but hold no face HOG can find

    def __init__(self) -> None:
        self._det = _hog_for_this_thread()

    def __call__(self, rgb: np.ndarray, upsample: int) -> list[tuple[Box, float]]:
        rects, scores, _ = self._det.run(rgb, upsample, 0.0)
        return [((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in zip(rects, scores)]


class CnnDetector:
    """dlib's MMOD CNN: finds tilted and partly hidden faces HOG misses; slow on a CPU."""

    name = "cnn"
    # dlib raises "Filter windows must be small enough..." below ~10 px and its heap is then
    # corrupt (the process aborts moments later), so never call it on anything that small.
    min_side = 16

    def __init__(self) -> None:
        import dlib

        self._det = dlib.cnn_face_detection_model_v1(str(model_path("mmod")))

    def __call__(self, rgb: np.ndarray, upsample: int) -> list[tuple[Box, float]]:
        found = self._det(rgb, upsample)
        return [
            ((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), float(d.confidence))
            for d in found
        ]


class HaarDetector:
    """OpenCV's frontal-face Haar cascade (needs opencv < 5, which still ships the XMLs)."""

    name = "haar"
    min_side = 20

    def __init__(self) -> None:
        if not hasattr(cv2, "CascadeClassifier"):
            raise ConfigError("this OpenCV has no CascadeClassifier (OpenCV 5?): pin opencv<5")
        xml = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self._det = cv2.CascadeClassifier(xml)
        if self._det.empty():
            raise ConfigError(f"Haar cascade not found at {xml}")

    def __call__(self, rgb: np.ndarray, upsample: int) -> list[tuple[Box, float]]:
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        min_side = 20 if upsample > 0 else 30
        found = self._det.detectMultiScale(grey, 1.1, 5, minSize=(min_side, min_side))
        return [((int(x), int(y), int(x + w), int(y + h)), 1.0) for x, y, w, h in found]


_DETECTORS = {"hog": HogDetector, "cnn": CnnDetector, "haar": HaarDetector}


def make_detector(name: str) -> Detector:
    try:
        return _DETECTORS[name]()
    except KeyError:
        raise ConfigError(f"unknown detector {name!r}: use one of {', '.join(_DETECTORS)}") from None


def downscale(rgb: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """A copy no larger than ``max_side`` on its longer side, and the scale applied."""
    height, width = rgb.shape[:2]
    if not max_side or max(height, width) <= max_side:
        return rgb, 1.0
    scale = max_side / float(max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), scale


def map_box(box: Box, scale: float, shape: tuple[int, ...]) -> Box:
    """A box found on a copy scaled by ``scale``, in the original image, clipped to it."""
    height, width = shape[:2]
    left, top, right, bottom = (int(round(v / scale)) for v in box)
    return (max(0, left), max(0, top), min(width - 1, right), min(height - 1, bottom))


def check_rgb(rgb: object) -> np.ndarray:
    """``rgb`` as the C-contiguous H x W x 3 uint8 array native code expects, or ValueError."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
        shape = getattr(rgb, "shape", type(rgb).__name__)
        raise ValueError(f"expected an H x W x 3 RGB image, got {shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {rgb.dtype}")
    return np.ascontiguousarray(rgb)


def safe_for(detector: Detector, shape: tuple[int, ...], upsample: int) -> bool:
    """Whether ``detector`` may run on an image of ``shape`` (native code aborts on tiny ones)."""
    return min(shape[:2]) * 2 ** max(upsample, 0) >= getattr(detector, "min_side", 16)


def detect(detector: Detector, rgb: np.ndarray, *, upsample: int, max_side: int | None) -> list[Detection]:
    small, scale = downscale(check_rgb(rgb), max_side)
    if not safe_for(detector, small.shape, upsample):
        return []
    found = []
    for box, score in detector(small, upsample):
        mapped = map_box(box, scale, rgb.shape)
        if mapped[2] - mapped[0] >= 4 and mapped[3] - mapped[1] >= 4:
            found.append(Detection(mapped, score, detector.name))
    return found
