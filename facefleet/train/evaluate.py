"""Evaluation of a trained bundle on labelled test photos and on strangers.

``score_decisions`` is the pure part (decisions + truth -> metrics, per-person table,
confusion matrix, strangers-named / known-missed curve); ``evaluate`` embeds folders with the
workspace's face engine, scores, logs the run (metrics, JSON, plots) to MLflow and writes the
curve's plot to the workspace ``output/`` folder.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facefleet.errors import FacefleetError

if TYPE_CHECKING:  # pragma: no cover
    from facefleet.registry.inference import Bundle, Decision
    from facefleet.workspace import Workspace

log = logging.getLogger(__name__)
UNKNOWN = "unknown"


@dataclass
class PersonRow:
    name: str
    faces: int
    top1: int  # candidate was right (closed set)
    named: int  # accepted with the right name
    rejected: int  # said unknown
    wrong: int  # accepted as someone else


@dataclass
class EvalResult:
    metrics: dict[str, float]
    people: list[PersonRow]
    labels: list[str]  # confusion-matrix order: bundle labels + "unknown"
    confusion: list[list[int]]
    # one offset added to every person's threshold: offset, strangers_named, known_missed
    curve: dict[str, list[float]]
    counts: dict[str, int] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    plot: str | None = None  # where evaluate wrote the strangers-named / known-missed plot
    plots: str | None = None  # where the run's plots were logged

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def offset_curve(
    known: list[tuple[Decision, str]],
    unknown: list[Decision],
    thresholds: dict[str, float],
    offsets: np.ndarray,
) -> dict[str, list[float]]:
    """Strangers named and known faces missed when every threshold moves by each offset
    (``Decision.distance`` is the value each threshold is compared with; offset 0 is the
    model as it is, up to its centroid-distance cap)."""

    def margin(d: Decision) -> float:
        return float(thresholds.get(d.candidate, -np.inf)) - float(d.distance)

    km = np.array([margin(d) if d.candidate == t else -np.inf for d, t in known])
    um = np.array([margin(d) for d in unknown])
    named = [float((um >= -o).mean()) if len(um) else 0.0 for o in offsets]
    missed = [float((km < -o).mean()) if len(km) else 0.0 for o in offsets]
    return {"offset": [float(o) for o in offsets], "strangers_named": named, "known_missed": missed}


def score_decisions(
    known: list[Decision],
    truth: list[str],
    unknown: list[Decision],
    labels: list[str],
    thresholds: dict[str, float] | None = None,
) -> EvalResult:
    """Metrics of decisions on faces of enrolled people (``truth``) and strangers.

    Test faces whose person the model does not know count as strangers. ``thresholds`` (the
    model's) give the curve; without them it is empty.
    """
    label_set = set(labels)
    kd = [(d, t) for d, t in zip(known, truth, strict=True) if t in label_set]
    ud = list(unknown) + [d for d, t in zip(known, truth, strict=True) if t not in label_set]
    n_k, n_u = len(kd), len(ud)
    top1 = sum(d.candidate == t for d, t in kd)
    named = sum(d.name == t for d, t in kd)
    rejected = sum(d.name is None for d, _ in kd)
    wrong = n_k - named - rejected
    u_acc = sum(d.name is not None for d in ud)
    metrics = {
        "closed_set_accuracy": top1 / n_k if n_k else float("nan"),
        "known_false_reject_rate": rejected / n_k if n_k else float("nan"),
        "known_misidentification_rate": wrong / n_k if n_k else float("nan"),
        "unknown_false_accept_rate": u_acc / n_u if n_u else float("nan"),
        "open_set_accuracy": (named + n_u - u_acc) / (n_k + n_u) if n_k + n_u else float("nan"),
        "known_faces": float(n_k),
        "unknown_faces": float(n_u),
    }
    rows = []
    for person in sorted({t for _, t in kd}):
        mine = [d for d, t in kd if t == person]
        ok = sum(d.name == person for d in mine)
        rej = sum(d.name is None for d in mine)
        rows.append(
            PersonRow(
                person, len(mine), sum(d.candidate == person for d in mine), ok, rej, len(mine) - ok - rej
            )
        )
    order = list(labels) + [UNKNOWN]
    index = {n: i for i, n in enumerate(order)}
    cm = np.zeros((len(order), len(order)), dtype=np.int64)
    for d, t in kd:
        cm[index[t], index[d.name or UNKNOWN]] += 1
    for d in ud:
        cm[index[UNKNOWN], index[d.name or UNKNOWN]] += 1
    curve = (
        offset_curve(kd, ud, thresholds, np.round(np.linspace(-0.3, 0.3, 121), 6))
        if thresholds
        else {"offset": [], "strangers_named": [], "known_missed": []}
    )
    return EvalResult(
        metrics=metrics,
        people=rows,
        labels=order,
        confusion=cm.tolist(),
        curve=curve,
        counts={"known_faces": n_k, "unknown_faces": n_u},
    )


def embed_folder(
    ws: Workspace, folder: Path, *, labelled: bool, fallback: bool = True
) -> tuple[np.ndarray, list[str], dict[str, int]]:
    """Embeddings of the photos under ``folder``.

    ``labelled``: one sub-folder per person, the largest face of each photo is that person;
    otherwise every face of every photo is a stranger (name ""). Returns X, names, counts.
    """
    from facefleet.vision.batch import analyse_files
    from facefleet.vision.image import iter_image_files

    folder = Path(folder)
    if not folder.is_dir():
        raise FacefleetError(f"{folder}: no such folder")
    if labelled:
        people = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not people:
            raise FacefleetError(f"{folder}: expected one sub-folder of photos per person")
        items = [(p.name, f) for p in people for f in iter_image_files([p])]
    else:
        items = [("", f) for f in iter_image_files([folder])]
    X: list[np.ndarray] = []
    names: list[str] = []
    counts = {"photos": len(items), "no_face": 0, "unreadable": 0}
    analyses = analyse_files(
        [path for _, path in items],
        ws.vision_config(),
        fallback=fallback,
        engine=ws.engine(),
        desc=f"embed {folder.name}",
    )
    for (name, _), analysis in zip(items, analyses):
        if analysis.error:
            log.warning("%s", analysis.error)
            counts["unreadable"] += 1
            continue
        faces = [f for f in analysis.faces if f.embedding is not None]
        if not faces:
            counts["no_face"] += 1
            continue
        if labelled:
            faces = [max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))]
        for face in faces:
            X.append(np.asarray(face.embedding, dtype=np.float32))
            names.append(name)
    return np.array(X, dtype=np.float32).reshape(-1, 128), names, counts


def evaluate_bundle(
    bundle: Bundle, X: np.ndarray, truth: list[str], X_unknown: np.ndarray | None = None
) -> EvalResult:
    """Classify and score embeddings with a loaded bundle."""
    known = bundle.classify(X) if len(X) else []
    unknown = bundle.classify(X_unknown) if X_unknown is not None and len(X_unknown) else []
    result = score_decisions(known, truth, unknown, bundle.labels, bundle.thresholds)
    result.model = {
        "model": bundle.model,
        "version": bundle.version,
        "name": bundle.name,
        "method": bundle.method,
        "embedder_id": bundle.embedder_id,
    }
    return result


def evaluate(
    ws: Workspace,
    test_dir: Path,
    *,
    unknown_dir: Path | None = None,
    model: str | None = None,
    fallback: bool = True,
    log_to_mlflow: bool = True,
) -> EvalResult:
    """Evaluate the bundle ``model`` (a reference; default: @production, else @validated, else
    the newest, see ``registry.catalog.resolve_serving``) on a folder per person and an
    optional folder of strangers; logged as an MLflow run. ``model["chosen"]`` says why."""
    from facefleet.registry.catalog import resolve_serving
    from facefleet.registry.inference import load_bundle
    from facefleet.registry.keys import load_public_key, public_key_path
    from facefleet.train.pipeline import current_embedder_id

    embedder_id = current_embedder_id(ws)
    chosen = resolve_serving(ws, model)
    bundle = load_bundle(
        chosen.path, load_public_key(public_key_path(ws.keys_dir)), expected_embedder_id=embedder_id
    )
    X, truth, c1 = embed_folder(ws, test_dir, labelled=True, fallback=fallback)
    Xu, c2 = None, {}
    if unknown_dir is not None:
        Xu, _, c2 = embed_folder(ws, unknown_dir, labelled=False, fallback=fallback)
    result = evaluate_bundle(bundle, X, truth, Xu)
    result.model["chosen"] = chosen.reason
    result.counts.update({f"test_{k}": v for k, v in c1.items()})
    result.counts.update({f"unknown_{k}": v for k, v in c2.items()})
    if log_to_mlflow:
        result.run_id = log_evaluation(ws, result, test_dir=test_dir, unknown_dir=unknown_dir)
    result.plot = str(write_curve_plot(result, ws.output_dir))
    return result


def curve_png(result: EvalResult) -> bytes:
    """The strangers-named / known-missed plot of an evaluation, its operating point marked."""
    from facefleet.train.plots import strangers_missed_png

    m, c = result.metrics, result.curve
    missed = m["known_false_reject_rate"] + m["known_misidentification_rate"]
    return strangers_missed_png(
        c["known_missed"],
        c["strangers_named"],
        (missed, m["unknown_false_accept_rate"]),
        f"Test: {int(m['unknown_faces'])} strangers, {int(m['known_faces'])} known faces "
        "(every threshold moved together)",
    )


def write_curve_plot(result: EvalResult, folder: Path) -> Path:
    """``<folder>/evaluate-<name>-v<version>-strangers.png``, written atomically."""
    from facefleet.fileio import atomic_write_bytes

    m = result.model
    path = Path(folder) / f"evaluate-{m.get('name')}-v{m.get('version')}-strangers.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, curve_png(result))
    return path


def log_evaluation(
    ws: Workspace, result: EvalResult, *, test_dir: Path | None = None, unknown_dir: Path | None = None
) -> str:
    """One MLflow run: metrics, per-person table, confusion matrix and the strangers-named /
    known-missed plot; returns the run id and records where the plots went in ``result.plots``."""
    from facefleet.registry import tracking
    from facefleet.train.plots import confusion_png

    tracking.configure(ws)
    import mlflow

    m = result.model
    tags = {
        "facefleet.kind": "evaluate",
        "model_name": m.get("model"),
        "model_version": m.get("version"),
        "facefleet.name": m.get("name"),
    }
    with tracking.start_run(ws, run_name=f"evaluate-{m.get('name')}-v{m.get('version')}", tags=tags) as run:
        mlflow.log_params(
            {
                "model": m.get("model"),
                "version": m.get("version"),
                "name": m.get("name"),
                "method": m.get("method"),
                "test_dir": str(test_dir),
                "unknown_dir": str(unknown_dir),
            }
        )
        mlflow.log_metrics({k: v for k, v in result.metrics.items() if np.isfinite(v)})
        mlflow.log_dict(result.to_dict(), "evaluation.json")
        mlflow.log_text(format_table(result), "per_person.txt")
        cm = np.array(result.confusion)
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in (
                ("confusion_matrix.png", confusion_png(cm, result.labels)),
                ("strangers_vs_missed.png", curve_png(result)),
            ):
                (Path(tmp) / name).write_bytes(data)
                mlflow.log_artifact(str(Path(tmp) / name), "plots")
        result.plots = tracking.artifact_location(run.info.artifact_uri, "plots")
        return run.info.run_id


def format_table(result: EvalResult) -> str:
    """The metrics and the per-person table as plain text."""
    lines = [f"{k:32s} {v:.4f}" for k, v in result.metrics.items()]
    width = max([len(r.name) for r in result.people] + [6])
    lines += [
        "",
        f"{'person':{width}s} {'faces':>5s} {'top1':>5s} {'named':>5s} {'unknown':>7s} {'wrong':>5s}",
    ]
    for r in result.people:
        lines.append(f"{r.name:{width}s} {r.faces:5d} {r.top1:5d} {r.named:5d} {r.rejected:7d} {r.wrong:5d}")
    return "\n".join(lines)


def to_json(result: EvalResult) -> str:
    return json.dumps(result.to_dict(), indent=1, default=float)
