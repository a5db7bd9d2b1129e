"""Clusters of unknown captures (across cameras and days), so a reviewer names a person once.

Average-linkage clustering of the embeddings (``train.grouping``), cut at dlib's ~0.5.
Cluster ids are stable: they live in the store (``curate_clusters``/``curate_cluster_members``);
a re-clustering only places faces that have no cluster yet, joining the existing cluster most
of their group already belongs to, or opening a new one. Existing clusters never split or
merge under a reviewer's feet.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from facefleet.curate import labels
from facefleet.errors import StoreError
from facefleet.registry.inference import pairwise_distances
from facefleet.store import FaceRow, Store, now_iso
from facefleet.train.grouping import SAME_PERSON_DISTANCE, agglomerate

SCHEMA = """
CREATE TABLE IF NOT EXISTS curate_clusters (
    id INTEGER PRIMARY KEY,
    created TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'open',
    person_id TEXT REFERENCES people(id) ON DELETE SET NULL,
    updated TEXT
);
CREATE TABLE IF NOT EXISTS curate_cluster_members (
    face_id INTEGER PRIMARY KEY REFERENCES faces(id) ON DELETE CASCADE,
    cluster_id INTEGER NOT NULL REFERENCES curate_clusters(id) ON DELETE CASCADE
);
"""


@dataclass
class ClusterInfo:
    id: int
    state: str  # open | labelled | rejected
    person: str | None
    faces: list[FaceRow] = field(default_factory=list)  # members still candidates
    all_members: int = 0
    spread: float = 0.0  # largest distance between two open members
    devices: list[str] = field(default_factory=list)
    first_seen: str | None = None
    last_seen: str | None = None

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "state": self.state,
            "person": self.person,
            "size": len(self.faces),
            "members": self.all_members,
            "spread": round(self.spread, 4),
            "devices": self.devices,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "faces": [f.id for f in self.faces],
        }


# -- pure ----------------------------------------------------------------------------------
def assign(groups: np.ndarray, existing: list[int | None], next_id: int) -> list[int]:
    """A stable cluster id per face: faces with one keep it; the others join the existing
    cluster most of their group holds, else a new id per group (from ``next_id``)."""
    out: list[int] = [0] * len(groups)
    new_ids: dict[int, int] = {}
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        held = Counter(existing[i] for i in idx if existing[i] is not None)
        target = held.most_common(1)[0][0] if held else None
        if target is None:
            target = new_ids.setdefault(int(g), next_id + len(new_ids))
        for i in idx:
            out[i] = existing[i] if existing[i] is not None else target
    return out


def spread(X: np.ndarray) -> float:
    return float(pairwise_distances(X, X).max()) if len(X) > 1 else 0.0


# -- against the store -----------------------------------------------------------------------
def _unknown_candidates(store: Store) -> list[FaceRow]:
    """Collected faces still to review that no device named."""
    return [
        f for f in store.faces(status="candidate") if f.person_id is None and not (f.meta or {}).get("name")
    ]


def update_clusters(store: Store, embedder_id: str, threshold: float = SAME_PERSON_DISTANCE) -> list[int]:
    """Cluster the unknown candidates; returns the ids of faces placed in a cluster now."""
    store.ensure_schema(SCHEMA)
    faces = _unknown_candidates(store)
    vecs, rows = [], []
    for f in faces:
        v = store.embedding(f.id, embedder_id)
        if v is not None:
            vecs.append(v)
            rows.append(f)
    if not rows:
        return []
    member = dict(store.conn.execute("SELECT face_id, cluster_id FROM curate_cluster_members").fetchall())
    existing = [member.get(f.id) for f in rows]
    if all(e is not None for e in existing):
        return []
    groups = agglomerate(np.stack(vecs), threshold)
    with store.transaction() as conn:
        top = conn.execute("SELECT COALESCE(MAX(id), 0) FROM curate_clusters").fetchone()[0]
        ids = assign(groups, existing, int(top) + 1)
        placed = []
        for f, old, cid in zip(rows, existing, ids, strict=True):
            if old is not None:
                continue
            conn.execute(
                "INSERT OR IGNORE INTO curate_clusters (id, created) VALUES (?, ?)", (cid, now_iso())
            )
            conn.execute(
                "INSERT INTO curate_cluster_members (face_id, cluster_id) VALUES (?, ?)", (f.id, cid)
            )
            placed.append(f.id)
    return placed


def clusters(store: Store, embedder_id: str, *, include_closed: bool = False) -> list[ClusterInfo]:
    """Every cluster with its open members, biggest first."""
    store.ensure_schema(SCHEMA)
    people = {p.id: p.name for p in store.people()}
    out = []
    for row in store.conn.execute("SELECT * FROM curate_clusters ORDER BY id").fetchall():
        info = cluster(store, embedder_id, int(row["id"]), people=people)
        if include_closed or (info.state == "open" and info.faces):
            out.append(info)
    return sorted(out, key=lambda c: (-len(c.faces), c.id))


def cluster(store: Store, embedder_id: str, cid: int, *, people: dict[str, str] | None = None) -> ClusterInfo:
    store.ensure_schema(SCHEMA)
    row = store.conn.execute("SELECT * FROM curate_clusters WHERE id = ?", (cid,)).fetchone()
    if row is None:
        raise StoreError(f"no cluster {cid} (see 'facefleet clusters list')")
    people = people if people is not None else {p.id: p.name for p in store.people()}
    ids = [
        int(r[0])
        for r in store.conn.execute(
            "SELECT face_id FROM curate_cluster_members WHERE cluster_id = ? ORDER BY face_id", (cid,)
        )
    ]
    faces = store.faces_by_id(ids)
    open_faces = [f for f in faces if f.status == "candidate"]
    if row["state"] == "open" and faces and not open_faces:
        row = _settle(store, cid, faces)
    vectors = store.embeddings(embedder_id, [f.id for f in open_faces])
    vecs = [vectors[f.id] for f in open_faces if f.id in vectors]
    times = sorted(str((f.meta or {}).get("event_time") or f.created) for f in faces)
    return ClusterInfo(
        id=cid,
        state=row["state"],
        person=people.get(row["person_id"]),
        faces=open_faces,
        all_members=len(faces),
        spread=spread(np.stack(vecs)) if vecs else 0.0,
        devices=sorted({str((f.meta or {}).get("device")) for f in faces if (f.meta or {}).get("device")}),
        first_seen=times[0] if times else None,
        last_seen=times[-1] if times else None,
    )


def settled_state(faces: list[FaceRow]) -> tuple[str, str | None]:
    """The state of a cluster none of whose faces is left to review (labelled one by one or
    discarded elsewhere): labelled as the person most of them went to, else rejected."""
    people = Counter(f.person_id for f in faces if f.person_id is not None and f.status != "revoked")
    if people:
        return "labelled", people.most_common(1)[0][0]
    return "rejected", None


def _settle(store: Store, cid: int, faces: list[FaceRow]):
    """Close an open cluster that has no open face left; returns its updated row."""
    state, person_id = settled_state(faces)
    with store.transaction():
        _close(store, cid, state, person_id)
    return store.conn.execute("SELECT * FROM curate_clusters WHERE id = ?", (cid,)).fetchone()


def _close(store: Store, cid: int, state: str, person_id: str | None) -> None:
    store.conn.execute(
        "UPDATE curate_clusters SET state = ?, person_id = ?, updated = ? WHERE id = ?",
        (state, person_id, now_iso(), cid),
    )


def label_cluster(
    store: Store, embedder_id: str, cid: int, name: str, exclude: list[int] | None = None
) -> list[int]:
    """Name every open member of a cluster (except ``exclude``)."""
    info = cluster(store, embedder_id, cid)
    ids = [f.id for f in info.faces if f.id not in set(exclude or [])]
    if not ids:
        raise StoreError(f"cluster {cid} has no faces left to label")
    with store.transaction():
        labels.label(store, ids, name)
        _close(store, cid, "labelled", store.person(name).id)
    return ids


def reject_cluster(store: Store, embedder_id: str, cid: int, *, as_stranger: bool = False) -> list[int]:
    """Discard a cluster's open members (revoked), or keep them as reviewed strangers."""
    info = cluster(store, embedder_id, cid)
    ids = [f.id for f in info.faces]
    with store.transaction():
        if ids:
            (labels.stranger if as_stranger else labels.discard)(store, ids)
        _close(store, cid, "rejected", None)
    return ids


def open_clusters_page(
    store: Store, embedder_id: str, *, offset: int = 0, limit: int = 20
) -> tuple[list[ClusterInfo], int]:
    """One page of :func:`clusters` (open clusters with faces left, biggest first) and how many
    there are, without reading the members of the clusters off the page."""
    store.ensure_schema(SCHEMA)
    base = (
        "FROM curate_clusters c JOIN curate_cluster_members m ON m.cluster_id = c.id "
        "JOIN faces f ON f.id = m.face_id WHERE c.state = 'open' AND f.status = 'candidate'"
    )
    total = int(store.conn.execute(f"SELECT COUNT(DISTINCT c.id) {base}").fetchone()[0])
    ids = [
        int(r[0])
        for r in store.conn.execute(
            f"SELECT c.id, COUNT(*) AS n {base} GROUP BY c.id ORDER BY n DESC, c.id LIMIT ? OFFSET ?",
            (int(limit), int(offset)),
        )
    ]
    people = {p.id: p.name for p in store.people()}
    return [cluster(store, embedder_id, cid, people=people) for cid in ids], total
