"""The face engine: detect -> 5-point landmarks -> aligned chip -> quality -> embedding.

One object per process holding the loaded models; everything else in the package reaches the
face models through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facefleet.errors import ImageError
from facefleet.vision import detect as det
from facefleet.vision.embed import CHIP_PADDING, CHIP_SIZE, Embedder, make_embedder
from facefleet.vision.models import model_path
from facefleet.vision.quality import Quality, measure_quality

if TYPE_CHECKING:
    from facefleet.settings import VisionSettings

Detection = det.Detection

MIN_IMAGE_SIDE = 16  # pixels; no detector finds a usable face in less, and dlib's CNN aborts


def check_image(rgb: np.ndarray) -> np.ndarray:
    """The image as native code needs it, or ``ImageError`` ("image too small", wrong type)."""
    try:
        rgb = det.check_rgb(rgb)
    except ValueError as exc:
        raise ImageError(str(exc)) from None
    height, width = rgb.shape[:2]
    if min(height, width) < MIN_IMAGE_SIDE:
        raise ImageError(
            f"image too small ({width}x{height} pixels; at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE})"
        )
    return rgb


@dataclass
class VisionConfig:
    detector: str = "hog"
    upsample: int = 1
    max_side: int = 1024
    fallback_detector: str | None = "cnn"
    fallback_max_side: int = 640  # the CNN is slow: run it on a smaller copy
    embedder: str = "auto"
    cache_dir: Path | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any], cache_dir: Path | None = None) -> VisionConfig:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k != "cache_dir"}
        if known.get("fallback_detector") in ("", "none"):
            known["fallback_detector"] = None
        return cls(**known, cache_dir=cache_dir)

    @classmethod
    def from_settings(cls, v: VisionSettings, cache_dir: Path | None = None) -> VisionConfig:
        return cls(
            detector=v.detector,
            upsample=v.upsample,
            max_side=v.max_side,
            fallback_detector=None if v.fallback_detector in (None, "", "none") else v.fallback_detector,
            fallback_max_side=v.fallback_max_side,
            embedder=v.embedder,
            cache_dir=cache_dir,
        )


@dataclass
class Face:
    box: det.Box
    landmarks: np.ndarray
    chip: np.ndarray
    quality: Quality
    detector: str
    score: float = 0.0
    embedding: np.ndarray | None = field(default=None, repr=False)


def _shape(box: det.Box, landmarks: np.ndarray):
    import dlib

    rect = dlib.rectangle(*(int(v) for v in box))
    points = dlib.points()
    for x, y in np.asarray(landmarks):
        points.append(dlib.point(int(round(x)), int(round(y))))
    return dlib.full_object_detection(rect, points)


class FaceEngine:
    """Loaded face models plus the steps that use them. Not thread-safe: one per thread."""

    def __init__(self, config: VisionConfig | None = None) -> None:
        import dlib

        self.config = config or VisionConfig()
        self._detector = det.make_detector(self.config.detector)
        self._fallback: det.Detector | None = None
        self._predictor = dlib.shape_predictor(str(model_path("landmarks5")))
        self._embedder: Embedder | None = None

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = make_embedder(self.config.embedder, cache_dir=self.config.cache_dir)
        return self._embedder

    def detect(
        self, rgb: np.ndarray, *, upsample: int | None = None, max_side: int | None = None
    ) -> list[Detection]:
        return det.detect(
            self._detector,
            rgb,
            upsample=self.config.upsample if upsample is None else upsample,
            max_side=self.config.max_side if max_side is None else max_side,
        )

    def detect_accurate(self, rgb: np.ndarray) -> list[Detection]:
        """The fallback detector (dlib CNN by default), for photos the fast one found empty."""
        if not self.config.fallback_detector:
            return []
        if self._fallback is None:
            self._fallback = det.make_detector(self.config.fallback_detector)
        return det.detect(self._fallback, rgb, upsample=1, max_side=self.config.fallback_max_side)

    def landmarks(self, rgb: np.ndarray, box: det.Box) -> np.ndarray:
        import dlib

        shape = self._predictor(rgb, dlib.rectangle(*(int(v) for v in box)))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)

    def chip(self, rgb: np.ndarray, landmarks: np.ndarray, box: det.Box | None = None) -> np.ndarray:
        import dlib

        if box is None:
            lo, hi = landmarks.min(axis=0), landmarks.max(axis=0)
            box = (int(lo[0]), int(lo[1]), int(hi[0]) + 1, int(hi[1]) + 1)
        return dlib.get_face_chip(rgb, _shape(box, landmarks), size=CHIP_SIZE, padding=CHIP_PADDING)

    def embed_chips(self, chips: np.ndarray | list[np.ndarray]) -> np.ndarray:
        if len(chips) == 0:
            return np.zeros((0, 128), dtype=np.float32)
        return self.embedder.embed(np.stack(chips) if isinstance(chips, list) else chips)

    def describe(self, rgb: np.ndarray, detection: Detection) -> Face:
        """Landmarks, chip and quality of one detected face (no embedding yet)."""
        points = self.landmarks(rgb, detection.box)
        chip = self.chip(rgb, points, detection.box)
        return Face(
            box=detection.box,
            landmarks=points,
            chip=chip,
            quality=measure_quality(chip, detection.box, points),
            detector=detection.detector,
            score=detection.score,
        )

    def analyse(
        self,
        rgb: np.ndarray,
        *,
        fallback: bool = True,
        embed: bool = True,
        upsample: int | None = None,
    ) -> list[Face]:
        """Every face in ``rgb``: detect (accurate retry when none and ``fallback``), describe, embed.

        Raises ``ImageError`` for an image too small or of the wrong type.
        """
        rgb = check_image(rgb)
        found = self.detect(rgb, upsample=upsample)
        if not found and fallback:
            found = self.detect_accurate(rgb)
        faces = [self.describe(rgb, d) for d in found]
        if embed and faces:
            vectors = self.embed_chips([f.chip for f in faces])
            for face, vector in zip(faces, vectors):
                face.embedding = vector
        return faces
