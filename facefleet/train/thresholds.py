"""Open-set maths: the stranger score, the system-level operating point, and the honest
false-accept estimate. All functions are pure numpy.

The score of a face for a candidate person is ``d(face, candidate centroid) - margin *
d(face, nearest other centroid)`` (the second distance capped at ``far_distance``): lower is
more confident. A stranger is typically about as far from the best person as from the
second best; an enrolled person is much closer to their own centroid. A face is named when
its candidate's score is within the candidate's threshold and its centroid distance within
``max_threshold``.

The thresholds come from one system-level target, "at most ``target_far`` of the strangers
named by the whole gallery": every enrolled person in turn plays the stranger against all the
others (leave-whole-person-out; the other people's centroids do not depend on them), and
faces reviewed as strangers join those trials. The threshold is the largest score at which a
new trial of the same population is named with probability at most ``target_far``
(:func:`admitted`: k of n trials, k = floor(target (n+1)) - 1). The reported estimate is
honest: each trial is decided by a threshold calibrated without that trial's person, and its
Wilson interval counts the trials of one person as correlated (:func:`effective_trials`).

The gallery's trials predict strangers drawn from the same population as the enrolled people
(lfw_dev people held out whole, ORL); strangers who look less alike than the enrolled people
do among themselves are named less often than estimated, and strangers who look more alike
more often (``bench/bench_open_set_rules.py``). Strangers the cameras saw, once reviewed, are
the population itself: from :data:`MIN_ADMITTED_STRANGERS` admitted of them (499 at 1 %)
they set the threshold and the estimate alone, and the gallery's trials are only reported. A
stranger's faces are one group (``train.grouping``): each is judged without the others, and
the interval counts the person once.
Faces labelled "not <person>" then lower that one person's threshold below their score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from facefleet.registry.inference import MARGIN_RULE as RULE
from facefleet.registry.inference import margin_score, pairwise_distances


@dataclass(frozen=True)
class OpenSetParams:
    # Share of strangers the whole system may name (see bench/bench_lfw_open_set.py and the
    # README for what it does on lfw_dev and ORL).
    target_far: float = 0.01
    # Weight of the second-best centroid distance in the score (0 = plain distance). At a
    # calibrated 1 % (bench/bench_open_set_rules.py) 0.6 named 1.5-2.4 points more known
    # lfw_dev faces than 0.5 whether the first or the last 3 photos were enrolled; ORL alike.
    margin: float = 0.6
    far_distance: float = 1.0  # a second-best centroid further than this counts as this far
    max_threshold: float = 0.6  # never name a face further than this from the centroid


@dataclass(frozen=True)
class Scores:
    """Per face: the candidate (class index), its score and its centroid distance."""

    candidate: np.ndarray
    score: np.ndarray
    distance: np.ndarray


def centroids(X: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """K x D class means (every class needs a face)."""
    X = np.asarray(X, dtype=np.float64)
    counts = np.bincount(y, minlength=n_classes)
    if np.any(counts == 0):
        raise ValueError("every class needs at least one face")
    out = np.zeros((n_classes, X.shape[1]))
    np.add.at(out, y, X)
    return out / counts[:, None]


def margin_scores(dist: np.ndarray, params: OpenSetParams, candidate: np.ndarray | None = None) -> Scores:
    """Scores from N x K centroid distances (``inf`` = class not available to that face);
    the candidate is the nearest centroid unless given (e.g. the SVM's choice)."""
    dist = np.asarray(dist, dtype=np.float64)
    cand = np.argmin(dist, axis=1) if candidate is None else np.asarray(candidate, dtype=np.int64)
    score, d1 = margin_score(dist, cand, params.margin, params.far_distance)
    return Scores(cand, score, d1)


def class_scores(dist: np.ndarray, params: OpenSetParams) -> np.ndarray:
    """N x K: the score each face would have with each class as its candidate."""
    dist = np.asarray(dist, dtype=np.float64)
    if dist.shape[1] < 2:
        return dist - params.margin * params.far_distance
    two = np.sort(dist, axis=1)[:, :2]
    other = np.where(dist <= two[:, :1], two[:, 1:2], two[:, :1])
    return dist - params.margin * np.minimum(other, params.far_distance)


def stranger_trials(dist: np.ndarray, y: np.ndarray, params: OpenSetParams) -> Scores:
    """Each gallery face as a stranger: its own class removed from its centroid distances."""
    d = np.array(dist, dtype=np.float64)
    d[np.arange(len(d)), y] = np.inf
    return margin_scores(d, params)


def genuine_trials(dist: np.ndarray, y: np.ndarray, params: OpenSetParams) -> tuple[Scores, np.ndarray]:
    """Each gallery face as a new photo of its person (people with 2+ faces; returns the
    scores and which faces take part).

    The face's distance to the mean of its n - 1 siblings is ``n / (n - 1)`` times its distance
    to the mean of all n. A held-out photo sits further from a mean of n - 1 photos than a new
    photo from the mean of n (expected squared distances ``s2 (1 + 1 / (n - 1))`` against
    ``s2 (1 + 1 / n)`` for a spread ``s2`` around the person's true mean), so the distance is
    rescaled by the square root of their ratio; on lfw_dev (3 photos a person) that brought
    the estimate of known faces missed from 18 % to 11 % against 12 % measured.
    """
    d = np.array(dist, dtype=np.float64)
    n = np.bincount(y)[y].astype(np.float64)
    ok = n >= 2
    rows = np.arange(len(d))[ok]
    m = n[ok]
    d[rows, y[ok]] *= m / (m - 1.0) * np.sqrt((1.0 + 1.0 / m) / (1.0 + 1.0 / (m - 1.0)))
    return margin_scores(d[ok], params), ok


def admitted(n: int, target: float) -> int:
    """How many of ``n`` calibration trials a threshold may admit so that a new trial from
    the same population is named with probability at most ``target``.

    A threshold just below the (k+1)-th smallest of n scores names a new score with
    probability (k+1) / (n+1) (its rank among the n+1 is uniform), so k = floor(target (n+1)) - 1,
    one fewer than ``target`` of the trials would suggest: with 500 trials at 1 % that is 4, not 5
    (1.2 % of new strangers named). -1 (fewer than 1 / target - 1 trials): no threshold can
    promise the target, and ``calibrate`` admits none of the trials.
    """
    return int(math.floor(target * (n + 1) + 1e-9)) - 1


def calibrate(scores: np.ndarray, target: float) -> float:
    """The largest threshold (``score <= t`` names) that names a new trial from the trials'
    population with probability at most ``target`` (:func:`admitted`)."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    if len(s) == 0:
        return math.inf
    k = admitted(len(s), target)
    if k < 0:
        return float(np.nextafter(s[0], -np.inf))
    return float(np.nextafter(s[k], -np.inf)) if k < len(s) else math.inf


def leave_group_out_thresholds(scores: np.ndarray, groups: np.ndarray, target: float) -> np.ndarray:
    """Per trial: the threshold ``calibrate`` would give, at the rank it gives on all trials,
    over all trials except those of the trial's own group (its person), computed without
    refitting from scratch (one sort, then a walk past the group's own positions).

    The rank is the full fit's (:func:`admitted` of all n trials) so that each trial meets the
    threshold the model ships, only without its own person's scores; the rank of n - 1 trials
    would be one lower whenever target (n+1) is a whole number (at 499 trials and 1 %: an
    estimate of 0.80 % for a threshold naming 1.0 % of new strangers)."""
    s = np.asarray(scores, dtype=np.float64)
    groups = np.asarray(groups)
    order = np.argsort(s, kind="stable")
    ss = s[order]
    pos = np.empty(len(s), dtype=np.int64)
    pos[order] = np.arange(len(s))
    out = np.empty(len(s))
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [[] for _ in uniq]
    for i, g in enumerate(inverse):
        members[g].append(pos[i])
    k = max(admitted(len(s), target), 0)
    for g, own in enumerate(members):
        own.sort()
        rest = len(s) - len(own)
        if rest == 0 or k >= rest:
            t = math.inf
        else:
            j = k  # index in the full order of the (k+1)-th smallest remaining score
            for p in own:
                if p <= j:
                    j += 1
            t = float(np.nextafter(ss[j], -np.inf))
        out[inverse == g] = t
    return out


@dataclass(frozen=True)
class Estimate:
    """Share of strangers named, estimated without the strangers' own data."""

    rate: float
    low: float  # Wilson 95 % interval on the effective number of trials
    high: float
    named: int
    trials: int
    effective_trials: float  # trials discounted for the correlation within a person's trials


def wilson(named: float, trials: float, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (effective counts may be fractional)."""
    if trials == 0:
        return 0.0, 1.0
    p = named / trials
    den = 1.0 + z * z / trials
    mid = (p + z * z / (2 * trials)) / den
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def effective_trials(named: np.ndarray, groups: np.ndarray | None = None) -> float:
    """The number of independent trials ``named`` is worth when trials of one group (person)
    succeed or fail together: ``n`` divided by the design effect of cluster sampling (the
    between-group variance of the rate against the binomial one), never more than ``n``.

    A person with a look-alike enrolled has all their photos named at once; on lfw_dev
    (3 trials a person) that made 1,303 trials worth about 860.
    """
    named = np.asarray(named, dtype=np.float64)
    n = len(named)
    if groups is None or n == 0:
        return float(n)
    p = named.mean()
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    g = int(inverse.max()) + 1
    if g < 2 or p in (0.0, 1.0):
        return float(n)
    k = np.bincount(inverse, weights=named, minlength=g)
    m = np.bincount(inverse, minlength=g)
    var = g / (g - 1.0) * float(((k - p * m) ** 2).sum()) / (n * n)
    return float(n) if var <= 0 else float(min(n, p * (1.0 - p) / var))


def estimate(named: np.ndarray, groups: np.ndarray | None = None) -> Estimate:
    """The rate of ``named`` with its interval (``groups``: the person behind each trial)."""
    named = np.asarray(named, dtype=bool)
    k, n = int(named.sum()), len(named)
    n_eff = effective_trials(named, groups)
    low, high = wilson(k / n * n_eff if n else 0, n_eff)
    return Estimate(k / n if n else 0.0, low, high, k, n, n_eff)


# Reviewed strangers alone set the operating point once the threshold may admit this many of
# them (499 at a target of 1 %, 99 at 5 %): fewer, and one stranger more or less moves it a lot.
MIN_ADMITTED_STRANGERS = 4
CALIBRATION_SOURCES = {
    "gallery": "enrolled people played as strangers",
    "gallery+strangers": "enrolled people played as strangers and reviewed strangers",
    "strangers": "reviewed strangers",
}


def strangers_take_over(n_strangers: int, target: float) -> bool:
    """Whether ``n_strangers`` faces reviewed as strangers are enough to calibrate on alone."""
    return admitted(n_strangers, target) >= MIN_ADMITTED_STRANGERS


def fewest_trials(target: float, k: int = 0) -> int:
    """The fewest trials at which the threshold may admit ``k`` of them (:func:`admitted`)."""
    n = max(0, math.ceil((k + 1) / target) - 2)  # the closed form, less one for rounding
    while admitted(n, target) < k:
        n += 1
    return n


def strangers_needed(target: float) -> int:
    """The fewest reviewed strangers that calibrate on their own at ``target``."""
    return fewest_trials(target, MIN_ADMITTED_STRANGERS)


@dataclass
class OpenSetFit:
    thresholds: np.ndarray  # K per-person thresholds on the score
    system_threshold: float  # before negatives lowered single people's thresholds
    far: Estimate  # strangers named, from the trials that set the threshold
    calibrated_on: str  # "gallery", "gallery+strangers" or "strangers" (reviewed strangers)
    gallery_far: Estimate | None  # enrolled people played as strangers (leave-whole-person-out)
    stranger_far: Estimate | None  # the reviewed strangers alone
    stranger_people: int  # how many different people the reviewed strangers are
    frr: float  # gallery faces (leave-one-out) not named correctly
    genuine_trials: int
    curve: dict[str, list[float]]  # threshold, strangers named, known missed
    gallery: Scores | None = None  # each gallery face as a stranger (its own person removed)
    gallery_named: np.ndarray | None = None  # ... and whether the estimate counts it named


def fit_open_set(
    dist: np.ndarray,
    y: np.ndarray,
    params: OpenSetParams,
    strangers: np.ndarray | None = None,
    negatives: tuple[np.ndarray, np.ndarray] | None = None,
    stranger_groups: np.ndarray | None = None,
) -> OpenSetFit:
    """Per-person thresholds for the system target, and what they do to strangers.

    ``dist``: N x K centroid distances of the gallery faces (``y`` their classes);
    ``strangers``: Ns x K centroid distances of faces reviewed as nobody enrolled;
    ``negatives``: (Nn x K centroid distances, Nn classes the faces are *not*);
    ``stranger_groups``: per reviewed stranger face, the person it is (``train.grouping``;
    ``None``: each face a different person). A person's faces are one group in the estimate
    and its interval: a regular's capture judged against a threshold that saw their other
    captures says little about the next regular.

    The gallery's own trials stand in for strangers until enough reviewed ones exist
    (:func:`strangers_take_over`): those are the strangers the cameras really see, while the
    gallery's trials predict strangers who look like the enrolled people among themselves
    (on lfw_dev up to five times as often named as the people of its strangers folder).
    """
    dist = np.asarray(dist, dtype=np.float64)
    y = np.asarray(y)
    n, k = dist.shape
    gal = stranger_trials(dist, y, params) if k > 1 else Scores(*(np.zeros(0),) * 3)
    st = margin_scores(strangers, params) if strangers is not None and len(strangers) else None
    n_s = 0 if st is None else len(st.score)
    n_g = len(gal.score)
    if stranger_groups is None or n_s == 0:
        sg = np.arange(n_s)
    else:
        sg = np.unique(np.asarray(stranger_groups), return_inverse=True)[1].reshape(-1)
        if len(sg) != n_s:
            raise ValueError(f"{len(sg)} stranger groups for {n_s} reviewed strangers")
    people = int(sg.max()) + 1 if n_s else 0
    # counted in faces, as the threshold's rank is: counted in people, a few regulars would
    # join the gallery's trials, which say little about them (names far more of them)
    takeover = strangers_take_over(n_s, params.target_far)
    parts = [("gallery", gal, y[:n_g])] if not takeover else []
    if st is not None:
        parts.append(("strangers", st, k + sg))  # group ids after the enrolled people's
    calibrated_on = "+".join(name for name, _, _ in parts)  # never empty: takeover needs strangers

    def effective(sc: Scores) -> np.ndarray:  # never named, whatever the threshold, if too far
        return np.where(sc.distance > params.max_threshold, np.inf, sc.score)

    s_eff = np.concatenate([effective(sc) for _, sc, _ in parts])
    c = np.concatenate([sc.candidate for _, sc, _ in parts]).astype(np.int64)
    g = np.concatenate([grp for _, _, grp in parts])
    # no score of a face within max_threshold of its centroid exceeds max_threshold
    system = min(calibrate(s_eff, params.target_far), params.max_threshold)
    below = np.full(k, np.inf)  # per person: just below their "not this person" faces
    if negatives is not None and len(negatives[0]):
        ns = class_scores(negatives[0], params)
        for row, q in enumerate(np.asarray(negatives[1], dtype=np.int64)):
            below[q] = min(below[q], float(np.nextafter(ns[row, q], -np.inf)))
    thr = np.minimum(system, below)
    if len(s_eff):
        # each trial against thresholds calibrated without its own person's trials
        own = leave_group_out_thresholds(s_eff, g, params.target_far)
        named = s_eff <= np.minimum(own, below[c])
    else:
        named = np.zeros(0, dtype=bool)
    # calibrated on reviewed strangers alone, the threshold never saw the gallery's trials
    gal_named = effective(gal) <= thr[gal.candidate.astype(np.int64)] if takeover else named[:n_g]
    gen, ok = genuine_trials(dist, y, params)
    yg = y[ok]
    correct = (gen.candidate == yg) & (gen.score <= thr[yg]) & (gen.distance <= params.max_threshold)
    frr = float(1.0 - correct.mean()) if len(correct) else 0.0
    # the curve: one threshold for everybody, swept
    grid = np.unique(np.concatenate([np.linspace(-0.3, 0.7, 101), [system]]))
    sn = [(float((s_eff <= t).mean()) if len(s_eff) else 0.0) for t in grid]
    own_near = (gen.candidate == yg) & (gen.distance <= params.max_threshold)
    gm = [(float(1.0 - (own_near & (gen.score <= t)).mean()) if len(yg) else 0.0) for t in grid]
    return OpenSetFit(
        thresholds=thr,
        system_threshold=system,
        far=estimate(named, g),
        calibrated_on=calibrated_on,
        gallery_far=estimate(gal_named, y[:n_g]) if n_g else None,
        stranger_far=estimate(named[len(s_eff) - n_s :], sg) if n_s else None,
        stranger_people=people,
        frr=frr,
        genuine_trials=int(ok.sum()),
        curve={"threshold": grid.tolist(), "strangers_named": sn, "known_missed": gm},
        gallery=gal if n_g else None,
        gallery_named=gal_named if n_g else None,
    )


def class_distances(
    X: np.ndarray, gallery: np.ndarray, gallery_y: np.ndarray, n_classes: int, chunk: int = 1024
) -> np.ndarray:
    """N x K: distance from each row of ``X`` to each class's nearest gallery face."""
    if len(X) == 0:
        return np.zeros((0, n_classes))
    order = np.argsort(gallery_y, kind="stable")
    G, gy = np.asarray(gallery, np.float64)[order], np.asarray(gallery_y)[order]
    starts = np.searchsorted(gy, np.arange(n_classes))
    out = np.empty((len(X), n_classes), dtype=np.float64)
    for a in range(0, len(X), chunk):
        out[a : a + chunk] = np.minimum.reduceat(pairwise_distances(X[a : a + chunk], G), starts, axis=1)
    return out


def loo_class_distances(X: np.ndarray, y: np.ndarray, n_classes: int, chunk: int = 1024) -> np.ndarray:
    """N x K: for each face, the distance to each class's nearest *other* gallery face
    (the face itself excluded; ``inf`` when its class has no other face)."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    order = np.argsort(y, kind="stable")
    Xs, ys = X[order], y[order]
    starts = np.searchsorted(ys, np.arange(n_classes))
    if np.any(np.bincount(ys, minlength=n_classes) == 0):
        raise ValueError("every class needs at least one face")
    pos = np.empty(len(y), dtype=np.int64)
    pos[order] = np.arange(len(y))
    out = np.empty((len(X), n_classes), dtype=np.float64)
    for a in range(0, len(X), chunk):
        D = pairwise_distances(X[a : a + chunk], Xs)
        D[np.arange(len(D)), pos[a : a + chunk]] = np.inf
        out[a : a + chunk] = np.minimum.reduceat(D, starts, axis=1)
    return out


def fit_temperature(dist: np.ndarray, y: np.ndarray) -> float:
    """The temperature T minimising the log-loss of ``softmax(-dist / T)`` against ``y``
    (dist: N x K class distances, rows with an infinite true-class distance ignored);
    golden-section search on log T."""
    dist = np.asarray(dist, dtype=np.float64)
    rows = np.isfinite(dist[np.arange(len(y)), y])
    if rows.sum() == 0 or dist.shape[1] < 2:
        return 0.1
    d = np.where(np.isfinite(dist[rows]), dist[rows], 1e3)
    yy = np.asarray(y)[rows]

    def nll(log_t: float) -> float:
        z = -d / np.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1))
        return float((lse - z[np.arange(len(yy)), yy]).mean())

    # bounded below: on separable training data the unbounded optimum is T -> 0 (certainty)
    a, b = np.log(0.02), np.log(2.0)
    phi = (np.sqrt(5.0) - 1.0) / 2.0
    c, e = b - phi * (b - a), a + phi * (b - a)
    fc, fe = nll(c), nll(e)
    for _ in range(60):
        if fc < fe:
            b, e, fe = e, c, fc
            c = b - phi * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, e, fe
            e = a + phi * (b - a)
            fe = nll(e)
    return float(np.exp(0.5 * (a + b)))


__all__ = [
    "RULE",
    "Estimate",
    "OpenSetFit",
    "OpenSetParams",
    "Scores",
    "calibrate",
    "centroids",
    "class_distances",
    "class_scores",
    "effective_trials",
    "estimate",
    "fit_open_set",
    "fit_temperature",
    "genuine_trials",
    "leave_group_out_thresholds",
    "loo_class_distances",
    "margin_scores",
    "pairwise_distances",
    "stranger_trials",
    "wilson",
]
