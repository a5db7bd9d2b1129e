"""The closed-set ranker: which enrolled person a face most resembles.

Owns the model search (SVC over kernel, C and gamma; nearest centroid; nearest gallery face)
and the export of the chosen model to the plain arrays a bundle carries.

The search is cheaper than a plain grid without giving up accuracy:

* RBF candidates whose ``gamma * max squared distance`` is tiny behave as a linear SVM with
  ``C' = 2 * gamma * C`` (first-order expansion of the kernel; the constant and the
  per-sample terms cancel under the SVM's sum(alpha * y) = 0 constraint), so they are scored
  as that linear candidate instead of as a slow, ill-conditioned RBF fit;
* successive halving (scikit-learn's HalvingGridSearchCV) scores every candidate on a small
  stratified subsample and only the best third on more data, round after round;
* folds run in parallel on ``n_jobs`` cores and no ``probability=True`` 5-fold Platt fit is
  done per candidate (the calibrated score comes from distances; see ``fit_temperature``);
* the nearest-centroid family is scored with the same folds and wins when it is better.

A person with fewer photos than two folds need makes cross-validation impossible: then the
gallery method ("nearest") decides, and the result says why.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facefleet.lifetime import loky_dies_with_parent

log = logging.getLogger(__name__)

LINEAR_REGIME = 0.01  # gamma * max squared distance below this: RBF == linear to first order


@dataclass
class SearchSpace:
    kernels: tuple[str, ...] = ("rbf", "linear")
    C: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
    gamma: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
    cv_folds: int = 5
    search: str = "halving"  # halving | grid
    n_jobs: int = 2
    seed: int = 0
    method: str = "auto"  # auto | svm | centroid | nearest


@dataclass
class Fitted:
    """The chosen ranker and how it was chosen."""

    method: str  # svm | centroid | nearest
    reason: str
    params: dict[str, Any]
    cv_score: float | None
    cv_folds: int
    candidates: int  # candidates scored (after pruning)
    pruned: int  # RBF candidates replaced by their linear equivalent
    seconds: float
    estimator: Any = None  # fitted sklearn SVC when method == "svm"
    scores: dict[str, float] = field(default_factory=dict)  # family -> best CV score


def squared_extent(X: np.ndarray, sample: int = 2000, seed: int = 0) -> float:
    """The largest squared distance between rows (on a sample of rows for large X)."""
    rng = np.random.default_rng(seed)
    Xs = X if len(X) <= sample else X[rng.choice(len(X), sample, replace=False)]
    Xs = np.asarray(Xs, dtype=np.float64)
    sq = (Xs * Xs).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * Xs @ Xs.T
    return float(max(d2.max(), 1e-12))


def plan_candidates(space: SearchSpace, extent: float) -> tuple[list[dict[str, Any]], int]:
    """The parameter grid, with linear-regime RBF candidates folded into linear ones.

    Returns (list of param dicts for GridSearch-style ``param_grid``, number pruned).
    """
    linear_C: set[float] = set()
    rbf_gammas: list[float] = []
    pruned = 0
    # below the grid's smallest C every dual variable sits at its bound and the decision
    # function only scales with C: such twins collapse onto the smallest C
    c_min = float(min(space.C))
    if "linear" in space.kernels:
        linear_C.update(float(c) for c in space.C)
    if "rbf" in space.kernels:
        for g in space.gamma:
            if g * extent < LINEAR_REGIME:
                # RBF(g, C) ~ linear(2 g C): score the linear twin instead
                linear_C.update(max(float(2.0 * g * c), c_min) for c in space.C)
                pruned += len(space.C)
            else:
                rbf_gammas.append(float(g))
    grid: list[dict[str, Any]] = []
    if linear_C:
        grid.append({"kernel": ["linear"], "C": sorted(linear_C)})
    if rbf_gammas:
        grid.append({"kernel": ["rbf"], "C": [float(c) for c in space.C], "gamma": rbf_gammas})
    return grid, pruned


def grid_size(grid: list[dict[str, Any]]) -> int:
    total = 0
    for g in grid:
        n = 1
        for v in g.values():
            n *= len(v)
        total += n
    return total


def _cv(y: np.ndarray, folds: int, seed: int):
    from sklearn.model_selection import StratifiedKFold

    return StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)


def centroid_cv_score(X: np.ndarray, y: np.ndarray, folds: int, seed: int) -> float:
    """Cross-validated accuracy of nearest centroid (Euclidean) with the given folds."""
    from facefleet.registry.inference import pairwise_distances

    correct = 0
    for tr, te in _cv(y, folds, seed).split(X, y):
        classes = np.unique(y[tr])
        cents = np.stack([X[tr][y[tr] == c].mean(0) for c in classes])
        pred = classes[np.argmin(pairwise_distances(X[te], cents), axis=1)]
        correct += int((pred == y[te]).sum())
    return correct / len(y)


def fit_classifier(X: np.ndarray, y: np.ndarray, space: SearchSpace) -> Fitted:
    """Choose and fit the ranker for embeddings ``X`` with integer labels ``y`` (0..K-1)."""
    t0 = time.perf_counter()
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    counts = np.bincount(y)
    n_classes = len(counts)
    smallest = int(counts.min())
    folds = min(space.cv_folds, smallest)
    if space.method == "nearest":
        return Fitted("nearest", "chosen in the configuration", {}, None, 0, 0, 0, time.perf_counter() - t0)
    if n_classes < 2 or folds < 2:
        why = (
            "only one person enrolled"
            if n_classes < 2
            else f"{int((counts < 2).sum())} person(s) have a single photo: no cross-validation "
            "possible, the gallery (nearest face) decides"
        )
        return Fitted("nearest", why, {}, None, 0, 0, 0, time.perf_counter() - t0)
    scores: dict[str, float] = {}
    if space.method in ("auto", "centroid"):
        scores["centroid"] = centroid_cv_score(X, y, folds, space.seed)
        if space.method == "centroid":
            return Fitted(
                "centroid",
                "chosen in the configuration",
                {},
                scores["centroid"],
                folds,
                1,
                0,
                time.perf_counter() - t0,
                scores=scores,
            )
    grid, pruned = plan_candidates(space, squared_extent(X, seed=space.seed))
    search = _search(X, y, grid, folds, space)
    scores["svm"] = float(search.best_score_)
    params = {
        k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in search.best_params_.items()
    }
    n_cand = grid_size(grid)
    if space.method == "auto" and scores.get("centroid", -1.0) > scores["svm"]:
        return Fitted(
            "centroid",
            f"nearest centroid scored {scores['centroid']:.4f} > SVM {scores['svm']:.4f}",
            {},
            scores["centroid"],
            folds,
            n_cand + 1,
            pruned,
            time.perf_counter() - t0,
            scores=scores,
        )
    est = search.best_estimator_
    reason = f"SVM {params} scored {scores['svm']:.4f} in {folds}-fold CV"
    if "centroid" in scores:
        reason += f" (nearest centroid {scores['centroid']:.4f})"
    return Fitted(
        "svm",
        reason,
        params,
        scores["svm"],
        folds,
        n_cand,
        pruned,
        time.perf_counter() - t0,
        estimator=est,
        scores=scores,
    )


def _search(X: np.ndarray, y: np.ndarray, grid: list[dict[str, Any]], folds: int, space: SearchSpace):
    from sklearn.svm import SVC

    base = SVC(class_weight="balanced", cache_size=500)
    cv = _cv(y, folds, space.seed)
    n_classes = len(np.unique(y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # "least populated class" notes
        # the first round's stratified subsample must still give the smallest class a
        # member per fold, and halving only pays when there is data to halve
        smallest = int(np.bincount(y).min())
        min_res = max(2 * n_classes * folds, -(-2 * folds * len(y) // smallest), 60)
        if space.search == "halving" and 3 * min_res <= len(y):
            from sklearn.experimental import enable_halving_search_cv  # noqa: F401
            from sklearn.model_selection import HalvingGridSearchCV

            search = HalvingGridSearchCV(
                base,
                grid,
                cv=cv,
                factor=3,
                resource="n_samples",
                min_resources=min_res,
                aggressive_elimination=True,
                n_jobs=space.n_jobs,
                random_state=space.seed,
                refit=True,
                error_score=0.0,
            )
        else:
            from sklearn.model_selection import GridSearchCV

            search = GridSearchCV(base, grid, cv=cv, n_jobs=space.n_jobs, refit=True, error_score=0.0)
        with loky_dies_with_parent():
            search.fit(X, y)
    return search


def svm_arrays(est) -> dict[str, np.ndarray]:
    """A fitted SVC (linear or RBF) as the bundle's ``svm_*`` arrays.

    libsvm's sign convention is kept: scikit-learn flips ``dual_coef_`` and ``intercept_``
    for two classes, so they are flipped back here.
    """
    kernel = est.kernel
    if kernel not in ("linear", "rbf"):
        raise ValueError(f"cannot export an SVC with kernel {kernel!r}")
    sign = -1.0 if len(est.classes_) == 2 else 1.0
    gamma = 0.0 if kernel == "linear" else float(est._gamma)
    return {
        "svm_support_vectors": np.asarray(est.support_vectors_, dtype=np.float64),
        "svm_dual_coef": sign * np.asarray(est.dual_coef_, dtype=np.float64),
        "svm_intercept": sign * np.asarray(est.intercept_, dtype=np.float64),
        "svm_n_support": np.asarray(est.n_support_, dtype=np.int64),
        "svm_classes": np.asarray(est.classes_, dtype=np.int64),
        "svm_gamma": np.asarray(gamma, dtype=np.float64),
    }


def cv_predictions(X: np.ndarray, y: np.ndarray, fitted: Fitted, seed: int = 0) -> np.ndarray:
    """Cross-validated predictions of the chosen ranker (for the classification report);
    leave-one-out nearest face for the gallery method."""
    from facefleet.registry.inference import pairwise_distances

    X = np.asarray(X, dtype=np.float64)
    if fitted.method == "nearest":
        D = pairwise_distances(X, X)
        np.fill_diagonal(D, np.inf)
        return y[np.argmin(D, axis=1)]
    if fitted.method == "centroid":
        pred = np.empty_like(y)
        for tr, te in _cv(y, fitted.cv_folds, seed).split(X, y):
            classes = np.unique(y[tr])
            cents = np.stack([X[tr][y[tr] == c].mean(0) for c in classes])
            pred[te] = classes[np.argmin(pairwise_distances(X[te], cents), axis=1)]
        return pred
    from sklearn.base import clone
    from sklearn.model_selection import cross_val_predict

    with warnings.catch_warnings(), loky_dies_with_parent():
        warnings.simplefilter("ignore", category=UserWarning)
        return cross_val_predict(clone(fitted.estimator), X, y, cv=_cv(y, fitted.cv_folds, seed), n_jobs=2)
