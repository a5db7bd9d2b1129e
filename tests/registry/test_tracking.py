"""MLflow tracking set-up on a real SQLite store, and the MLflow UI as a real server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from facefleet.registry import tracking
from facefleet.workspace import Workspace

CLI = (
    "import sys; from facefleet.cli import main as m; "
    "m.COMMAND_MODULES[:] = ['facefleet.cli.models_cmds']; sys.exit(m.main(sys.argv[1:]))"
)


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    return Workspace.init(tmp_path_factory.mktemp("ws"))


def test_runs_and_artifacts_stay_in_the_workspace(ws, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)  # a stray ./mlruns would appear here
    client = tracking.configure(ws)
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert mlflow.get_tracking_uri() == ws.tracking_uri
    assert ws.tracking_uri == f"sqlite:///{ws.root / 'mlflow.db'}"

    exp_id = tracking.ensure_experiment(ws)
    assert tracking.ensure_experiment(ws) == exp_id  # idempotent
    exp = client.get_experiment(exp_id)
    assert exp.name == "facefleet"
    assert exp.artifact_location == (ws.artifacts_dir / "facefleet").as_uri()

    with tracking.start_run(ws, "unit", tags={"name": "alpha1", "n": 3}) as run:
        mlflow.log_metric("accuracy", 0.875)
        mlflow.log_text("hello", "notes/readme.txt")
    stored = client.get_run(run.info.run_id)
    assert stored.info.run_name == "unit"
    assert stored.data.tags["name"] == "alpha1" and stored.data.tags["n"] == "3"
    assert stored.data.metrics["accuracy"] == 0.875
    assert stored.info.experiment_id == exp_id
    logged = list(ws.artifacts_dir.rglob("readme.txt"))
    assert len(logged) == 1 and logged[0].read_text() == "hello"
    assert not (tmp_path / "mlruns").exists()


def test_named_experiment_and_bad_config(ws):
    from facefleet.errors import ConfigError

    exp_id = tracking.ensure_experiment(ws, "other")
    assert exp_id != tracking.ensure_experiment(ws)
    bad = Workspace(root=ws.root, config={**ws.config, "mlflow": {"experiment": 5}})
    with pytest.raises(ConfigError, match="mlflow.experiment"):
        tracking.ensure_experiment(bad)


def test_ui_command_uses_one_worker_and_the_workspace():
    ws = Workspace(root=Path("/srv/ws"), config={"mlflow": {}})
    cmd = tracking.ui_command(ws, "127.0.0.1", 5123)
    assert cmd[cmd.index("--workers") + 1] == "1"
    assert cmd[cmd.index("--backend-store-uri") + 1] == "sqlite:////srv/ws/mlflow.db"
    assert cmd[cmd.index("--artifacts-destination") + 1] == "file:///srv/ws/artifacts"
    assert tracking.ui_env()["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_ui_serves_the_page_and_stops_cleanly(ws, tmp_path):
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, "-w", str(ws.root), "ui", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        status, deadline = None, time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code
                break
            except httpx.TransportError:
                time.sleep(0.5)
        assert proc.poll() is None, proc.stdout.read()
        assert status == 200
        api = httpx.get(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name",
            params={"experiment_name": "facefleet"},
            timeout=10,
        )
        assert api.status_code == 200 and api.json()["experiment"]["name"] == "facefleet"
        kids = _children(proc.pid)
        assert 1 <= len(kids) <= 3, kids  # mlflow + one uvicorn worker, not ~15 processes
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.2)
    assert not [k for k in kids if _alive(k)], "UI processes left behind"
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlartifacts").exists()
