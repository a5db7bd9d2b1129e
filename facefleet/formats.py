"""SentinelCam's file formats, written by the edge and read by fleet export and legacy import:
the ``facelist.csv`` columns, the eye geometry it records, face keys
(``date|event|timestamp|(x1,y1,x2,y2)|sink``) and the numeric face statuses.

Bottom layer: numpy and the standard library only.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

import numpy as np

# SentinelCam's numeric face statuses; 4 ("remove") rows are not imported.
STATUS_CODES = {"0": "candidate", "1": "selected", "2": "in_use", "3": "revoked"}
UNKNOWN_NAMES = {"", "unknown", "none", "nan", "stranger"}
REFKEY = re.compile(
    r"^(?P<date>[^|]*)\|(?P<event>[^|]*)\|(?P<timestamp>[^|]*)\|"
    r"\((?P<x1>-?\d+),\s*(?P<y1>-?\d+),\s*(?P<x2>-?\d+),\s*(?P<y2>-?\d+)\)\|(?P<sink>[^|]*)$"
)
FACELIST_COLUMNS = [
    "date",
    "event",
    "timestamp",
    "objid",
    "source",
    "status",
    "name",
    "proba",
    "dist",
    "margin",
    "x1",
    "y1",
    "x2",
    "y2",
    "rx",
    "ry",
    "lx",
    "ly",
    "dx",
    "dy",
    "angle",
    "focus",
]


def round_num(value: float, digits: int = 4) -> float | None:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else round(value, digits)


def eye_geometry(landmarks: np.ndarray | None) -> dict[str, float | None]:
    """Eye centres (dlib 5-point: 0-1 right eye, 2-3 left eye), their offset and the roll
    angle in degrees, as SentinelCam records them."""
    if landmarks is None:
        return dict.fromkeys(("rx", "ry", "lx", "ly", "dx", "dy", "angle"))
    pts = np.asarray(landmarks, dtype=np.float64)
    rx, ry = pts[0:2].mean(axis=0)
    lx, ly = pts[2:4].mean(axis=0)
    dx, dy = lx - rx, ly - ry
    angle = math.degrees(math.atan2(dy, dx))
    return {
        "rx": round_num(rx, 1),
        "ry": round_num(ry, 1),
        "lx": round_num(lx, 1),
        "ly": round_num(ly, 1),
        "dx": round_num(dx, 1),
        "dy": round_num(dy, 1),
        "angle": round_num(angle, 2),
    }


def format_refkey(date: str, event: str, timestamp: str, box: tuple[int, ...], sink: str) -> str:
    """SentinelCam's face key: ``date|event|timestamp|(x1,y1,x2,y2)|sink``."""
    rect = ",".join(str(int(v)) for v in box)
    return "|".join([date, event, timestamp, f"({rect})", sink])


def parse_refkey(key: str) -> dict[str, Any]:
    """The fields of a face key; raises ValueError for a malformed one."""
    m = REFKEY.match(key)
    if not m:
        raise ValueError(f"not a SentinelCam face key: {key!r}")
    d = m.groupdict()
    box = tuple(int(d.pop(k)) for k in ("x1", "y1", "x2", "y2"))
    return {**d, "box": box}


def normalise_timestamp(text: str) -> str:
    """ISO 8601 (``T`` separator), as SentinelCam writes into face keys."""
    try:
        return datetime.fromisoformat(text.strip()).isoformat()
    except ValueError:
        raise ValueError(f"not a timestamp: {text!r}") from None


def parse_status(value: str) -> str | None:
    """A facefleet status from SentinelCam's code or name; None for "remove" (4)."""
    value = value.strip().lower()
    if value.endswith(".0"):
        value = value[:-2]
    if value in STATUS_CODES:
        return STATUS_CODES[value]
    if value in STATUS_CODES.values():
        return value
    if value in ("4", "remove"):
        return None
    raise ValueError(f"unknown face status {value!r}")
