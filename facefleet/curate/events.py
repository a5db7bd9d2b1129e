"""Events: what the cameras saw (recognitions and unknown captures) as collected into the
store, newest first, filtered by device, person and time, one page at a time.

An event is a collected face (``collect`` keeps the device's decision in the face's meta:
device, event time, name or candidate, distance). ``person`` matches the device's name, its
candidate, or the person a reviewer has since given the face.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from facefleet.store import Store

_WHEN = "COALESCE(json_extract(f.meta, '$.event_time'), f.created)"


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


@dataclass
class EventFilter:
    device: str | None = None
    person: str | None = None
    since: str | None = None  # ISO date or date-time, inclusive
    until: str | None = None  # ISO date or date-time, inclusive of that day/second
    kind: str | None = None  # None | "known" | "unknown"


def _where(f: EventFilter) -> tuple[str, list[Any]]:
    clauses = ["i.source LIKE 'collect:%'"]
    params: list[Any] = []
    if f.device:
        clauses.append("json_extract(f.meta, '$.device') = ?")
        params.append(f.device)
    if f.person:
        clauses.append(
            "(json_extract(f.meta, '$.name') = ? OR json_extract(f.meta, '$.candidate') = ? OR p.name = ?)"
        )
        params += [f.person] * 3
    if f.since:
        clauses.append(f"{_WHEN} >= ?")
        params.append(f.since)
    if f.until:
        clauses.append(f"substr({_WHEN}, 1, {len(f.until)}) <= ?")
        params.append(f.until)
    if f.kind == "known":
        clauses.append("json_extract(f.meta, '$.name') IS NOT NULL")
    elif f.kind == "unknown":
        clauses.append("json_extract(f.meta, '$.name') IS NULL")
    return "WHERE " + " AND ".join(clauses), params


def list_events(
    store: Store, filters: EventFilter | None = None, *, offset: int = 0, limit: int = 50
) -> tuple[list[Event], int]:
    """One page of events, newest first, and how many match in all."""
    where, params = _where(filters or EventFilter())
    base = f"FROM faces f JOIN images i ON i.id = f.image_id LEFT JOIN people p ON p.id = f.person_id {where}"
    total = int(store.conn.execute(f"SELECT COUNT(*) {base}", params).fetchone()[0])
    rows = store.conn.execute(
        f"SELECT f.id, f.meta, f.status, f.box, {_WHEN} AS event_when, p.name AS person, i.path, i.sha256 "
        f"{base} ORDER BY event_when DESC, f.id DESC LIMIT ? OFFSET ?",
        (*params, int(limit), int(offset)),
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
    rows = store.conn.execute(
        "SELECT DISTINCT json_extract(f.meta, '$.device') AS d FROM faces f "
        "JOIN images i ON i.id = f.image_id "
        "WHERE i.source LIKE 'collect:%' AND d IS NOT NULL ORDER BY d"
    )
    return [str(r["d"]) for r in rows]
