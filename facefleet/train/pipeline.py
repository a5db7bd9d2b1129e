"""A training run end to end: store -> model -> signed bundle -> MLflow run + model version.

Owns ``train`` (the library call behind ``facefleet train``); finding a trained bundle again
is ``facefleet.registry.catalog``. Heavy imports (scikit-learn, mlflow, matplotlib) happen
inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facefleet.clock import now_iso
from facefleet.errors import ModelError
from facefleet.registry.format import build_manifest, pack_bundle, write_bundle
from facefleet.registry.keys import ensure_keypair, load_private_key, private_key_path
from facefleet.registry.versions import BUNDLE_TAG, COMPLETE, PENDING
from facefleet.train.lookalikes import ARTIFACT as LOOKALIKES
from facefleet.train.lookalikes import LookAlike, accepted_pairs, mark_accepted, with_face_ids

if TYPE_CHECKING:  # pragma: no cover
    from facefleet.train.config import TrainConfig
    from facefleet.train.model import TrainedModel
    from facefleet.workspace import Workspace

log = logging.getLogger(__name__)

EXPERIMENTAL = "experimental"
OWNER_TAG = "facefleet.owner"  # host:pid of the training process


@dataclass
class TrainResult:
    run_id: str
    model: str
    version: int
    name: str
    method: str
    reason: str
    bundle_dir: Path
    tar_path: Path
    metrics: dict[str, float]
    thresholds: dict[str, float]
    plots: str | None = None  # where the run's plots were logged
    report: Path | None = None  # the executed report notebook (``--report``)
    lookalikes: list[LookAlike] = field(default_factory=list)  # faces as the store's face ids


def model_name(ws: Workspace, override: str | None = None) -> str:
    return override or ws.model_name


def current_embedder_id(ws: Workspace) -> str:
    """The id of the embedder this workspace computes vectors with."""
    try:
        return ws.engine().embedder.id
    except ImportError:  # pragma: no cover - engine not installed
        from facefleet.vision.embed import dlib_embedder_id

        return dlib_embedder_id()


def signing_key(ws: Workspace):
    """The workspace's private signing key; a pair is created on first use when there is none
    at all (an existing key is never replaced)."""
    path = private_key_path(ws.keys_dir)
    if not ws.public_key_path.exists() and ensure_keypair(ws.keys_dir):
        log.warning(
            "created a signing key pair in %s (devices need %s)", ws.keys_dir, ws.public_key_path.name
        )
    return load_private_key(path)


# -- training -------------------------------------------------------------------------------
def train(
    ws: Workspace,
    config: TrainConfig | None = None,
    *,
    report: bool = False,
    embedder_id: str | None = None,
    scheduler: str | None = None,
) -> TrainResult:
    """Train on the store's faces (statuses from the config) and publish a signed bundle.

    The model search runs here, or on the Dask cluster of ``scheduler`` / ``compute.scheduler``.
    """
    from facefleet.train.config import load_config

    config = config or load_config(workspace_train=ws.settings.train or None)
    embedder_id = embedder_id or current_embedder_id(ws)
    store = ws.open_store()
    try:
        ts = store.training_set(embedder_id, config.statuses)
        negatives = store.negative_set(embedder_id) if config.use_negatives else None
        strangers = store.stranger_set(embedder_id) if config.use_strangers else None
        accepted = accepted_pairs(store)
    finally:
        store.close()
    if len(ts.names) == 0:
        raise ModelError(
            f"no faces to train on (statuses {', '.join(config.statuses)}, embedder "
            f"{embedder_id}): enrol photos first with 'facefleet enrol'"
        )
    from facefleet import compute

    with compute.using(compute.for_workspace(ws, scheduler)):
        return train_arrays(
            ws,
            ts.X,
            list(ts.names),
            embedder_id=embedder_id,
            config=config,
            negatives=negatives,
            strangers=strangers,
            report=report,
            face_ids=ts.face_ids,
            accepted=accepted,
        )


def train_arrays(
    ws: Workspace,
    X: np.ndarray,
    names: list[str],
    *,
    embedder_id: str,
    config: TrainConfig,
    negatives: tuple[np.ndarray, list[str]] | None = None,
    strangers: np.ndarray | None = None,
    report: bool = False,
    face_ids: list[int] | None = None,
    accepted: set[frozenset[str]] | None = None,
) -> TrainResult:
    """Train on given embeddings and publish: MLflow run, model version, signed bundle
    (``face_ids``: the store's id of each face, for the look-alikes' faces; ``accepted``: the
    look-alike pairs accepted as two people, by name)."""
    from facefleet.progress import progress
    from facefleet.registry import tracking
    from facefleet.train.model import build_model

    key = signing_key(ws)  # fail before minutes of work, not after
    model = model_name(ws, config.model_name)
    steps = iter(progress(["fit", "publish"], total=2, desc="train"))
    next(steps)
    trained = build_model(X, names, config.search, config.open_set, negatives=negatives, strangers=strangers)
    trained.lookalikes = mark_accepted(with_face_ids(trained.lookalikes, face_ids), accepted or set())
    next(steps, None)
    human = config.name or f"train-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    client = tracking.configure(ws)
    clean_incomplete_versions(ws, client, model)
    import mlflow

    tags = {
        "facefleet.kind": "train",
        "facefleet.embedder_id": embedder_id,
        "facefleet.name": human,
        "facefleet.method": trained.fitted.method,
    }
    with tracking.start_run(ws, run_name=human, tags=tags) as run:
        run_id = run.info.run_id
        plots = tracking.artifact_location(run.info.artifact_uri, "plots")
        _log_training(mlflow, config, trained)
        version = _new_version(client, model, run.info.artifact_uri, run_id, human)
        try:
            manifest = build_manifest(
                model=model,
                version=version,
                name=human,
                embedder_id=embedder_id,
                labels=trained.labels,
                thresholds=trained.thresholds,
                method=trained.fitted.method,
                open_set=trained.open_set,
                metrics=trained.metrics,
                created=now_iso(zulu=True),
                run_id=run_id,
            )
            bundle_dir = write_bundle(
                ws.models_dir / model / str(version),
                manifest=manifest,
                arrays=trained.arrays,
                private_key=key,
                extra_files={"config.yaml": (config.source or config.to_yaml()).encode()},
            )
            tar_path = pack_bundle(bundle_dir, ws.models_dir / f"{model}.tar.gz")
            mlflow.log_artifacts(str(bundle_dir), "bundle")
            with tempfile.TemporaryDirectory() as tmp:
                named = Path(tmp) / f"{model}-{version}.tar.gz"
                shutil.copyfile(tar_path, named)
                mlflow.log_artifact(str(named), "packed")
            client.set_model_version_tag(model, str(version), "name", human)
            mlflow.set_tags({"model_name": model, "model_version": str(version)})
            client.set_model_version_tag(model, str(version), BUNDLE_TAG, COMPLETE)
        except BaseException:
            # no registry entry may point at a bundle that was never completed
            try:
                client.delete_model_version(model, str(version))
            except Exception:  # noqa: BLE001 - report the original failure
                log.warning("could not delete incomplete model version %s/%s", model, version)
            raise
    from facefleet.registry.versions import promote

    # through the audited move, so "rollback experimental" and versions.yaml know of it
    promote(ws, version, EXPERIMENTAL, why=f"trained {human}")
    result = TrainResult(
        run_id,
        model,
        version,
        human,
        trained.fitted.method,
        trained.fitted.reason,
        bundle_dir,
        tar_path,
        trained.metrics,
        trained.thresholds,
        plots=plots,
        lookalikes=trained.lookalikes,
    )
    if report:
        result.report = run_training_report(ws, result, config)
    return result


def run_training_report(ws: Workspace, result: TrainResult, config: TrainConfig) -> Path | None:
    """The registry engineer's papermill report, when that module is installed."""
    try:
        from facefleet.train.report import run_report
    except ImportError:
        log.warning("the training report is not available in this installation")
        return None
    return run_report(
        ws,
        result.run_id,
        {**config.params(), "model": result.model, "version": result.version, "name": result.name},
    )


def _new_version(client, model: str, artifact_uri: str, run_id: str, human: str) -> int:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(model)
    except MlflowException:
        try:
            client.create_registered_model(model, description="facefleet face recogniser")
        except MlflowException:  # created meanwhile by another run
            client.get_registered_model(model)
    # registered "pending" (the bundle needs the version number first); "complete" once the
    # bundle is written and logged. A run killed in between leaves a pending version that the
    # next train removes and that promote refuses.
    tags = {"name": human, BUNDLE_TAG: PENDING, OWNER_TAG: _owner()}
    mv = client.create_model_version(model, source=f"{artifact_uri}/bundle", run_id=run_id, tags=tags)
    return int(mv.version)


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str) -> bool:
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's run: only its own host can tell (treated as dead)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_incomplete_versions(ws: Workspace, client, model: str) -> list[int]:
    """Remove what killed training runs left: pending versions whose process is gone, their
    half-written bundle folders and hidden temporary folders. Returns the versions removed."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(f"name='{model}'")
    except MlflowException:
        return []
    removed = []
    for mv in found:
        tags = mv.tags or {}
        if tags.get(BUNDLE_TAG) != PENDING or _owner_alive(tags.get(OWNER_TAG, "")):
            continue
        try:
            client.delete_model_version(model, str(mv.version))
        except MlflowException as exc:
            log.warning("could not remove incomplete version %s/%s: %s", model, mv.version, exc)
            continue
        if mv.run_id:
            with contextlib.suppress(MlflowException):
                client.set_terminated(mv.run_id, "KILLED")
        folder = ws.models_dir / model
        shutil.rmtree(folder / str(mv.version), ignore_errors=True)
        for tmp in folder.glob(f".{mv.version}.*"):
            shutil.rmtree(tmp, ignore_errors=True)
        removed.append(int(mv.version))
        log.warning(
            "removed version %s of %s: its training was killed before the bundle was complete",
            mv.version,
            model,
        )
    for tmp in ws.models_dir.glob(f".{model}.tar.gz.tmp*"):
        pid = tmp.name.rpartition(".tmp")[2]
        if pid.isdigit() and not _owner_alive(f"{socket.gethostname()}:{pid}"):
            tmp.unlink(missing_ok=True)
    return removed


def _log_training(mlflow, config: TrainConfig, trained: TrainedModel) -> None:
    from sklearn.metrics import classification_report

    from facefleet.train.plots import strangers_missed_png
    from facefleet.train.thresholds import CALIBRATION_SOURCES

    f = trained.fitted
    params = {
        **config.params(),
        "chosen_method": f.method,
        "cv_folds_used": f.cv_folds,
        **{f"best_{k}": v for k, v in f.params.items()},
        "n_faces": trained.counts["faces"],
        "n_people": trained.counts["people"],
        "n_negatives": trained.counts["negatives"],
        "n_strangers": trained.counts["strangers"],
    }
    mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
    mlflow.log_metrics({k: float(v) for k, v in trained.metrics.items()})
    mlflow.set_tag("facefleet.method_reason", f.reason[:5000])
    mlflow.log_text(config.source or config.to_yaml(), "config/version.yaml")
    labels = trained.labels
    rep_kw = dict(labels=list(range(len(labels))), target_names=labels, zero_division=0)
    mlflow.log_text(
        classification_report(trained.y, trained.cv_pred, digits=4, **rep_kw), "classification_report.txt"
    )
    mlflow.log_dict(
        classification_report(trained.y, trained.cv_pred, output_dict=True, **rep_kw),
        "classification_report.json",
    )
    mlflow.log_dict(
        {"thresholds": trained.thresholds, "method": f.method, "reason": f.reason, "params": f.params},
        "thresholds.json",
    )
    fit = trained.open_fit
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "strangers_vs_missed_train.png"
        png.write_bytes(
            strangers_missed_png(
                fit.curve["known_missed"],
                fit.curve["strangers_named"],
                (fit.frr, fit.far.rate),
                f"Training estimate ({fit.far.trials} trials: {CALIBRATION_SOURCES[fit.calibrated_on]})",
                interval=(fit.far.low, fit.far.high),
            )
        )
        mlflow.log_artifact(str(png), "plots")
    mlflow.log_dict(fit.curve, "strangers_vs_missed_train.json")
    mlflow.log_dict([la.as_dict() for la in trained.lookalikes], LOOKALIKES)
