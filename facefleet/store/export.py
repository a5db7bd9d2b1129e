"""Exports of the store for the old edge-server scripts: ``face_database.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from facefleet.fileio import atomic_write_text
from facefleet.store import Store, now_iso


def face_database(store: Store) -> dict[str, Any]:
    """People with ids, names, example counts and dates, as the edge scripts read them."""
    counts = store.face_counts()
    people = []
    for person in store.people():
        faces = store.faces(person=person.id)
        in_use = counts.get(person.id, {}).get("in_use", 0)
        people.append(
            {
                "id": person.id,
                "name": person.name,
                "examples": in_use,
                "created": person.created,
                "updated": max((f.created for f in faces), default=person.created),
            }
        )
    return {
        "version": 1,
        "created": now_iso(),
        "total_people": len(people),
        "people": people,
        "id_to_name": {p["id"]: p["name"] for p in people},
    }


def write_face_database(store: Store, path: Path | str) -> Path:
    path = Path(path)
    atomic_write_text(path, json.dumps(face_database(store), indent=2) + "\n")
    return path
