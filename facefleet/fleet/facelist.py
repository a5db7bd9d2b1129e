"""Export the faces in use from the store as SentinelCam's ``facelist.csv`` (for datasinks).

Columns: date,event,timestamp,objid,source,status,name,proba,dist,margin,x1,y1,x2,y2,
rx,ry,lx,ly,dx,dy,angle,focus. Eye centres come from the 5-point landmarks (``r`` is the eye
on the image's left, as in dlib's 68-point ``right_eye``), ``focus`` is the chip sharpness,
and ``proba``/``dist``/``margin``/``event`` come from the face's ``meta`` when recorded there.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from facefleet.fileio import atomic_write_text

COLUMNS = [
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


def eye_geometry(landmarks: Any) -> dict[str, Any]:
    """rx, ry, lx, ly, dx, dy, angle (degrees) from 5 landmarks; blanks when absent."""
    if not landmarks or len(landmarks) < 4:
        return {k: "" for k in ("rx", "ry", "lx", "ly", "dx", "dy", "angle")}
    a = ((landmarks[0][0] + landmarks[1][0]) / 2, (landmarks[0][1] + landmarks[1][1]) / 2)
    b = ((landmarks[2][0] + landmarks[3][0]) / 2, (landmarks[2][1] + landmarks[3][1]) / 2)
    right, left = (a, b) if a[0] <= b[0] else (b, a)
    dx, dy = left[0] - right[0], left[1] - right[1]
    return {
        "rx": round(right[0]),
        "ry": round(right[1]),
        "lx": round(left[0]),
        "ly": round(left[1]),
        "dx": round(dx),
        "dy": round(dy),
        "angle": round(math.degrees(math.atan2(dy, dx)), 2),
    }


def facelist_row(face: Any) -> dict[str, Any]:
    """One CSV row for a store ``FaceRow``."""
    meta = face.meta or {}
    try:
        created = datetime.fromisoformat(face.created)
        date, timestamp = created.date().isoformat(), created.time().isoformat()
    except (TypeError, ValueError):
        date, timestamp = "", ""
    x1, y1, x2, y2 = face.box
    quality = face.quality or {}
    sharp = quality.get("sharpness")
    return {
        "date": date,
        "event": meta.get("event", ""),
        "timestamp": timestamp,
        "objid": face.id,
        "source": meta.get("source") or face.image_path,
        "status": face.status,
        "name": face.person_name or "",
        "proba": meta.get("proba", ""),
        "dist": meta.get("dist", ""),
        "margin": meta.get("margin", ""),
        "x1": x1,
        "y1": y1,
        "x2": x2,
        "y2": y2,
        **eye_geometry(face.landmarks),
        "focus": "" if sharp is None else round(float(sharp), 2),
    }


def facelist_csv(faces: Iterable[Any]) -> str:
    """The CSV text for ``faces`` (header first)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for face in faces:
        writer.writerow(facelist_row(face))
    return buf.getvalue()


def write_facelist(ws: Any, out: Path) -> Path:
    """Write the faces in use (with a person) to ``out`` atomically."""
    store = ws.open_store()
    try:
        faces = [f for f in store.faces(status="in_use") if f.person_name]
    finally:
        store.close()
    atomic_write_text(Path(out), facelist_csv(faces))
    return Path(out)
