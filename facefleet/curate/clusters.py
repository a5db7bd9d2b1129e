"""Clusters of unknown captures (across cameras and days), so a reviewer names a person once.

Average-linkage clustering of the embeddings (``train.grouping``), cut at dlib's ~0.5.
Cluster ids are stable: they live in the store (``curate_clusters``/``curate_cluster_members``);
a re-clustering only places faces that have no cluster yet, joining the existing cluster most
of their group already belongs to, or opening a new one. Existing clusters never split or
merge under a reviewer's feet; instead each open cluster says which person (enrolled or named)
and which other open cluster it looks like (:func:`looks_like`), for a reviewer to confirm or
refuse.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from facefleet.curate import labels
from facefleet.curate.candidates import negatives_by_face
from facefleet.errors import StoreError
from facefleet.registry.inference import pairwise_distances
from facefleet.store import FaceRow, Store, now_iso
from facefleet.train.grouping import SAME_PERSON_DISTANCE, agglomerate
from facefleet.train.thresholds import centroids

# Closer than this (root-mean-square distance between the faces of two sets, see
# :func:`set_distances`) a cluster is said to look like an enrolled person or another open
# cluster. On lfw_dev (the first 3 photos of each of 452 people enrolled) a person's other
# photos taken as one cluster came within it of their own person 96.7 % of the time and of
# somebody else 0.2 %; one stranger's photo came within it of somebody 10.6 % of the time, and
# one photo of an enrolled person within it of the right one 94.5 %, of somebody else 0.9 %.
LOOKS_LIKE_DISTANCE = 0.55

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


def set_stats(X: np.ndarray, groups: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per group (0..n-1, each with a face): the mean embedding and the mean squared distance
    of its faces to that mean."""
    mean = centroids(X, groups, n)
    sq = ((np.asarray(X, dtype=np.float64) - mean[groups]) ** 2).sum(axis=1)
    return mean, np.bincount(groups, weights=sq, minlength=n) / np.bincount(groups, minlength=n)


def set_distances(mean_a: np.ndarray, var_a: np.ndarray, mean_b: np.ndarray, var_b: np.ndarray) -> np.ndarray:
    """A x B root-mean-square distances between every face of a set and every face of
    another, ``sqrt(|mean_a - mean_b|^2 + var_a + var_b)``: exact from the sets' means and
    spreads, so comparing clusters and people costs no face-by-face matrix."""
    d2 = pairwise_distances(mean_a, mean_b) ** 2 + var_a[:, None] + var_b[None, :]
    return np.sqrt(np.maximum(d2, 0.0))


@dataclass(frozen=True)
class LooksLike:
    """The person (``cluster`` None) or the other open cluster a cluster is closest to."""

    distance: float
    face_id: int  # a face to show beside it: the one nearest its set's mean
    person: str | None = None
    cluster: int | None = None

    def as_dict(self) -> dict:
        return {
            "person": self.person,
            "cluster": self.cluster,
            "distance": round(self.distance, 4),
            "face": self.face_id,
        }


def nearest_sets(
    dist: np.ndarray, limit: float, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the column nearest within ``limit`` (-1 if none) and its distance; ``exclude``
    gives per row a column to skip (-1: none), the row's own set."""
    d = np.array(dist, dtype=np.float64)
    if exclude is not None and d.size:
        rows = np.flatnonzero(exclude >= 0)
        d[rows, exclude[rows]] = np.inf
    if d.shape[1] == 0:
        return np.full(len(d), -1), np.full(len(d), np.inf)
    best = d.argmin(axis=1)
    near = d[np.arange(len(d)), best]
    return np.where(near < limit, best, -1), near


def _typical_faces(X: np.ndarray, groups: np.ndarray, mean: np.ndarray, ids: list[int]) -> list[int]:
    """Per group, the id of its face nearest the group's mean."""
    d = np.linalg.norm(np.asarray(X, dtype=np.float64) - mean[groups], axis=1)
    out = [0] * len(mean)
    best = np.full(len(mean), np.inf)
    for i, g in enumerate(groups):
        if d[i] < best[g]:
            best[g], out[g] = d[i], ids[i]
    return out


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


# faces a person is made of for the hints: named in review (selected) counts too, so that once
# one cluster of a person is named the person's other clusters say so
_KNOWN = ("selected", "in_use")


def _member_rows(store: Store) -> list[tuple[int, int]]:
    """(cluster id, face id) of every open face of an open cluster."""
    store.ensure_schema(SCHEMA)
    return [
        (int(r[0]), int(r[1]))
        for r in store.conn.execute(
            "SELECT m.cluster_id, m.face_id FROM curate_cluster_members m "
            "JOIN curate_clusters c ON c.id = m.cluster_id JOIN faces f ON f.id = m.face_id "
            "WHERE c.state = 'open' AND f.status = 'candidate' ORDER BY m.face_id"
        )
    ]


def _known_rows(store: Store) -> list[tuple[int, str]]:
    """(face id, person name) of the faces :meth:`HintIndex.build` makes people of."""
    query = (
        "SELECT f.id, p.name FROM faces f JOIN people p ON p.id = f.person_id "
        f"WHERE f.status IN ({','.join('?' * len(_KNOWN))}) ORDER BY f.id"
    )
    return [(int(r[0]), str(r[1])) for r in store.conn.execute(query, _KNOWN)]


@dataclass
class HintIndex:
    """The means and spreads of every open cluster and every person, from which
    :meth:`looks_like` answers for any page of clusters without reading an embedding."""

    clusters: list[int]
    faces_of: dict[int, list[int]]  # open faces per cluster
    c_mean: np.ndarray
    c_var: np.ndarray
    c_face: list[int]
    names: list[str]
    p_mean: np.ndarray
    p_var: np.ndarray
    p_face: list[int]

    @staticmethod
    def signature(store: Store, embedder_id: str) -> tuple:
        """What an index is built from, without a vector: it changes whenever a cluster's open
        faces or a person's faces change (a console keeps one index while it holds)."""
        return embedder_id, tuple(_member_rows(store)), tuple(_known_rows(store))

    @classmethod
    def build(cls, store: Store, embedder_id: str, signature: tuple | None = None) -> HintIndex:
        """Read every open cluster's and every person's faces (``embedder_id``'s vectors);
        ``signature``: :meth:`signature` just read, so as not to read it twice."""
        rows = list((signature or cls.signature(store, embedder_id))[1])
        vectors = store.embeddings(embedder_id, [f for _, f in rows])
        members = [(c, f) for c, f in rows if f in vectors]
        faces_of: dict[int, list[int]] = {}
        for c, f in members:
            faces_of.setdefault(c, []).append(f)
        cids = sorted(faces_of)
        dim = next(iter(vectors.values())).shape[0] if vectors else 128
        c_mean, c_var, c_face = np.zeros((0, dim)), np.zeros(0), []
        if members:
            index = {c: i for i, c in enumerate(cids)}
            cg = np.array([index[c] for c, _ in members])
            CX = np.stack([vectors[f] for _, f in members])
            c_mean, c_var = set_stats(CX, cg, len(cids))
            c_face = _typical_faces(CX, cg, c_mean, [f for _, f in members])
        gallery = store.training_set(embedder_id, _KNOWN)
        names = sorted(set(gallery.names))
        p_mean, p_var, p_face = np.zeros((0, dim)), np.zeros(0), []
        if len(gallery):
            pg = np.searchsorted(names, gallery.names)
            p_mean, p_var = set_stats(gallery.X, pg, len(names))
            p_face = _typical_faces(gallery.X, pg, p_mean, gallery.face_ids)
        return cls(cids, faces_of, c_mean, c_var, c_face, names, p_mean, p_var, p_face)

    def looks_like(
        self, cluster_ids: list[int], nots: dict[int, list[str]], limit: float = LOOKS_LIKE_DISTANCE
    ) -> dict[int, list[LooksLike]]:
        """See :func:`looks_like`; ``nots``: the names each face is marked "not"."""
        out: dict[int, list[LooksLike]] = {cid: [] for cid in cluster_ids}
        index = {c: i for i, c in enumerate(self.clusters)}
        asked = [c for c in cluster_ids if c in index]
        if not asked:
            return out
        rows = np.array([index[c] for c in asked])
        mean, var = self.c_mean[rows], self.c_var[rows]
        if self.names:
            dp = set_distances(mean, var, self.p_mean, self.p_var)
            for row, cid in enumerate(asked):
                refused = set.intersection(*(set(nots.get(f, ())) for f in self.faces_of[cid]))
                dp[row, np.searchsorted(self.names, sorted(refused & set(self.names)))] = np.inf
            best, dist = nearest_sets(dp, limit)
            for cid, b, d in zip(asked, best, dist, strict=True):
                if b >= 0:
                    out[cid].append(LooksLike(float(d), self.p_face[b], person=self.names[b]))
        best, dist = nearest_sets(set_distances(mean, var, self.c_mean, self.c_var), limit, exclude=rows)
        for cid, b, d in zip(asked, best, dist, strict=True):
            if b >= 0:
                out[cid].append(LooksLike(float(d), self.c_face[b], cluster=self.clusters[b]))
        return out

    def people_near(
        self, vectors: Sequence[np.ndarray], limit: float = LOOKS_LIKE_DISTANCE
    ) -> list[tuple[str, float] | None]:
        """Per face (a set of one): the person it looks like and the distance, or None."""
        if not self.names or not len(vectors):
            return [None] * len(vectors)
        X = np.asarray(vectors, dtype=np.float64).reshape(len(vectors), -1)
        best, dist = nearest_sets(set_distances(X, np.zeros(len(X)), self.p_mean, self.p_var), limit)
        return [(self.names[b], float(d)) if b >= 0 else None for b, d in zip(best, dist, strict=True)]


def looks_like(
    store: Store, embedder_id: str, cluster_ids: list[int], *, limit: float = LOOKS_LIKE_DISTANCE
) -> dict[int, list[LooksLike]]:
    """Per cluster of ``cluster_ids``: the person (enrolled or named in review) and the other
    open cluster its open faces are closest to (:func:`set_distances`), each only if within
    ``limit``, person first; never a person all its open faces are marked "not". A hint for a
    reviewer (the camera missed a known face, or one person was split in two), not a verdict."""
    return HintIndex.build(store, embedder_id).looks_like(cluster_ids, negatives_by_face(store), limit)


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
