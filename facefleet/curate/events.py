"""Events: what the cameras saw (recognitions and unknown captures) as collected into the
store, newest first, filtered by device, person and time, one page at a time.

An event is a collected face (``collect`` keeps where it came from and the device's decision
in the face's meta: origin, device, event time, name or candidate, distance). ``person``
matches the device's name, its candidate, or the person a reviewer has since given the face.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from facefleet.store import STRANGER_STATUSES, Store

_WHEN = "COALESCE(json_extract(meta, '$.event_time'), created)"
_IS_EVENT = "json_extract(meta, '$.origin') IS NOT NULL"  # collect records where a face came from
# Expression indexes (partial: collected faces only): a page of events, their count and the
# devices come from an index instead of parsing every face's meta.
SCHEMA = f"""
CREATE INDEX IF NOT EXISTS faces_event_when ON faces({_WHEN}) WHERE {_IS_EVENT};
CREATE INDEX IF NOT EXISTS faces_event_device ON faces(json_extract(meta, '$.device')) WHERE {_IS_EVENT};
"""


@dataclass(frozen=True)
class Event:
    face_id: int
    when: str
    device: str | None
    name: str | None  # what the device said (None: unknown)
    candidate: str | None
    distance: float | None
    person: str | None  # what a reviewer said since
    status: str
    image_path: str
    image_sha256: str
    box: tuple[int, int, int, int]

    @property
    def reviewed_stranger(self) -> bool:
        """A reviewer kept this face as nobody enrolled (whatever the device said)."""
        return self.person is None and self.status in STRANGER_STATUSES


@dataclass
class EventFilter:
    device: str | None = None
    person: str | None = None
    since: str | None = None  # ISO date or date-time, inclusive
    until: str | None = None  # ISO date or date-time, inclusive of that day/second
    kind: str | None = None  # None | "known" | "unknown"


def _where(f: EventFilter) -> tuple[str, list[Any]]:
    clauses = [_IS_EVENT]
    params: list[Any] = []
    if f.device:
        clauses.append("json_extract(meta, '$.device') = ?")
        params.append(f.device)
    if f.person:
        clauses.append(
            "(json_extract(meta, '$.name') = ? OR json_extract(meta, '$.candidate') = ?"
            " OR person_id IN (SELECT id FROM people WHERE name = ?))"
        )
        params += [f.person] * 3
    if f.since:
        clauses.append(f"{_WHEN} >= ?")
        params.append(f.since)
    if f.until:
        clauses.append(f"substr({_WHEN}, 1, {len(f.until)}) <= ?")
        params.append(f.until)
    if f.kind == "known":
        clauses.append("json_extract(meta, '$.name') IS NOT NULL")
    elif f.kind == "unknown":
        clauses.append("json_extract(meta, '$.name') IS NULL")
    return "WHERE " + " AND ".join(clauses), params


def list_events(
    store: Store, filters: EventFilter | None = None, *, offset: int = 0, limit: int = 50
) -> tuple[list[Event], int]:
    """One page of events, newest first, and how many match in all."""
    store.ensure_schema(SCHEMA)
    where, params = _where(filters or EventFilter())
    total = int(store.conn.execute(f"SELECT COUNT(*) FROM faces {where}", params).fetchone()[0])
    # the page's ids from the index, then only those rows in full
    ids = [
        int(r[0])
        for r in store.conn.execute(
            f"SELECT id FROM faces {where} ORDER BY {_WHEN} DESC, id DESC LIMIT ? OFFSET ?",
            (*params, int(limit), int(offset)),
        )
    ]
    marks = ",".join("?" * len(ids))
    rows = store.conn.execute(
        "SELECT f.id, f.meta, f.status, f.box, COALESCE(json_extract(f.meta, '$.event_time'), f.created)"
        " AS event_when, p.name AS person, i.path, i.sha256 FROM faces f JOIN images i ON i.id = f.image_id"
        f" LEFT JOIN people p ON p.id = f.person_id WHERE f.id IN ({marks})"
        " ORDER BY event_when DESC, f.id DESC",
        ids,
    ).fetchall()
    out = []
    for r in rows:
        m = json.loads(r["meta"] or "{}")
        dist = m.get("dist")
        out.append(
            Event(
                face_id=int(r["id"]),
                when=str(r["event_when"]),
                device=m.get("device"),
                name=m.get("name"),
                candidate=m.get("candidate"),
                distance=float(dist) if isinstance(dist, (int, float)) else None,
                person=r["person"],
                status=r["status"],
                image_path=r["path"],
                image_sha256=r["sha256"],
                box=tuple(json.loads(r["box"])),
            )
        )
    return out, total


def event_devices(store: Store) -> list[str]:
    """Every device that sent events."""
    store.ensure_schema(SCHEMA)
    rows = store.conn.execute(
        "SELECT DISTINCT json_extract(meta, '$.device') AS d FROM faces "
        f"WHERE {_IS_EVENT} AND json_extract(meta, '$.device') IS NOT NULL ORDER BY d"
    )
    return [str(r["d"]) for r in rows]
