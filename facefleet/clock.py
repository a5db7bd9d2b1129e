"""Timestamps, one way each: ISO 8601 UTC for records, a local ``YYYYmmdd_HHMMSS`` for file names."""

from __future__ import annotations

import time
from datetime import datetime, timezone


def now_iso(*, zulu: bool = False) -> str:
    """Now in UTC to the second, ``2026-12-01T18:00:00+00:00`` (``...Z`` with ``zulu``)."""
    text = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    return text.replace("+00:00", "Z") if zulu else text


def file_stamp(when: float | None = None, sep: str = "_") -> str:
    """Local time for file names, ``20261201_180000`` (``sep`` between date and time)."""
    return time.strftime(f"%Y%m%d{sep}%H%M%S", time.localtime(when))
