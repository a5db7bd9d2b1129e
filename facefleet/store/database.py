"""The ``Store`` class: the SQLite identity store (people, images by sha256, faces with their
box, landmarks, quality and review status, embeddings per embedder id) and its row types.

Face statuses follow SentinelCam: candidate -> selected -> in_use, and revoked.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facefleet.clock import now_iso
from facefleet.errors import StoreError

STATUSES = ("candidate", "selected", "in_use", "revoked")
# A face with no person in one of these is a reviewed stranger: nobody enrolled, evidence
# against everyone (Store.stranger_set); a candidate with no person is only unreviewed.
STRANGER_STATUSES = ("selected", "in_use")

SCHEMA = """
CREATE TABLE IF NOT EXISTS people (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    path TEXT NOT NULL,
    source TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    person_id TEXT REFERENCES people(id) ON DELETE SET NULL,
    box TEXT NOT NULL,
    landmarks TEXT,
    quality TEXT,
    status TEXT NOT NULL CHECK (status IN ('candidate', 'selected', 'in_use', 'revoked')),
    detector TEXT,
    meta TEXT,
    created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS faces_person ON faces(person_id);
CREATE INDEX IF NOT EXISTS faces_image ON faces(image_id);
CREATE TABLE IF NOT EXISTS embeddings (
    face_id INTEGER NOT NULL REFERENCES faces(id) ON DELETE CASCADE,
    embedder_id TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (face_id, embedder_id)
);
CREATE TABLE IF NOT EXISTS negatives (
    face_id INTEGER NOT NULL REFERENCES faces(id) ON DELETE CASCADE,
    person_id TEXT NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    created TEXT NOT NULL,
    PRIMARY KEY (face_id, person_id)
);
CREATE TABLE IF NOT EXISTS rejections (
    sha256 TEXT NOT NULL,
    settings TEXT NOT NULL,
    reason TEXT NOT NULL,
    created TEXT NOT NULL,
    PRIMARY KEY (sha256, settings)
);
"""


MAX_NAME_CHARS = 100
NAME_RULE = (
    f"a person's name is 1-{MAX_NAME_CHARS} characters, without control characters "
    "(newline, tab, ...) or '/' or '\\', and is not '.' or '..'"
)


def check_person_name(name: str) -> str:
    """The name, stripped, or ``StoreError`` saying the rule (names become folder names and
    lines of ``people list``)."""
    import unicodedata

    if not isinstance(name, str):
        raise StoreError(f"a person's name must be text, got {type(name).__name__}")
    name = name.strip()
    bad = (
        not name
        or len(name) > MAX_NAME_CHARS
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name)
    )
    if bad:
        shown = name if len(name) <= 40 else name[:40] + "..."
        raise StoreError(f"invalid person name {shown!r}: {NAME_RULE}")
    return name


@dataclass(frozen=True)
class Person:
    id: str
    name: str
    created: str


@dataclass(frozen=True)
class FaceRow:
    id: int
    image_id: int
    person_id: str | None
    person_name: str | None
    box: tuple[int, int, int, int]
    landmarks: list | None
    quality: dict[str, Any]
    status: str
    detector: str | None
    meta: dict[str, Any]
    created: str
    image_path: str
    image_sha256: str


@dataclass
class TrainingSet:
    X: np.ndarray
    names: list[str]
    person_ids: list[str]
    face_ids: list[int]

    def __len__(self) -> int:
        return len(self.names)


def _vec_to_blob(vector: np.ndarray) -> bytes:
    vec = np.asarray(vector, dtype=np.float32).reshape(-1)
    if vec.shape != (128,) or not np.all(np.isfinite(vec)):
        raise StoreError(f"an embedding must be 128 finite floats, got shape {vec.shape}")
    return vec.tobytes()


def _blob_to_vec(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float32).copy()


class Store:
    """The identity store. Each method is one transaction unless inside ``transaction()``."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self._depth = 0
        self.ensure_schema(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ensure_schema(self, sql: str) -> None:
        """Run idempotent DDL (``CREATE ... IF NOT EXISTS``): other stages add their tables so."""
        with self.transaction():
            for statement in sql.split(";"):
                if statement.strip():
                    self.conn.execute(statement)

    def has_table(self, name: str) -> bool:
        """Whether a stage's table exists yet (a read path need not create it)."""
        row = self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
        return row.fetchone() is not None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All writes inside commit together or not at all (nested calls join the outer one)."""
        if self._depth == 0:
            self.conn.execute("BEGIN IMMEDIATE")
        self._depth += 1
        try:
            yield self.conn
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self.conn.execute("ROLLBACK")
            raise
        self._depth -= 1
        if self._depth == 0:
            self.conn.execute("COMMIT")

    # -- people -----------------------------------------------------------------------
    def add_person(self, name: str) -> str:
        name = check_person_name(name)
        with self.transaction() as conn:
            row = conn.execute("SELECT id FROM people WHERE name = ?", (name,)).fetchone()
            if row:
                return row["id"]
            person_id = "p" + uuid.uuid4().hex[:8]
            conn.execute(
                "INSERT INTO people (id, name, created) VALUES (?, ?, ?)",
                (person_id, name, now_iso()),
            )
            return person_id

    def find_person(self, ref: str) -> Person | None:
        row = self.conn.execute(
            "SELECT * FROM people WHERE id = ? OR name = ? ORDER BY id = ? DESC LIMIT 1",
            (ref, ref, ref),
        ).fetchone()
        return Person(row["id"], row["name"], row["created"]) if row else None

    def person(self, ref: str) -> Person:
        found = self.find_person(ref)
        if found is None:
            raise StoreError(f"no person {ref!r} (see 'facefleet people list')")
        return found

    def people(self) -> list[Person]:
        rows = self.conn.execute("SELECT * FROM people ORDER BY name").fetchall()
        return [Person(r["id"], r["name"], r["created"]) for r in rows]

    def rename_person(self, ref: str, new_name: str) -> Person:
        person = self.person(ref)
        new_name = check_person_name(new_name)
        with self.transaction() as conn:
            if self.find_person(new_name) is not None:
                raise StoreError(f"a person named {new_name!r} already exists")
            conn.execute("UPDATE people SET name = ? WHERE id = ?", (new_name, person.id))
        return Person(person.id, new_name, person.created)

    def remove_person(self, ref: str) -> int:
        """Delete a person and their faces; returns how many faces went."""
        person = self.person(ref)
        with self.transaction() as conn:
            count = conn.execute("DELETE FROM faces WHERE person_id = ?", (person.id,)).rowcount
            conn.execute("DELETE FROM people WHERE id = ?", (person.id,))
            conn.execute("DELETE FROM images WHERE id NOT IN (SELECT image_id FROM faces)")
        return count

    def face_counts(self) -> dict[str, dict[str, int]]:
        """Per person id: number of faces in each status."""
        counts: dict[str, dict[str, int]] = {}
        for row in self.conn.execute(
            "SELECT person_id, status, COUNT(*) AS n FROM faces WHERE person_id IS NOT NULL "
            "GROUP BY person_id, status"
        ):
            counts.setdefault(row["person_id"], {})[row["status"]] = row["n"]
        return counts

    # -- images, faces, embeddings ------------------------------------------------------
    def image_by_sha(self, sha256: str) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM images WHERE sha256 = ?", (sha256,)).fetchone()

    def add_image(
        self, path: Path | str, *, source: str = "enrol", sha256: str | None = None
    ) -> tuple[int, bool]:
        """The image id for this content, and whether it is new to the store."""
        if sha256 is None:
            from facefleet.fileio import sha256_file

            sha256 = sha256_file(Path(path))
        with self.transaction() as conn:
            row = self.image_by_sha(sha256)
            if row:
                return int(row["id"]), False
            cur = conn.execute(
                "INSERT INTO images (sha256, path, source, created) VALUES (?, ?, ?, ?)",
                (sha256, str(path), source, now_iso()),
            )
            return int(cur.lastrowid), True

    def add_face(
        self,
        image_id: int,
        *,
        person_id: str | None,
        box: Iterable[int],
        landmarks: np.ndarray | None = None,
        quality: dict[str, Any] | None = None,
        status: str = "in_use",
        detector: str | None = "hog",
        meta: dict[str, Any] | None = None,
    ) -> int:
        if status not in STATUSES:
            raise StoreError(f"unknown face status {status!r}: use one of {', '.join(STATUSES)}")
        lm = None if landmarks is None else json.dumps(np.asarray(landmarks).round(2).tolist())
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO faces (image_id, person_id, box, landmarks, quality, status, detector, meta,"
                " created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    image_id,
                    person_id,
                    json.dumps([int(v) for v in box]),
                    lm,
                    json.dumps(quality or {}),
                    status,
                    detector,
                    json.dumps(meta or {}),
                    now_iso(),
                ),
            )
            return int(cur.lastrowid)

    def add_embedding(self, face_id: int, embedder_id: str, vector: np.ndarray) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO embeddings (face_id, embedder_id, vector) VALUES (?, ?, ?)",
                (face_id, embedder_id, _vec_to_blob(vector)),
            )

    def embedding(self, face_id: int, embedder_id: str) -> np.ndarray | None:
        row = self.conn.execute(
            "SELECT vector FROM embeddings WHERE face_id = ? AND embedder_id = ?",
            (face_id, embedder_id),
        ).fetchone()
        return _blob_to_vec(row["vector"]) if row else None

    def embeddings(self, embedder_id: str, face_ids: Iterable[int] | None = None) -> dict[int, np.ndarray]:
        """Vectors by face id for ``embedder_id`` (of ``face_ids``, or every face), read in bulk."""
        if face_ids is None:
            rows = self.conn.execute(
                "SELECT face_id, vector FROM embeddings WHERE embedder_id = ?", (embedder_id,)
            ).fetchall()
        else:
            ids, rows = sorted({int(i) for i in face_ids}), []
            for lo in range(0, len(ids), 500):  # under SQLite's limit on bound parameters
                part = ids[lo : lo + 500]
                rows += self.conn.execute(
                    f"SELECT face_id, vector FROM embeddings WHERE embedder_id = ? "
                    f"AND face_id IN ({','.join('?' * len(part))})",
                    (embedder_id, *part),
                ).fetchall()
        return {int(r["face_id"]): _blob_to_vec(r["vector"]) for r in rows}

    def faces_by_id(self, face_ids: Iterable[int]) -> list[FaceRow]:
        """The faces with these ids (missing ones left out), in id order, read in bulk."""
        ids, out = sorted({int(i) for i in face_ids}), []
        for lo in range(0, len(ids), 500):
            part = ids[lo : lo + 500]
            out += self._face_rows(f"WHERE f.id IN ({','.join('?' * len(part))})", tuple(part))
        return out

    def record_rejection(self, sha256: str, settings: str, reason: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO rejections (sha256, settings, reason, created) VALUES (?, ?, ?, ?)",
                (sha256, settings, reason, now_iso()),
            )

    def rejection(self, sha256: str, settings: str) -> str | None:
        row = self.conn.execute(
            "SELECT reason FROM rejections WHERE sha256 = ? AND settings = ?", (sha256, settings)
        ).fetchone()
        return row["reason"] if row else None

    def _face_rows(self, where: str = "", params: tuple = ()) -> list[FaceRow]:
        sql = (
            "SELECT f.*, p.name AS person_name, i.path AS image_path, i.sha256 AS image_sha256 "
            "FROM faces f JOIN images i ON i.id = f.image_id LEFT JOIN people p ON p.id = f.person_id "
            f"{where} ORDER BY f.id"
        )
        return [
            FaceRow(
                id=r["id"],
                image_id=r["image_id"],
                person_id=r["person_id"],
                person_name=r["person_name"],
                box=tuple(json.loads(r["box"])),
                landmarks=json.loads(r["landmarks"]) if r["landmarks"] else None,
                quality=json.loads(r["quality"] or "{}"),
                status=r["status"],
                detector=r["detector"],
                meta=json.loads(r["meta"] or "{}"),
                created=r["created"],
                image_path=r["image_path"],
                image_sha256=r["image_sha256"],
            )
            for r in self.conn.execute(sql, params)
        ]

    def faces(
        self, *, person: str | None = None, status: str | None = None, image_id: int | None = None
    ) -> list[FaceRow]:
        clauses, params = [], []
        if person is not None:
            clauses.append("f.person_id = ?")
            params.append(self.person(person).id)
        if status is not None:
            clauses.append("f.status = ?")
            params.append(status)
        if image_id is not None:
            clauses.append("f.image_id = ?")
            params.append(image_id)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        return self._face_rows(where, tuple(params))

    def face(self, face_id: int) -> FaceRow:
        rows = self._face_rows("WHERE f.id = ?", (face_id,))
        if not rows:
            raise StoreError(f"no face {face_id}")
        return rows[0]

    def set_status(self, face_ids: Iterable[int], status: str) -> None:
        if status not in STATUSES:
            raise StoreError(f"unknown face status {status!r}: use one of {', '.join(STATUSES)}")
        with self.transaction() as conn:
            conn.executemany("UPDATE faces SET status = ? WHERE id = ?", [(status, int(i)) for i in face_ids])

    def set_person(self, face_ids: Iterable[int], person_id: str | None) -> None:
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE faces SET person_id = ? WHERE id = ?",
                [(person_id, int(i)) for i in face_ids],
            )

    def add_negative(self, face_id: int, person_id: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO negatives (face_id, person_id, created) VALUES (?, ?, ?)",
                (int(face_id), person_id, now_iso()),
            )

    # -- training data ------------------------------------------------------------------
    def training_set(self, embedder_id: str, statuses: Iterable[str] = ("in_use",)) -> TrainingSet:
        statuses = tuple(statuses)
        marks = ",".join("?" * len(statuses))
        rows = self.conn.execute(
            "SELECT f.id, f.person_id, p.name, e.vector FROM faces f "
            "JOIN people p ON p.id = f.person_id "
            "JOIN embeddings e ON e.face_id = f.id AND e.embedder_id = ? "
            f"WHERE f.status IN ({marks}) ORDER BY p.name, f.id",
            (embedder_id, *statuses),
        ).fetchall()
        X = (
            np.stack([_blob_to_vec(r["vector"]) for r in rows])
            if rows
            else np.zeros((0, 128), dtype=np.float32)
        )
        return TrainingSet(
            X=X,
            names=[r["name"] for r in rows],
            person_ids=[r["person_id"] for r in rows],
            face_ids=[int(r["id"]) for r in rows],
        )

    # The faces a reviewer marked as nobody enrolled (STRANGER_STATUSES, no person).
    _STRANGERS = (
        "FROM faces f JOIN embeddings e ON e.face_id = f.id AND e.embedder_id = ? "
        f"WHERE f.person_id IS NULL AND f.status IN {STRANGER_STATUSES!r}"
    )

    def stranger_fingerprint(self, embedder_id: str) -> tuple[int, int, int]:
        """How many faces :meth:`stranger_set` would return, the sum and the largest of their
        ids: changes whenever a verdict adds, removes or relabels one of them."""
        row = self.conn.execute(
            f"SELECT COUNT(*), COALESCE(SUM(f.id), 0), COALESCE(MAX(f.id), 0) {self._STRANGERS}",
            (embedder_id,),
        ).fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    def stranger_count(self, embedder_id: str) -> int:
        """How many faces :meth:`stranger_set` would return."""
        return self.stranger_fingerprint(embedder_id)[0]

    def stranger_set(self, embedder_id: str) -> np.ndarray:
        """Faces a reviewer marked as nobody enrolled (no person, status selected or in_use)."""
        query = f"SELECT e.vector {self._STRANGERS} ORDER BY f.id"
        rows = self.conn.execute(query, (embedder_id,)).fetchall()
        if not rows:
            return np.zeros((0, 128), dtype=np.float32)
        return np.stack([_blob_to_vec(r["vector"]) for r in rows])

    def negative_set(self, embedder_id: str) -> tuple[np.ndarray, list[str]]:
        """Faces labelled "not <name>": their vectors and the names they are not."""
        rows = self.conn.execute(
            "SELECT e.vector, p.name FROM negatives n JOIN people p ON p.id = n.person_id "
            "JOIN embeddings e ON e.face_id = n.face_id AND e.embedder_id = ? ORDER BY n.face_id",
            (embedder_id,),
        ).fetchall()
        if not rows:
            return np.zeros((0, 128), dtype=np.float32), []
        return np.stack([_blob_to_vec(r["vector"]) for r in rows]), [r["name"] for r in rows]
