"""From labelled embeddings to a bundle's contents: ranker, open-set rule and thresholds,
temperature, metrics.

No I/O here: ``build_model`` takes arrays and returns the arrays, labels, thresholds and
figures a bundle and an MLflow run need.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from facefleet.registry.inference import pairwise_distances
from facefleet.train.classifier import Fitted, SearchSpace, cv_predictions, fit_classifier, svm_arrays
from facefleet.train.grouping import agglomerate
from facefleet.train.lookalikes import LookAlike, look_alikes
from facefleet.train.thresholds import (
    RULE,
    OpenSetFit,
    OpenSetParams,
    admitted,
    centroids,
    fewest_trials,
    fit_open_set,
    fit_temperature,
    loo_class_distances,
)


@dataclass
class TrainedModel:
    labels: list[str]
    arrays: dict[str, np.ndarray]
    thresholds: dict[str, float]
    fitted: Fitted
    open_fit: OpenSetFit
    open_set: dict[str, float | str]  # the manifest's rule and its parameters
    temperature: float
    metrics: dict[str, float]
    cv_pred: np.ndarray  # cross-validated label index per training face
    y: np.ndarray  # label index per training face
    counts: dict[str, int] = field(default_factory=dict)
    lookalikes: list[LookAlike] = field(default_factory=list)  # faces as training-set indices


def encode(names: list[str]) -> tuple[list[str], np.ndarray]:
    labels = sorted(set(names))
    index = {n: i for i, n in enumerate(labels)}
    return labels, np.array([index[n] for n in names], dtype=np.int64)


def build_model(
    X: np.ndarray,
    names: list[str],
    space: SearchSpace,
    open_set: OpenSetParams,
    negatives: tuple[np.ndarray, list[str]] | None = None,
    strangers: np.ndarray | None = None,
) -> TrainedModel:
    """Fit the ranker, the per-person thresholds and the score temperature."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or len(X) != len(names) or len(X) == 0:
        raise ValueError(f"need N x D embeddings and N names, got {X.shape} and {len(names)}")
    labels, y = encode(names)
    k = len(labels)
    fitted = fit_classifier(X, y, space)
    cents = centroids(X, y, k)
    neg = None
    if negatives is not None and len(negatives[0]):
        index = {n: i for i, n in enumerate(labels)}
        keep = [i for i, n in enumerate(negatives[1]) if n in index]
        if keep:
            nx = np.asarray(negatives[0], np.float32)[keep]
            neg = (pairwise_distances(nx, cents), np.array([index[negatives[1][i]] for i in keep]))
    sdist = (
        pairwise_distances(np.asarray(strangers, np.float32), cents)
        if strangers is not None and len(strangers)
        else np.zeros((0, k))
    )
    fit = fit_open_set(
        pairwise_distances(X, cents),
        y,
        open_set,
        strangers=sdist,
        negatives=neg,
        stranger_groups=agglomerate(strangers) if len(sdist) else None,
    )
    thr = fit.thresholds
    lookalikes = (
        look_alikes(X, y, labels, fit.gallery, fit.gallery_named, open_set.max_threshold)
        if fit.gallery is not None
        else []
    )
    temperature = fit_temperature(loo_class_distances(X, y, k), y)
    arrays: dict[str, np.ndarray] = {
        "gallery": X,
        "gallery_labels": y.astype(np.int32),
        "centroids": cents.astype(np.float32),
        "temperature": np.asarray(temperature, dtype=np.float64),
    }
    if fitted.method == "svm":
        arrays.update(svm_arrays(fitted.estimator))
    cv_pred = cv_predictions(X, y, fitted, seed=space.seed)
    metrics: dict[str, float] = {
        "target_far": open_set.target_far,
        "far": fit.far.rate,  # strangers named, estimated on the trials that set the threshold
        "far_low": fit.far.low,
        "far_high": fit.far.high,
        "far_trials": float(fit.far.trials),
        "far_effective_trials": fit.far.effective_trials,  # what the interval counts
        "frr": fit.frr,  # gallery faces (leave-one-out) not named correctly
        "genuine_trials": float(fit.genuine_trials),
        "system_threshold": fit.system_threshold,
        "threshold_mean": float(thr.mean()),
        "threshold_min": float(thr.min()),
        "threshold_max": float(thr.max()),
        "temperature": temperature,
        "n_faces": float(len(X)),
        "n_people": float(k),
        "search_seconds": fitted.seconds,
        "candidates": float(fitted.candidates),
        "candidates_pruned": float(fitted.pruned),
    }
    if fit.stranger_far is not None:
        metrics["stranger_far"] = fit.stranger_far.rate
        metrics["stranger_trials"] = float(fit.stranger_far.trials)
        metrics["stranger_people"] = float(fit.stranger_people)  # their faces grouped by person
        # share of the trials behind ``far`` that are reviewed strangers (1: they alone)
        metrics["far_reviewed_share"] = fit.stranger_far.trials / fit.far.trials
    if fit.gallery_far is not None:
        metrics["gallery_far"] = fit.gallery_far.rate  # enrolled people played as strangers
        metrics["gallery_trials"] = float(fit.gallery_far.trials)
    if np.bincount(y).max() >= 2:  # with one photo of everyone there is nothing to cross-validate
        metrics["cv_accuracy"] = float((cv_pred == y).mean())
    for fam, score in fitted.scores.items():
        metrics[f"cv_score_{fam}"] = score
    return TrainedModel(
        labels=labels,
        arrays=arrays,
        thresholds={lab: float(t) for lab, t in zip(labels, thr, strict=True)},
        fitted=fitted,
        open_fit=fit,
        open_set={
            "rule": RULE,
            "margin": open_set.margin,
            "far_distance": open_set.far_distance,
            "max_distance": open_set.max_threshold,
        },
        temperature=temperature,
        metrics=metrics,
        cv_pred=cv_pred,
        y=y,
        counts={
            "faces": len(X),
            "people": k,
            "negatives": 0 if neg is None else len(neg[1]),
            "strangers": len(sdist),
        },
        lookalikes=lookalikes,
    )


def far_line(m: dict) -> str:
    """The false-accept estimate as a person reads it, from a version's metrics, with what it
    rests on (``train``, ``models show``, the report and the console print it)."""
    if "far_trials" not in m:  # trained before the estimate existed
        return f"false accepts (per impostor pair, older estimate): {m.get('far', float('nan')):.4f}"
    trials = int(m["far_trials"])
    if "far_reviewed_share" in m:
        reviewed = round(trials * m["far_reviewed_share"])
    else:  # trained before the share was recorded: reviewed strangers were always pooled
        reviewed = int(m.get("stranger_trials", 0))
    faces = f"{reviewed} reviewed strangers"
    people = int(m.get("stranger_people", reviewed))  # older runs: each face its own person
    if people < reviewed:
        faces = f"{reviewed} faces of {people} reviewed strangers"
    if reviewed == trials:
        source = faces
    elif reviewed:
        source = f"{trials - reviewed} enrolled people's trials as strangers + {faces}"
    else:
        source = f"{trials} trials of enrolled people played as strangers"
    line = (
        f"strangers named (estimate): {100 * m['far']:.2f} % "
        f"(95 % interval {100 * m['far_low']:.2f}-{100 * m['far_high']:.2f} %, "
        f"{source}; target {100 * m['target_far']:.2f} %)"
    )
    if reviewed == trials and "gallery_far" in m:
        line += f"; enrolled people played as strangers named {100 * m['gallery_far']:.2f} %"
    if admitted(trials, m["target_far"]) < 0:
        line += f"; {trials} trials cannot promise the target: that needs {fewest_trials(m['target_far'])}"
        line += " (enrol more people or review strangers)"
    return line
