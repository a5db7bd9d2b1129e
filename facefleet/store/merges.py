"""Merging people, and undoing a merge: one person enrolled under two names becomes one, and a
merge made by mistake is taken back without losing anything.

A merge moves every row of any table with a foreign key to ``people`` (faces, review clusters,
"not" marks, ...) from the person that goes to the person that stays, and records what it did
in ``person_merges``: the rows it moved (by key), the rows it could not move and the person's
deletion took with it (in full), and the contradicting "not INTO" marks it dropped (in full).
Undoing restores the person under their old id and name and puts those rows back, as far as
they are still where the merge left them: a face a reviewer has since given to somebody else
stays there. Later merges are followed, so "A into B, then B into C" can still undo A.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import suppress
from dataclasses import dataclass, replace

from facefleet.clock import now_iso
from facefleet.errors import StoreError
from facefleet.store.database import Store

# No foreign keys: a record outlives both people, and a later merge must not rewrite it.
SCHEMA = """
CREATE TABLE IF NOT EXISTS person_merges (
    id INTEGER PRIMARY KEY,
    person_id TEXT NOT NULL,
    name TEXT NOT NULL,
    person_created TEXT NOT NULL,
    into_id TEXT NOT NULL,
    into_name TEXT NOT NULL,
    faces INTEGER NOT NULL,
    moved TEXT NOT NULL,
    lost TEXT NOT NULL,
    dropped TEXT NOT NULL,
    created TEXT NOT NULL,
    undone TEXT
);
CREATE INDEX IF NOT EXISTS person_merges_person ON person_merges(person_id);
"""


@dataclass(frozen=True)
class Merge:
    id: int
    person_id: str  # the person that went
    name: str
    into_id: str
    into_name: str  # as it was at the merge
    faces: int  # faces moved (by the merge; by the undo, for what ``unmerge`` returns)
    created: str
    undone: str | None
    holder_id: str | None = None  # who has the faces now: into, or whom into was merged into
    holder_name: str | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _references(conn: sqlite3.Connection) -> list[tuple[str, str, list[str]]]:
    """Every ``(table, column, key)`` whose column points at ``people.id``; the key names a row
    without that column (the primary key's other columns, else all the other columns)."""
    out = []
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        for fk in conn.execute(f'PRAGMA foreign_key_list("{table}")').fetchall():
            if fk["table"] != "people":
                continue
            info = conn.execute(f'PRAGMA table_info("{table}")').fetchall()
            col = fk["from"]
            key = [c["name"] for c in sorted(info, key=lambda c: c["pk"]) if c["pk"] and c["name"] != col]
            out.append((table, col, key or [c["name"] for c in info if c["name"] != col]))
    return out


def _where(key: list[str]) -> str:
    return " AND ".join(f'"{k}" IS ?' for k in key)


def merge(store: Store, ref: str, into: str) -> Merge:
    """Make ``ref`` and ``into`` one person, named ``into``: ``ref``'s faces and everything
    else that points at ``ref`` move to ``into``, a "not ``into``" mark on a face that is now
    ``into``'s is dropped, ``ref`` goes, and the merge is recorded for ``unmerge``."""
    src, dst = store.person(ref), store.person(into)
    if src.id == dst.id:
        raise StoreError(f"{src.name!r} and {dst.name!r} are the same person")
    store.ensure_schema(SCHEMA)
    with store.transaction() as conn:
        moved, lost = [], []
        for table, col, key in _references(conn):
            names = ", ".join(f'"{k}"' for k in key)
            before = conn.execute(f'SELECT {names} FROM "{table}" WHERE "{col}" = ?', (src.id,)).fetchall()
            # a row whose key is taken at INTO stays, and goes with the person below
            conn.execute(f'UPDATE OR IGNORE "{table}" SET "{col}" = ? WHERE "{col}" = ?', (dst.id, src.id))
            left = conn.execute(f'SELECT * FROM "{table}" WHERE "{col}" = ?', (src.id,)).fetchall()
            stayed = {tuple(r[k] for k in key) for r in left}
            moved += [[table, col, list(k)] for k in map(tuple, before) if k not in stayed]
            lost += [[table, col, dict(r)] for r in left]
        contradicting = "person_id = ?1 AND face_id IN (SELECT id FROM faces WHERE person_id = ?1)"
        marks = f"SELECT face_id, created FROM negatives WHERE {contradicting}"
        dropped = conn.execute(marks, (dst.id,)).fetchall()
        conn.execute(f"DELETE FROM negatives WHERE {contradicting}", (dst.id,))
        conn.execute("DELETE FROM people WHERE id = ?", (src.id,))
        faces = sum(1 for m in moved if m[0] == "faces")
        when = now_iso()
        cur = conn.execute(
            "INSERT INTO person_merges (person_id, name, person_created, into_id, into_name, faces, "
            "moved, lost, dropped, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                src.id,
                src.name,
                src.created,
                dst.id,
                dst.name,
                faces,
                json.dumps(moved),
                json.dumps(lost),
                json.dumps([list(r) for r in dropped]),
                when,
            ),
        )
    return Merge(cur.lastrowid, src.id, src.name, dst.id, dst.name, faces, when, None, dst.id, dst.name)


def _holder(conn: sqlite3.Connection, person_id: str) -> tuple[str, str] | None:
    """``(id, name)`` of whoever has ``person_id``'s rows now: the person, or whom they were
    merged into (followed), or None when that person has gone for good."""
    seen = set()
    while person_id not in seen:
        row = conn.execute("SELECT id, name FROM people WHERE id = ?", (person_id,)).fetchone()
        if row:
            return row["id"], row["name"]
        seen.add(person_id)
        nxt = conn.execute(
            "SELECT into_id FROM person_merges WHERE person_id = ? AND undone IS NULL "
            "ORDER BY id DESC LIMIT 1",
            (person_id,),
        ).fetchone()
        if nxt is None:
            return None
        person_id = nxt["into_id"]
    return None


def _record(conn: sqlite3.Connection, row: sqlite3.Row) -> Merge:
    holder = _holder(conn, row["into_id"]) if row["undone"] is None else None
    return Merge(
        row["id"],
        row["person_id"],
        row["name"],
        row["into_id"],
        row["into_name"],
        row["faces"],
        row["created"],
        row["undone"],
        *(holder or (None, None)),
    )


def merges(store: Store, *, held_by: str | None = None) -> list[Merge]:
    """Every merge, newest first; with ``held_by`` (a person id), the ones not undone whose
    faces that person has now."""
    if not store.has_table("person_merges"):
        return []
    rows = store.conn.execute("SELECT * FROM person_merges ORDER BY id DESC").fetchall()
    out = [_record(store.conn, r) for r in rows]
    return [m for m in out if m.holder_id == held_by] if held_by is not None else out


def find_merge(store: Store, ref: str) -> Merge:
    """A merge by its number (``3`` or ``#3``), or the newest one not undone of the person
    named ``ref``."""
    return _record(store.conn, _merge_row(store, ref))


def _merge_row(store: Store, ref: str) -> sqlite3.Row:
    number = ref.removeprefix("#")
    if not store.has_table("person_merges"):
        row = None
    elif number.isdigit():
        row = store.conn.execute("SELECT * FROM person_merges WHERE id = ?", (int(number),)).fetchone()
    else:
        row = store.conn.execute(
            "SELECT * FROM person_merges WHERE (name = ?1 OR person_id = ?1) AND undone IS NULL "
            "ORDER BY id DESC LIMIT 1",
            (ref.strip(),),
        ).fetchone()
    if row is None:
        raise StoreError(f"no merge {ref!r} to undo (see 'facefleet people merges')")
    return row


def unmerge(store: Store, ref: str) -> Merge:
    """Undo a merge (see ``find_merge`` for ``ref``): the person is back under their old id
    and name with the rows the merge moved, as far as they are still where it left them.
    Returns the merge with ``faces`` = how many faces came back."""
    with store.transaction() as conn:
        row = _merge_row(store, ref)
        m = _record(conn, row)
        if m.undone:
            raise StoreError(f"merge {m.id} ({m.name} into {m.into_name}) was undone on {m.undone}")
        if store.find_person(m.person_id) or store.find_person(m.name):
            raise StoreError(f"somebody is named {m.name!r} again: rename them before undoing merge {m.id}")
        holder = _holder(conn, m.into_id)
        if holder is None:
            raise StoreError(
                f"{m.into_name} has been removed since, and with them the faces merge {m.id} "
                f"moved: there is nothing of {m.name} to take back"
            )
        conn.execute(
            "INSERT INTO people (id, name, created) VALUES (?, ?, ?)",
            (m.person_id, m.name, row["person_created"]),
        )
        keys = {(t, c): k for t, c, k in _references(conn)}
        back = 0
        for table, col, values in json.loads(row["moved"]):
            key = keys.get((table, col))
            if key is None or len(key) != len(values):
                continue  # the table has changed shape since
            n = conn.execute(
                f'UPDATE OR IGNORE "{table}" SET "{col}" = ? WHERE "{col}" = ? AND {_where(key)}',
                (m.person_id, holder[0], *values),
            ).rowcount
            back += n if table == "faces" else 0
        for table, col, full in json.loads(row["lost"]):
            key = keys.get((table, col))
            if key is None:
                continue
            values = [full.get(k) for k in key]
            sql = f'UPDATE OR IGNORE "{table}" SET "{col}" = ? WHERE "{col}" IS NULL AND {_where(key)}'
            if conn.execute(sql, (m.person_id, *values)).rowcount:
                continue
            full[col] = m.person_id
            names = ", ".join(f'"{k}"' for k in full)
            with suppress(sqlite3.Error):  # what it pointed at (a face, a cluster) has gone since
                conn.execute(
                    f'INSERT OR IGNORE INTO "{table}" ({names}) VALUES ({", ".join("?" * len(full))})',
                    list(full.values()),
                )
        for face_id, created in json.loads(row["dropped"]):
            with suppress(sqlite3.Error):  # the face has gone since
                conn.execute(
                    "INSERT OR IGNORE INTO negatives (face_id, person_id, created) VALUES (?, ?, ?)",
                    (face_id, holder[0], created),
                )
        when = now_iso()
        conn.execute("UPDATE person_merges SET undone = ? WHERE id = ?", (when, m.id))
    return replace(m, faces=back, undone=when, holder_id=holder[0], holder_name=holder[1])
