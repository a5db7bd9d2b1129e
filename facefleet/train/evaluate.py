"""Evaluation of a trained bundle on labelled test photos and on strangers.

``score_decisions`` is the pure part (decisions + truth -> metrics, per-person table,
confusion matrix, FAR/FRR curve); ``evaluate`` embeds folders with the workspace's face
engine, scores, and logs the run (metrics, JSON, plots) to MLflow.
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
    curve: dict[str, list[float]]  # threshold grid, far, frr for a global threshold
    counts: dict[str, int] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_decisions(
    known: list[Decision], truth: list[str], unknown: list[Decision], labels: list[str]
) -> EvalResult:
    """Metrics of decisions on faces of enrolled people (``truth``) and strangers.

    Test faces whose person the model does not know count as strangers.
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
    grid = np.linspace(0.0, 1.2, 121)
    kdist = np.array([d.distance if d.candidate == t else np.inf for d, t in kd])
    udist = np.array([d.distance for d in ud])
    frr = [(float((kdist > g).mean()) if n_k else 0.0) for g in grid]
    far = [(float((udist <= g).mean()) if n_u else 0.0) for g in grid]
    return EvalResult(
        metrics=metrics,
        people=rows,
        labels=order,
        confusion=cm.tolist(),
        curve={"threshold": grid.tolist(), "far": far, "frr": frr},
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
    result = score_decisions(known, truth, unknown, bundle.labels)
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
    """Evaluate the bundle ``model`` (a reference, see ``registry.catalog.resolve``) on a
    folder per person and an optional folder of strangers; logged as an MLflow run."""
    from facefleet.registry.catalog import bundle_path
    from facefleet.registry.inference import load_bundle
    from facefleet.registry.keys import load_public_key, public_key_path
    from facefleet.train.pipeline import current_embedder_id

    embedder_id = current_embedder_id(ws)
    path = bundle_path(ws, model)
    bundle = load_bundle(
        path, load_public_key(public_key_path(ws.keys_dir)), expected_embedder_id=embedder_id
    )
    X, truth, c1 = embed_folder(ws, test_dir, labelled=True, fallback=fallback)
    Xu, c2 = None, {}
    if unknown_dir is not None:
        Xu, _, c2 = embed_folder(ws, unknown_dir, labelled=False, fallback=fallback)
    result = evaluate_bundle(bundle, X, truth, Xu)
    result.counts.update({f"test_{k}": v for k, v in c1.items()})
    result.counts.update({f"unknown_{k}": v for k, v in c2.items()})
    if log_to_mlflow:
        result.run_id = log_evaluation(ws, result, test_dir=test_dir, unknown_dir=unknown_dir)
    return result


def log_evaluation(
    ws: Workspace, result: EvalResult, *, test_dir: Path | None = None, unknown_dir: Path | None = None
) -> str:
    """One MLflow run: metrics, per-person table, confusion matrix and FAR/FRR plots."""
    from facefleet.registry import tracking
    from facefleet.train.plots import confusion_png, far_frr_png

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
        c = result.curve
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in (
                ("confusion_matrix.png", confusion_png(cm, result.labels)),
                (
                    "far_frr.png",
                    far_frr_png(
                        np.array(c["threshold"]),
                        np.array(c["far"]),
                        np.array(c["frr"]),
                        (
                            result.metrics["unknown_false_accept_rate"],
                            result.metrics["known_false_reject_rate"],
                        ),
                        "Test: FAR (strangers) / FRR (known) vs a global threshold",
                    ),
                ),
            ):
                (Path(tmp) / name).write_bytes(data)
                mlflow.log_artifact(str(Path(tmp) / name), "plots")
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
