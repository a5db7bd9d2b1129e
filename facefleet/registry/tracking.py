"""MLflow tracking set-up for a workspace: tracking URI, experiment, runs.

Owns where runs and artifacts go: the workspace's ``mlflow.db`` (or the configured tracking
server) and ``artifacts/`` in the workspace, never ``./mlruns`` of the current folder.
mlflow is imported lazily: it costs seconds and the edge must never import it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facefleet.errors import FacefleetError

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import ActiveRun
    from mlflow.tracking import MlflowClient

    from facefleet.workspace import Workspace


def _mlflow():
    """Import mlflow with telemetry off, or raise a clear error when it isn't installed."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        import mlflow
    except ImportError as exc:
        raise FacefleetError(f"mlflow is not installed (pip install 'facefleet[server]'): {exc}") from None
    return mlflow


def configure(ws: Workspace) -> MlflowClient:
    """Point mlflow at the workspace's tracking store and return a client for it."""
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    mlflow = _mlflow()
    from mlflow.tracking import MlflowClient

    uri = ws.tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def has_tracking_store(ws: Workspace) -> bool:
    """Whether there can be runs to read: a tracking server, or an SQLite file that exists.
    Asking MLflow about a missing SQLite file would create it (and take seconds)."""
    uri = ws.tracking_uri
    if not uri.startswith("sqlite:///"):
        return True
    return Path(uri[len("sqlite:///") :]).is_file()


def experiment_name(ws: Workspace, name: str | None = None) -> str:
    """The experiment name: ``name`` or the config's ``mlflow.experiment``."""
    return name or ws.settings.mlflow.experiment


def ensure_experiment(ws: Workspace, name: str | None = None) -> str:
    """Create the experiment if needed (artifacts in the workspace) and return its id."""
    client = configure(ws)
    name = experiment_name(ws, name)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    ws.artifacts_dir.mkdir(parents=True, exist_ok=True)
    location = (ws.artifacts_dir / name).resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # noqa: BLE001 - another process may have created it meanwhile
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


@contextmanager
def start_run(
    ws: Workspace,
    run_name: str,
    tags: dict[str, Any] | None = None,
    experiment: str | None = None,
) -> Iterator[ActiveRun]:
    """``mlflow.start_run`` on the workspace's experiment; yields the active run."""
    exp_id = ensure_experiment(ws, experiment)
    mlflow = _mlflow()
    with mlflow.start_run(
        experiment_id=exp_id,
        run_name=run_name,
        tags={k: str(v) for k, v in (tags or {}).items()},
    ) as run:
        yield run


# -- the MLflow UI ---------------------------------------------------------------------------


def ui_command(ws: Workspace, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The ``mlflow ui`` command line on the workspace's store: one worker, artifacts in place."""
    import sys

    artifacts = ws.artifacts_dir.resolve().as_uri()
    return [
        sys.executable, "-m", "mlflow", "ui",
        "--backend-store-uri", ws.tracking_uri,
        "--default-artifact-root", artifacts,
        "--artifacts-destination", artifacts,
        "--host", host,
        "--port", str(int(port)),
        "--workers", "1",
    ]  # fmt: skip


def ui_env() -> dict[str, str]:
    """Environment for the UI: no telemetry, no job-execution workers (they outlive SIGTERM)."""
    env = dict(os.environ)
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    return env


def run_ui(ws: Workspace, host: str = "127.0.0.1", port: int = 5000) -> int:
    """Run the MLflow UI until interrupted; SIGTERM/SIGINT are passed on and waited for."""
    import signal
    import subprocess

    ws.artifacts_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(ui_command(ws, host, port), env=ui_env(), cwd=ws.root)

    def forward(signum: int, _frame: Any) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for _ in range(2):  # a second wait after forwarding an interrupt
            try:
                code = proc.wait()
                break
            except KeyboardInterrupt:
                forward(signal.SIGINT, None)
        else:  # pragma: no cover
            code = proc.wait()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    # Stopped by a signal we forwarded: a normal way for a server to end.
    return 0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code
