"""Candidates: which collected faces to review first. Filters (SentinelCam's proba/distance
thresholds, usable quality, date, person), de-duplication by image hash and by embedding
distance, and a ranking that puts clear faces with a small margin first: those are the faces
the model is least sure about, so a label there teaches it the most."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facefleet.settings import QualitySettings
from facefleet.store import FaceRow, Store
from facefleet.vision.quality import Quality, unusable_reason

# SentinelCam's curation defaults
MIN_PROBA = 0.99
MAX_DISTANCE = 0.65
DEDUP_DISTANCE = 0.15  # closer than this: the same face again (frames of one track)
MARGIN_SCALE = 0.1  # how fast priority falls with |margin|
NEAR_THRESHOLD = 0.6  # when no margin was recorded: distance to dlib's classic threshold
# A named face within this of its person's threshold is a match to check, whatever the
# proba/distance filters (a stranger at 0.578 against 0.580 is named, but barely).
NEAR_MARGIN = 0.05


@dataclass
class Filters:
    min_proba: float | None = MIN_PROBA
    max_distance: float | None = MAX_DISTANCE
    usable: bool = False
    since: str | None = None  # ISO date or datetime
    person: str | None = None  # the device's name or candidate
    status: str = "candidate"


@dataclass
class Candidate:
    face: FaceRow
    vector: np.ndarray | None
    priority: float
    usable_reason: str | None
    not_names: list[str] = field(default_factory=list)

    @property
    def meta(self) -> dict[str, Any]:
        return self.face.meta or {}

    def as_dict(self) -> dict[str, Any]:
        m = self.meta
        return {
            "id": self.face.id,
            "status": self.face.status,
            "person": self.face.person_name,
            "device": m.get("device"),
            "event_time": m.get("event_time"),
            "name": m.get("name"),
            "candidate": m.get("candidate"),
            "proba": m.get("proba"),
            "dist": m.get("dist"),
            "margin": m.get("margin"),
            "near_threshold": near_threshold(m),
            "sample": m.get("sample"),
            "quality": round(quality_score(self.face.quality), 3),
            "usable": self.usable_reason is None,
            "unusable_reason": self.usable_reason,
            "priority": round(self.priority, 4),
            "not": self.not_names,
            "image": self.face.image_path,
        }


# -- pure parts ----------------------------------------------------------------------------
def quality_score(quality: dict[str, Any]) -> float:
    return Quality.from_dict(quality or {}).score() if quality else 0.0


def _num(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def priority(quality: float, margin: float | None, dist: float | None) -> float:
    """Review priority: the quality score (0..1) weighted by closeness to the decision
    boundary (|margin| small -> weight near 1)."""
    if margin is None and dist is not None:
        margin = NEAR_THRESHOLD - dist
    closeness = 0.5 if margin is None else math.exp(-abs(margin) / MARGIN_SCALE)
    return float(quality * closeness)


def near_threshold(meta: dict[str, Any]) -> bool:
    """Whether a device named this face by a small margin (a match to check)."""
    margin = _num(meta.get("margin"))
    return bool(meta.get("name")) and margin is not None and abs(margin) < NEAR_MARGIN


def passes(face: FaceRow, f: Filters, usable_reason: str | None) -> bool:
    """Whether one face passes the filters. The proba and distance thresholds apply to faces
    the device named (confident known faces, as in SentinelCam); unknown captures pass them."""
    m = face.meta or {}
    if f.usable and usable_reason is not None:
        return False
    if f.since and str(m.get("event_time") or face.created) < f.since:
        return False
    if f.person and f.person not in (m.get("name"), m.get("candidate"), face.person_name):
        return False
    if m.get("name") and not near_threshold(m):
        proba, dist = _num(m.get("proba")), _num(m.get("dist"))
        if f.min_proba is not None and (proba is None or proba < f.min_proba):
            return False
        if f.max_distance is not None and (dist is None or dist > f.max_distance):
            return False
    return True


def _close_to(V: np.ndarray, K: np.ndarray, distance: float) -> np.ndarray:
    """``M[a, b]``: whether ``V[a]`` is closer than ``distance`` to ``K[b]`` (pure). A matrix
    product finds the candidates; pairs near the threshold are measured exactly."""
    if len(V) == 0 or len(K) == 0:
        return np.zeros((len(V), len(K)), dtype=bool)
    d2 = V @ K.T
    d2 *= -2.0
    d2 += (V * V).sum(axis=1)[:, None]
    d2 += (K * K).sum(axis=1)[None, :]
    out = d2 < (distance - 1e-3) ** 2
    aa, bb = np.nonzero((d2 < (distance + 1e-3) ** 2) & ~out)
    if len(aa):
        out[aa, bb] = np.sqrt(((V[aa] - K[bb]) ** 2).sum(axis=1)) < distance
    return out


def dedup(
    vectors: list[np.ndarray | None],
    hashes: list[str],
    distance: float,
    limit: int | None = None,
    chunk: int = 256,
) -> list[int]:
    """Indices to keep, in order: the first of each image hash, and no vector within
    ``distance`` of one already kept (input is in priority order, so the best one stays).
    With ``limit``, stops once that many are kept (the best ``limit``, found cheaply)."""
    kept: list[int] = []
    seen: set[str] = set()
    dim = next((len(v) for v in vectors if v is not None), 0)
    K = np.zeros((0, dim), dtype=np.float32)  # vectors kept so far
    for lo in range(0, len(vectors), chunk):
        idx = list(range(lo, min(len(vectors), lo + chunk)))
        has = [i for i in idx if vectors[i] is not None]
        V = np.stack([vectors[i] for i in has]).astype(np.float32) if has else K[:0]
        row = {i: r for r, i in enumerate(has)}
        by_kept = _close_to(V, K, distance).any(axis=1)
        within = _close_to(V, V, distance)
        kept_here: list[int] = []  # rows of V kept in this chunk
        for i in idx:
            if hashes[i] in seen:
                continue
            r = row.get(i)
            if r is not None and (by_kept[r] or (kept_here and within[r, kept_here].any())):
                continue
            seen.add(hashes[i])
            kept.append(i)
            if r is not None:
                kept_here.append(r)
            if limit is not None and len(kept) >= limit:
                return kept
        if kept_here:
            K = np.concatenate([K, V[kept_here]])
    return kept


# -- against the store -----------------------------------------------------------------------
def negatives_by_face(store: Store) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for row in store.conn.execute(
        "SELECT n.face_id, p.name FROM negatives n JOIN people p ON p.id = n.person_id"
    ):
        out.setdefault(int(row["face_id"]), []).append(row["name"])
    return out


def list_candidates(
    store: Store,
    embedder_id: str,
    filters: Filters | None = None,
    *,
    quality_cfg: QualitySettings | None = None,
    dedup_distance: float = DEDUP_DISTANCE,
    limit: int | None = None,
) -> list[Candidate]:
    """Faces in ``filters.status`` passing the filters, de-duplicated, best first (only the
    best ``limit`` when given: the de-duplication then stops early)."""
    f = filters or Filters()
    nots = negatives_by_face(store)
    faces = store.faces(status=f.status)
    vectors = store.embeddings(embedder_id, [face.id for face in faces])
    found = []
    for face in faces:
        reason = (
            unusable_reason(Quality.from_dict(face.quality), quality_cfg)
            if face.quality.get("size_px") is not None
            else "no quality measured"
        )
        if not passes(face, f, reason):
            continue
        m = face.meta or {}
        found.append(
            Candidate(
                face,
                vectors.get(face.id),
                priority(quality_score(face.quality), _num(m.get("margin")), _num(m.get("dist"))),
                reason,
                nots.get(face.id, []),
            )
        )
    found.sort(key=lambda c: (c.usable_reason is not None, -c.priority, c.face.id))
    keep = dedup([c.vector for c in found], [c.face.image_sha256 for c in found], dedup_distance, limit)
    return [found[i] for i in keep]


def format_candidates(cands: list[Candidate]) -> str:
    lines = [
        f"{'id':>6s} {'device':10s} {'time':19s} {'name/cand':16s} {'proba':>6s} "
        f"{'dist':>6s} {'margin':>7s} {'qual':>5s} {'prio':>6s}  note"
    ]
    for c in cands:
        d = c.as_dict()
        who = d["name"] or (f"({d['candidate']})" if d["candidate"] else "-")

        def fmt(v: Any, w: int, p: int = 3) -> str:
            return f"{v:{w}.{p}f}" if isinstance(v, (int, float)) else f"{'-':>{w}s}"

        note = [] if d["usable"] else [d["unusable_reason"]]
        if d["near_threshold"]:
            note.append(f"near threshold (margin {_num(d['margin']):+.3f}): check")
        if d["sample"] == "named":
            note.append("named sample")
        if d["not"]:
            note.append("not " + ", ".join(d["not"]))
        lines.append(
            f"{d['id']:6d} {str(d['device'] or '-')[:10]:10s} "
            f"{str(d['event_time'] or '-')[:19]:19s} {who[:16]:16s} "
            f"{fmt(d['proba'], 6)} {fmt(d['dist'], 6)} {fmt(d['margin'], 7)} "
            f"{d['quality']:5.2f} {d['priority']:6.3f}  {'; '.join(note)}"
        )
    return "\n".join(lines)
