"""MLflow tracking set-up for a workspace: tracking URI, experiment, runs.

Owns where runs and artifacts go: the workspace's ``mlflow.db`` or the configured tracking
store (a PostgreSQL database or a tracking server), and ``artifacts/`` in the workspace or the
shared folder ``mlflow.artifacts``, never ``./mlruns`` of the current folder.
mlflow is imported lazily: it costs seconds and the edge must never import it.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facefleet.errors import ConfigError, FacefleetError

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


SERVER_SCHEMES = ("postgresql://", "postgresql+psycopg2://")
KNOWN_SCHEMES = ("sqlite:///", "http://", "https://", "file:", "databricks", *SERVER_SCHEMES)
_READY: set[str] = set()
_READY_LOCK = threading.Lock()


def redacted(uri: str) -> str:
    """``uri`` with any password replaced by ``***`` (for messages and logs)."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", uri)


def check_tracking_uri(uri: str) -> str:
    if not isinstance(uri, str) or not uri.startswith(KNOWN_SCHEMES):
        raise ConfigError(
            f"mlflow.tracking_uri: expected sqlite:///PATH, postgresql://USER@HOST:PORT/DB or "
            f"http(s)://HOST, got {redacted(str(uri))!r}"
        )
    return uri


def prepare_server_db(uri: str, artifacts: Path, timeout: float = 10.0) -> None:
    """Reach a PostgreSQL tracking database and let one process at a time create MLflow's tables.

    Two trainings starting together on a fresh database would both run MLflow's migrations;
    a PostgreSQL advisory lock makes the second wait until the first is done. A database
    that cannot be reached is a one-line ``ConfigError``, not a driver traceback.
    """
    if not uri.startswith(SERVER_SCHEMES) or uri in _READY:
        return
    with _READY_LOCK:
        if uri in _READY:
            return
        try:
            import sqlalchemy
        except ImportError as exc:  # pragma: no cover - comes with mlflow
            raise FacefleetError(f"sqlalchemy is not installed: {exc}") from None
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            raise ConfigError(
                "mlflow.tracking_uri is a PostgreSQL URL but psycopg2 is not installed "
                "(pip install 'facefleet[server]')"
            ) from None
        engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": int(timeout)})
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK})
                try:
                    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

                    # creates or upgrades the tables (and MLflow's default experiment)
                    SqlAlchemyStore(uri, default_artifact_root=artifacts.resolve().as_uri())
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK})
        except sqlalchemy.exc.OperationalError as exc:
            first = str(exc.orig or exc).strip().splitlines()[0]
            raise ConfigError(f"cannot reach the MLflow database {redacted(uri)}: {first}") from None
        finally:
            engine.dispose()
        _READY.add(uri)


_MIGRATION_LOCK = 0x66616365  # any constant shared by every facefleet process


def configure(ws: Workspace) -> MlflowClient:
    """Point mlflow at the workspace's tracking store and return a client for it."""
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    # artifact downloads (models diff, bundles) must not draw progress bars on the terminal
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow = _mlflow()
    from mlflow.tracking import MlflowClient

    uri = check_tracking_uri(ws.tracking_uri)
    prepare_server_db(uri, artifacts_root(ws))
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


def artifacts_root(ws: Workspace) -> Path:
    """Where runs keep their artifacts: ``mlflow.artifacts`` (a folder every server of a shared
    tracking database can read, e.g. an NFS mount) or the workspace's ``artifacts/``."""
    value = ws.settings.mlflow.artifacts
    if not value:
        return ws.artifacts_dir
    if not isinstance(value, str):
        raise ConfigError(f"mlflow.artifacts must be a folder path, got {value!r}")
    if value.startswith("file://"):
        value = value[len("file://") :]
    if "://" in value:
        raise ConfigError(f"mlflow.artifacts: only a local or mounted folder is supported, got {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else (ws.root / path)


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
    root = artifacts_root(ws)
    root.mkdir(parents=True, exist_ok=True)
    location = (root / name).resolve().as_uri()
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


def artifact_location(artifact_uri: str, sub: str = "") -> str:
    """Where a run's artifacts (or its ``sub`` folder) are, as a path people can open when
    they are on this machine (a ``file:`` URI), else the URI itself."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(artifact_uri)
    base = unquote(parsed.path) if parsed.scheme in ("", "file") else artifact_uri.rstrip("/")
    return f"{base}/{sub}" if sub else base


# -- the MLflow UI ---------------------------------------------------------------------------


def ui_command(ws: Workspace, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The ``mlflow ui`` command line on the workspace's store: one worker, artifacts in place."""
    import sys

    artifacts = artifacts_root(ws).resolve().as_uri()
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

    artifacts_root(ws).mkdir(parents=True, exist_ok=True)
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
