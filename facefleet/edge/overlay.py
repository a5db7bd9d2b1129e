"""What the camera operator sees and what gets saved: face boxes with names and confidence,
the FPS and model version, and blurred faces when anonymising."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from facefleet.edge.tracker import Box, Track

KNOWN_COLOUR = (0, 200, 0)  # BGR
UNKNOWN_COLOUR = (0, 0, 230)
ANONYMIZE_MODES = ("none", "unknown", "all")


def label_for(track: Track) -> str:
    """``Name 0.93`` for a known face, ``Unknown`` otherwise."""
    if track.name is None:
        return "Unknown" if track.decided else "..."
    return f"{track.name} {track.score:.2f}"


def faces_to_blur(tracks: Iterable[Track], mode: str) -> list[Box]:
    """Boxes to blur under ``--anonymize`` (``none``, ``unknown`` or ``all``)."""
    if mode == "all":
        return [t.box for t in tracks]
    if mode == "unknown":
        return [t.box for t in tracks if t.name is None]
    return []


def blur_boxes(bgr: np.ndarray, boxes: Iterable[Box], margin: float = 0.15) -> None:
    """Blur each box (grown by ``margin``) in place, strongly enough to hide the identity."""
    import cv2

    h, w = bgr.shape[:2]
    for left, top, right, bottom in boxes:
        mx, my = int((right - left) * margin), int((bottom - top) * margin)
        x0, y0 = max(0, left - mx), max(0, top - my)
        x1, y1 = min(w, right + mx), min(h, bottom + my)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        region = bgr[y0:y1, x0:x1]
        # pixelate then blur: a Gaussian alone leaves a recognisable outline at small sizes
        small = cv2.resize(region, (8, 8), interpolation=cv2.INTER_AREA)
        region[:] = cv2.GaussianBlur(
            cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST), (0, 0), 5
        )


def draw(
    bgr: np.ndarray,
    tracks: Iterable[Track],
    *,
    fps: float | None = None,
    model_version: str | None = None,
    anonymize: str = "none",
) -> np.ndarray:
    """Annotate ``bgr`` in place (and return it): blur, boxes, labels, status line."""
    import cv2

    tracks = list(tracks)
    blur_boxes(bgr, faces_to_blur(tracks, anonymize))
    for t in tracks:
        colour = KNOWN_COLOUR if t.name else UNKNOWN_COLOUR
        left, top, right, bottom = t.box
        cv2.rectangle(bgr, (left, top), (right, bottom), colour, 2)
        text = label_for(t)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        y = max(top, th + base + 2)
        cv2.rectangle(bgr, (left, y - th - base - 2), (left + tw + 4, y), colour, cv2.FILLED)
        cv2.putText(
            bgr, text, (left + 2, y - base), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA
        )
    parts = []
    if fps is not None:
        parts.append(f"{fps:5.1f} FPS")
    if model_version:
        parts.append(f"model {model_version}")
    if parts:
        status = "  ".join(parts)
        cv2.putText(bgr, status, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(bgr, status, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return bgr
