"""Export the faces in use from the store as SentinelCam's ``facelist.csv`` (for datasinks).

The columns and the eye geometry are the ones the edge recognizer writes
(``facefleet.formats``); ``focus`` is the chip sharpness,
and ``proba``/``dist``/``margin``/``event`` come from the face's ``meta`` when recorded there.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facefleet.fileio import atomic_write_text
from facefleet.formats import FACELIST_COLUMNS, eye_geometry

if TYPE_CHECKING:
    from facefleet.workspace import Workspace


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
    writer = csv.DictWriter(buf, fieldnames=FACELIST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for face in faces:
        writer.writerow(facelist_row(face))
    return buf.getvalue()


def write_facelist(ws: Workspace, out: Path) -> Path:
    """Write the faces in use (with a person) to ``out`` atomically."""
    store = ws.open_store()
    try:
        faces = [f for f in store.faces(status="in_use") if f.person_name]
    finally:
        store.close()
    atomic_write_text(Path(out), facelist_csv(faces))
    return Path(out)
