"""Look-alikes: the enrolled people the model takes, or nearly takes, for one another.

The training's stranger estimate plays each enrolled person as a stranger against all the
others (``train.thresholds``). The trials it counts as named are the false accepts behind the
figure, and the closest of the rest are what holds the threshold down for everybody. Both are
usually one of two things a person can act on: somebody enrolled twice under two names, or
two people the embedder finds alike (more photos of each, or accept it). This module picks
those pairs out, one row per (person, taken for), with a face of each to compare. ``train``,
``models show``, the training report and the console's version page show them; training logs
them with the run as :data:`ARTIFACT`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from facefleet.registry.inference import pairwise_distances
from facefleet.train.thresholds import Scores

ARTIFACT = "lookalikes.json"
ROWS = 10  # pairs kept besides the named ones: the closest of the rest


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


def describe(la: LookAlike) -> str:
    """One pair as a person reads it."""
    if la.named:
        what = f"{la.named} of {la.trials} photos named as them"
    else:
        what = f"not named ({la.trials} photos)"
    way = ", both ways" if la.both_ways else ""
    return (
        f"{la.person} taken for {la.taken_for}: {what}; closest {la.distance:.2f} (score {la.score:.3f}){way}"
    )


def summary(found: list[LookAlike], shown: int = 5) -> list[str]:
    """The lines ``train`` prints: the pairs behind the estimate first, then the closest."""
    if not found:
        return []
    named = sum(1 for la in found if la.named)
    if named:
        head = (
            f"look-alikes: {named} pair(s) of enrolled people named as one another in the estimate, "
            "which also hold every threshold down (one person under two names? merge them; "
            "else add photos of both, or accept)"
        )
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
