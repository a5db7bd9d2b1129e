"""Face quality: size, brightness, sharpness, frontal-ness and greyscale (IR), and the
usable/unusable verdict.

Pure functions of the aligned chip, the box and the 5 landmarks. The verdict checks light
before sharpness: a dark chip has little contrast, so its Laplacian is small even when the
photo is sharp; such a face is reported "too dark", not "too blurred".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from facefleet.settings import QualitySettings, parse_section


@dataclass(frozen=True)
class Quality:
    size_px: int  # shorter side of the face box in the original image
    sharpness: float  # variance of the Laplacian of the grey aligned chip
    frontalness: float  # 1 = nose centred between the eyes, 0 = full profile
    brightness: float  # mean grey level of the chip, 0..255
    greyscale: bool = False  # no colour in the chip: a greyscale photo or an IR camera

    def as_dict(self) -> dict[str, Any]:
        return {k: v if isinstance(v, bool) else round(float(v), 3) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Quality:
        return cls(
            size_px=int(data.get("size_px", 0)),
            sharpness=float(data.get("sharpness", 0.0)),
            frontalness=float(data.get("frontalness", 0.0)),
            brightness=float(data.get("brightness", 0.0)),
            greyscale=bool(data.get("greyscale", False)),
        )

    def score(self) -> float:
        """One number in 0..1 for ranking faces of the same person (bigger, sharper, frontal)."""
        size = min(self.size_px / 120.0, 1.0)
        sharp = min(self.sharpness / 200.0, 1.0)
        light = 1.0 - min(abs(self.brightness - 128.0) / 128.0, 1.0)
        return float(0.35 * size + 0.3 * sharp + 0.25 * self.frontalness + 0.1 * light)


def sharpness(chip: np.ndarray) -> float:
    grey = cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY) if chip.ndim == 3 else chip
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def frontalness(landmarks: np.ndarray) -> float:
    """From dlib's 5 points (eye corners 0-1 and 2-3, nose base 4): how centred the nose is."""
    pts = np.asarray(landmarks, dtype=np.float64)
    eye_a = pts[0:2].mean(axis=0)
    eye_b = pts[2:4].mean(axis=0)
    nose = pts[4]
    d_a = float(np.linalg.norm(nose - eye_a))
    d_b = float(np.linalg.norm(nose - eye_b))
    if d_a + d_b <= 1e-9:
        return 0.0
    return float(1.0 - abs(d_a - d_b) / (d_a + d_b))


def brightness(chip: np.ndarray) -> float:
    grey = cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY) if chip.ndim == 3 else chip
    return float(grey.mean())


# Mean spread between a pixel's largest and smallest channel under which a chip has no
# colour. Shared photos: ORL (greyscale PGM) 0.0, colour portraits well above 5.
GREYSCALE_SPREAD = 3.0


def is_greyscale(chip: np.ndarray) -> bool:
    """Whether the chip carries no colour (greyscale photo, IR camera)."""
    if chip.ndim != 3 or chip.shape[2] < 3:
        return True
    r, g, b = cv2.split(np.ascontiguousarray(chip[..., :3]))
    # OpenCV, not numpy's max/min over the channel axis: 40x faster on a 150 x 150 chip
    spread = cv2.subtract(cv2.max(cv2.max(r, g), b), cv2.min(cv2.min(r, g), b))
    return float(cv2.mean(spread)[0]) < GREYSCALE_SPREAD


def measure_quality(chip: np.ndarray, box: tuple[int, int, int, int], landmarks: np.ndarray) -> Quality:
    left, top, right, bottom = box
    return Quality(
        size_px=int(min(right - left, bottom - top)),
        sharpness=sharpness(chip),
        frontalness=frontalness(landmarks),
        brightness=brightness(chip),
        greyscale=is_greyscale(chip),
    )


def lit_sharpness(q: Quality, reference: float = 128.0) -> float:
    """The sharpness the chip would show at a mid-grey exposure: the Laplacian scales with
    contrast, which a dark exposure lowers in proportion to its mean level."""
    if q.brightness >= reference or q.brightness <= 0:
        return q.sharpness
    return q.sharpness * (reference / q.brightness) ** 2


def unusable_reason(q: Quality, cfg: QualitySettings | Mapping[str, Any] | None = None) -> str | None:
    """Why a face is unusable for enrolment under the thresholds in ``cfg``, or None."""
    if not isinstance(cfg, QualitySettings):
        cfg = parse_section(QualitySettings, dict(cfg or {}), "quality thresholds", "quality.")
    min_px = cfg.min_face_px
    if q.size_px < min_px:
        return f"face too small ({q.size_px} px < {min_px} px)"
    lo, hi = cfg.min_brightness, cfg.max_brightness
    if q.brightness < lo:
        return f"too dark (brightness {q.brightness:.0f} < {lo:g})"
    if q.brightness > hi:
        return f"too bright (brightness {q.brightness:.0f} > {hi:g})"
    min_sharp = cfg.min_sharpness
    if q.sharpness < min_sharp:
        if lit_sharpness(q) >= min_sharp:  # sharp, but too little light to show it
            return (
                f"too dark (brightness {q.brightness:.0f}: too little contrast to check "
                f"sharpness, {q.sharpness:.1f} < {min_sharp:g})"
            )
        return f"too blurred (sharpness {q.sharpness:.1f} < {min_sharp:g})"
    min_front = cfg.min_frontalness
    if q.frontalness < min_front:
        return f"not frontal enough (frontalness {q.frontalness:.2f} < {min_front:g}: face turned away)"
    if q.greyscale and cfg.reject_greyscale:
        return "greyscale or IR image (quality.reject_greyscale is set)"
    return None
