"""The device's record of what it saw: one JSON line per track decision in ``events.jsonl``
and the same decision as a row of SentinelCam's ``facelist.csv``, both append-only so the
curation side can read them while the device runs."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from facefleet.formats import FACELIST_COLUMNS, eye_geometry, round_num


def event_record(
    *,
    ts: float,
    device: str,
    source: str,
    run: str,
    frame: int,
    track,
    view,
    model_version: Any,
    threshold: float | None,
    crop_path: str | None,
    crop_kind: str | None = None,
) -> dict[str, Any]:
    """The JSON event of one track decision (``track`` a Track, ``view`` its latest View).
    ``crop_kind`` says what ``crop`` is: ``"unknown"`` capture or ``"named"`` sample."""
    quality = view.quality.as_dict() if view is not None else None
    margin = None
    if threshold is not None and not math.isnan(track.distance):
        margin = round_num(threshold - track.distance)
    return {
        "ts": datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds"),
        "device": device,
        "source": source,
        "run": run,
        "frame": int(frame),
        "track_id": int(track.id),
        "name": track.name,
        "candidate": track.candidate,
        "distance": round_num(track.distance),
        "score": round_num(track.score),
        "margin": margin,
        "box": [int(v) for v in track.box],
        "quality": quality,
        "landmarks": None if view is None else np.round(view.landmarks, 1).tolist(),
        "model_version": model_version,
        "crop": crop_path,
        "crop_kind": crop_kind if crop_path else None,
    }


def facelist_row(event: dict[str, Any]) -> list[Any]:
    """A ``facelist.csv`` row (see FACELIST_COLUMNS) from an event record."""
    when = datetime.fromisoformat(event["ts"])
    eyes = eye_geometry(None if event["landmarks"] is None else np.array(event["landmarks"]))
    x1, y1, x2, y2 = event["box"]
    row = {
        "date": when.date().isoformat(),
        "event": event["run"],
        "timestamp": when.isoformat(),
        "objid": event["track_id"],
        "source": event["source"],
        "status": "known" if event["name"] else "unknown",
        "name": event["name"] or "Unknown",
        "proba": event["score"],
        "dist": event["distance"],
        "margin": event["margin"],
        "x1": x1,
        "y1": y1,
        "x2": x2,
        "y2": y2,
        **eyes,
        "focus": None if event["quality"] is None else event["quality"]["sharpness"],
    }
    return ["" if row[c] is None else row[c] for c in FACELIST_COLUMNS]


def end_torn_line(path: Path) -> bool:
    """End the last line of ``path`` when a process died while writing it, so what is
    appended next starts a line of its own (a reader skips the torn one); True if it did."""
    try:
        with open(path, "rb+") as fh:
            if fh.seek(0, os.SEEK_END) == 0:
                return False
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) == b"\n":
                return False
            fh.write(b"\n")
            return True
    except FileNotFoundError:
        return False


class EventLog:
    """Appends events to ``events.jsonl`` and ``facelist.csv`` in ``folder``; each record is
    one write of whole lines, flushed, so a reader never sees half an event. A line torn by a
    process that died mid-write is ended before anything is appended to it."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.folder / "events.jsonl"
        self.csv_path = self.folder / "facelist.csv"
        for path in (self.jsonl_path, self.csv_path):
            end_torn_line(path)
        new_csv = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
        self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")  # noqa: SIM115 - held open
        self._csv = open(self.csv_path, "a", encoding="utf-8", newline="")  # noqa: SIM115
        if new_csv:
            self._csv.write(",".join(FACELIST_COLUMNS) + "\n")
            self._csv.flush()
        self.count = 0

    def write(self, event: dict[str, Any]) -> None:
        self._jsonl.write(json.dumps(event, ensure_ascii=False) + "\n")
        self._jsonl.flush()
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(facelist_row(event))
        self._csv.write(buf.getvalue())
        self._csv.flush()
        self.count += 1

    def close(self) -> None:
        for fh in (self._jsonl, self._csv):
            try:
                fh.flush()
                os.fsync(fh.fileno())
            finally:
                fh.close()


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every event in an ``events.jsonl`` (a torn last line from a crash is skipped)."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out
