"""Open-set maths: per-person distance thresholds, FAR/FRR, and the score temperature.

The classifier ranks; the distance to the candidate's nearest gallery face decides. Each
person's threshold sits between their genuine distances (leave-one-out: each photo against
the person's other photos) and their impostor distances (other people's faces, faces labelled
"not this person", reviewed strangers), with the impostor side taking priority: the threshold
never admits more than ``target_far`` of the impostors, and never exceeds a global cap.
All functions are pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facefleet.registry.inference import pairwise_distances


@dataclass(frozen=True)
class OpenSetParams:
    # Largest share of impostor distances one person's threshold may admit. A stranger is
    # falsely named when *any* enrolled person admits them, so the per-person rate must sit
    # well under the system target (<= 1 % of strangers): on five_celebrity + ORL (25 people,
    # 216 strangers, bench/bench_open_set.py) 0.01 gave 1.9 % stranger FAR, 0.002 gave 0.5 %,
    # both with no known face rejected.
    target_far: float = 0.002
    target_frr: float = 0.05  # genuine quantile the threshold aims to keep inside
    max_threshold: float = 0.6  # global cap (the classic dlib distance)
    min_threshold: float = 0.3  # floor: below this nobody is ever recognised


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


def choose_threshold(
    genuine: np.ndarray,
    impostor: np.ndarray,
    params: OpenSetParams,
    fallback_genuine: float | None = None,
) -> float:
    """One person's threshold.

    ``i`` = the ``target_far`` lower quantile of impostor distances (the largest threshold
    admitting at most that share), ``g`` = the ``1 - target_frr`` quantile of genuine
    distances (``fallback_genuine`` when the person has a single photo). When they are
    separated, the threshold is their midpoint (margin on both sides for faces not seen in
    training); when they overlap, impostors win: ``i``. Clipped to [min, max].
    """
    genuine = np.asarray(genuine, dtype=np.float64)
    genuine = genuine[np.isfinite(genuine)]
    impostor = np.asarray(impostor, dtype=np.float64)
    impostor = impostor[np.isfinite(impostor)]
    cap = params.max_threshold
    i = float(np.quantile(impostor, params.target_far, method="lower")) if len(impostor) else cap
    if len(genuine):
        g = float(np.quantile(genuine, 1.0 - params.target_frr, method="higher"))
    else:
        g = fallback_genuine if fallback_genuine is not None else min(i, cap)
    t = 0.5 * (g + i) if g < i else i
    # a hair below an impostor distance: "distance <= threshold" must not admit it
    t = np.nextafter(t, -np.inf) if t == i and len(impostor) else t
    return float(np.clip(t, params.min_threshold, cap))


def fit_thresholds(
    loo: np.ndarray,
    y: np.ndarray,
    params: OpenSetParams,
    negatives: tuple[np.ndarray, np.ndarray] | None = None,
    strangers: np.ndarray | None = None,
) -> np.ndarray:
    """Per-class thresholds (K floats).

    ``loo``: N x K leave-one-out class distances of the training faces (``y`` their labels);
    ``negatives``: (Nn x K class distances, Nn class indices the faces are *not*);
    ``strangers``: Ns x K class distances of faces reviewed as nobody enrolled.
    """
    n, k = loo.shape
    genuine_all = loo[np.arange(n), y]
    finite = genuine_all[np.isfinite(genuine_all)]
    pooled = float(np.quantile(finite, 1.0 - params.target_frr, method="higher")) if len(finite) else None
    out = np.empty(k, dtype=np.float64)
    for p in range(k):
        imp = [loo[y != p, p]]
        if negatives is not None and len(negatives[0]):
            imp.append(negatives[0][negatives[1] == p, p])
        if strangers is not None and len(strangers):
            imp.append(strangers[:, p])
        out[p] = choose_threshold(loo[y == p, p], np.concatenate(imp), params, pooled)
    return out


@dataclass(frozen=True)
class OperatingPoint:
    far: float  # impostor trials (face, other person) accepted as that person
    frr: float  # genuine faces (leave-one-out) rejected by their own person's threshold
    stranger_far: float | None  # reviewed strangers accepted as anyone
    genuine_trials: int
    impostor_trials: int


def operating_point(
    loo: np.ndarray,
    y: np.ndarray,
    thresholds: np.ndarray,
    strangers: np.ndarray | None = None,
) -> OperatingPoint:
    """FAR and FRR of per-person ``thresholds`` on leave-one-out training distances."""
    n, k = loo.shape
    genuine = loo[np.arange(n), y]
    ok = np.isfinite(genuine)
    frr = float((genuine[ok] > thresholds[y[ok]]).mean()) if ok.any() else 0.0
    mask = np.ones_like(loo, dtype=bool)
    mask[np.arange(n), y] = False
    accepted = loo <= thresholds[None, :]
    far = float(accepted[mask].mean()) if mask.any() else 0.0
    sfar = None
    if strangers is not None and len(strangers):
        sfar = float((strangers <= thresholds[None, :]).any(axis=1).mean())
    return OperatingPoint(far, frr, sfar, int(ok.sum()), int(mask.sum()))


def far_frr_curve(
    genuine: np.ndarray, impostor: np.ndarray, grid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """FAR(t) = share of impostor distances <= t; FRR(t) = share of genuine distances > t."""
    genuine = np.sort(np.asarray(genuine, np.float64)[np.isfinite(genuine)])
    impostor = np.sort(np.asarray(impostor, np.float64)[np.isfinite(impostor)])
    far = np.searchsorted(impostor, grid, side="right") / max(len(impostor), 1)
    frr = 1.0 - np.searchsorted(genuine, grid, side="right") / max(len(genuine), 1)
    return far, frr


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
    "OpenSetParams",
    "OperatingPoint",
    "choose_threshold",
    "class_distances",
    "far_frr_curve",
    "fit_temperature",
    "fit_thresholds",
    "loo_class_distances",
    "operating_point",
    "pairwise_distances",
]
