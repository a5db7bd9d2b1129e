"""Look-alikes: the enrolled people the model takes, or nearly takes, for one another.

The training's stranger estimate plays each enrolled person as a stranger against all the
others (``train.thresholds``). The trials it counts as named are the false accepts behind the
figure, and the closest of the rest are what holds the threshold down for everybody. Both are
usually one of two things a person can act on: somebody enrolled twice under two names, or
two people the embedder finds alike (more photos of each, or accept it). This module picks
those pairs out, one row per (person, taken for), with a face of each to compare. ``train``,
``models show``, the training report and the console's version page show them; training logs
them with the run as :data:`ARTIFACT`.

A pair a person has compared and found to be two people is *accepted* (``accept``, kept in
the store): it stays listed, since it still holds the thresholds down, but marked, and the
advice to act on it no longer counts it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from facefleet.clock import now_iso
from facefleet.errors import StoreError
from facefleet.registry.inference import pairwise_distances
from facefleet.store import Person, Store
from facefleet.train.thresholds import Scores

ARTIFACT = "lookalikes.json"
ROWS = 10  # pairs kept besides the named ones: the closest of the rest
# One row per pair, either way round (a merge may leave it in any order).
SCHEMA = """
CREATE TABLE IF NOT EXISTS lookalike_accepts (
    person_id TEXT NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    other_id TEXT NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    by TEXT,
    created TEXT NOT NULL,
    PRIMARY KEY (person_id, other_id)
);
"""


@dataclass(frozen=True)
class LookAlike:
    """One enrolled person played as a stranger, and the person they came closest to."""

    person: str
    taken_for: str
    named: int  # the person's trials that the estimate counts as named as ``taken_for``
    trials: int  # the person's trials (one per enrolled face)
    score: float  # the closest trial's score (the threshold's units; lower is surer)
    distance: float  # that trial's distance to ``taken_for``'s centroid
    face: int | None  # that trial's face: its index in the training set, or the store's face id
    other_face: int | None  # the face of ``taken_for`` nearest to it
    both_ways: bool = False  # ``taken_for`` is also listed as taken for ``person``
    accepted: bool = False  # somebody has compared the two and found two people

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LookAlike:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def look_alikes(
    X: np.ndarray,
    y: np.ndarray,
    labels: list[str],
    trials: Scores,
    named: np.ndarray,
    max_distance: float,
    rows: int = ROWS,
) -> list[LookAlike]:
    """The look-alike pairs of a gallery (pure).

    ``X``, ``y``: the gallery's faces and classes; ``trials``: each face's stranger trial (its
    own person removed, ``OpenSetFit.gallery``); ``named``: whether the estimate counts the
    trial as named. Returns every pair with a named trial and the ``rows`` closest others, by
    their closest trial's score. Trials further than ``max_distance`` can never be named and
    are left out.
    """
    y = np.asarray(y, dtype=np.int64)
    candidate = np.asarray(trials.candidate, dtype=np.int64)
    score = np.asarray(trials.score, dtype=np.float64)
    distance = np.asarray(trials.distance, dtype=np.float64)
    named = np.asarray(named, dtype=bool)
    faces = np.bincount(y, minlength=len(labels))
    near = np.flatnonzero(distance <= max_distance)
    best: dict[tuple[int, int], int] = {}  # pair -> its closest trial
    hits: dict[tuple[int, int], int] = {}
    for i in near[np.argsort(score[near], kind="stable")]:
        pair = (int(y[i]), int(candidate[i]))
        best.setdefault(pair, int(i))
        hits[pair] = hits.get(pair, 0) + int(named[i])
    rank = {p: r for r, p in enumerate(best)}  # by closest trial
    keep = [p for p in rank if hits[p]]
    keep += [p for p in rank if not hits[p]][: max(0, rows)]
    keep.sort(key=rank.__getitem__)
    listed = set(keep)
    out = []
    for a, b in keep:
        i = best[(a, b)]
        theirs = np.flatnonzero(y == b)
        nearest = theirs[int(np.argmin(pairwise_distances(X[i : i + 1], X[theirs])[0]))]
        out.append(
            LookAlike(
                person=labels[a],
                taken_for=labels[b],
                named=hits[(a, b)],
                trials=int(faces[a]),
                score=float(score[i]),
                distance=float(distance[i]),
                face=int(i),
                other_face=int(nearest),
                both_ways=(b, a) in listed,
            )
        )
    return out


def with_face_ids(found: list[LookAlike], face_ids: list[int] | None) -> list[LookAlike]:
    """The pairs with their faces as the store's face ids instead of training-set indices
    (``None``: faces not from the store, so none to show)."""

    def fid(i: int | None) -> int | None:
        return None if face_ids is None or i is None else int(face_ids[i])

    return [replace(la, face=fid(la.face), other_face=fid(la.other_face)) for la in found]


def accept(
    store: Store, a: str, b: str, *, by: str | None = None, undo: bool = False
) -> tuple[Person, Person]:
    """Mark two enrolled people (ids or names) as two people, compared and found alike only to
    the model; ``undo`` takes the mark back. Returns the two."""
    one, other = store.person(a), store.person(b)
    if one.id == other.id:
        raise StoreError(f"{one.name!r} and {other.name!r} are the same person: nothing to accept")
    store.ensure_schema(SCHEMA)
    with store.transaction() as conn:
        conn.execute(
            "DELETE FROM lookalike_accepts WHERE (person_id = ?1 AND other_id = ?2) "
            "OR (person_id = ?2 AND other_id = ?1)",
            (one.id, other.id),
        )
        if not undo:
            conn.execute(
                "INSERT INTO lookalike_accepts (person_id, other_id, by, created) VALUES (?, ?, ?, ?)",
                (*sorted((one.id, other.id)), by, now_iso()),
            )
    return one, other


def accepted_pairs(store: Store) -> set[frozenset[str]]:
    """The accepted pairs, each as the two people's names."""
    if not store.has_table("lookalike_accepts"):
        return set()
    rows = store.conn.execute(
        "SELECT a.name, b.name FROM lookalike_accepts "
        "JOIN people a ON a.id = person_id JOIN people b ON b.id = other_id"
    ).fetchall()
    return {frozenset(r) for r in rows}


def mark_accepted(found: list[LookAlike], pairs: set[frozenset[str]]) -> list[LookAlike]:
    """The pairs with ``accepted`` as ``pairs`` (from ``accepted_pairs``) says now."""
    return [replace(la, accepted=frozenset((la.person, la.taken_for)) in pairs) for la in found]


def describe(la: LookAlike) -> str:
    """One pair as a person reads it."""
    if la.named:
        what = f"{la.named} of {la.trials} photos named as them"
    else:
        what = f"not named ({la.trials} photos)"
    way = ", both ways" if la.both_ways else ""
    ok = "; accepted as two people" if la.accepted else ""
    return (
        f"{la.person} taken for {la.taken_for}: {what}; closest {la.distance:.2f} "
        f"(score {la.score:.3f}){way}{ok}"
    )


def summary(found: list[LookAlike], shown: int = 5) -> list[str]:
    """The lines ``train`` prints: the pairs behind the estimate first, then the closest."""
    if not found:
        return []
    named = sum(1 for la in found if la.named and not la.accepted)
    accepted = sum(1 for la in found if la.named and la.accepted)
    if named:
        head = (
            f"look-alikes: {named} pair(s) of enrolled people named as one another in the estimate, "
            "which also hold every threshold down (one person under two names? "
            "'facefleet people merge'; else add photos of both, or 'facefleet people accept-alike')"
        )
        if accepted:
            head += f"; {accepted} more accepted as two people"
    elif accepted:
        head = f"look-alikes: {accepted} pair(s) named as one another, all accepted as two people"
    else:
        head = "look-alikes: no enrolled person is named as another; the closest pairs"
    lines = [head]
    lines += ["  " + describe(la) for la in found[:shown]]
    if len(found) > shown:
        lines.append(f"  ... {len(found) - shown} more in 'facefleet models show'")
    return lines


def of_version(ws: Any, info: Any) -> list[LookAlike] | None:
    """The pairs a version's training run logged (``None``: the run logged none, e.g. it was
    trained before look-alikes were)."""
    from facefleet.registry.versions import run_json

    data = run_json(ws, info, ARTIFACT)
    if not isinstance(data, list):
        return None
    out = []
    for row in data:
        try:
            out.append(LookAlike.from_dict(row))
        except (TypeError, AttributeError):  # a row this version does not understand
            continue
    return out
