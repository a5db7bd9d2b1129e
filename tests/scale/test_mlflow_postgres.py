"""MLflow on a real PostgreSQL (Debian's postgresql 15, started on a loopback port): runs,
versions, aliases, the audit trail and the ``models`` commands work as on SQLite, artifacts go
to a shared folder, and two trainings can write at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg2
import pytest
import yaml
from clusterkit import REPO, Postgres
from testkit import clone_workspace, free_port

from facefleet.cli.main import main
from facefleet.registry import versions
from facefleet.workspace import Workspace


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    server = Postgres(tmp_path_factory.mktemp("pg")).start()
    try:
        yield server
    finally:
        server.stop()


def on_postgres(ws: Workspace, url: str, artifacts) -> Workspace:
    cfg = yaml.safe_load(ws.config_path.read_text())
    cfg["mlflow"] = {**cfg.get("mlflow", {}), "tracking_uri": url, "artifacts": str(artifacts)}
    ws.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return Workspace.open(ws.root)


def query(url: str, sql: str) -> list[tuple]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def _train_at_once(ws: Workspace, names: tuple[str, ...]) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "FACEFLEET_NO_PROGRESS": "1"}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    cmd = [sys.executable, "-m", "facefleet.cli.main", "-w", str(ws.root), "train", "--json", "--name"]
    procs = [
        subprocess.Popen([*cmd, name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        for name in names
    ]
    outs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-2000:]
            outs.append(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return outs


@pytest.fixture(scope="module")
def trained(pg, knn_workspace, tmp_path_factory):
    """Two trainings started together, as two processes, on a fresh database (one creates
    MLflow's tables while the other waits), artifacts in a shared folder."""
    url = pg.create_db("registry")
    base = tmp_path_factory.mktemp("pg-ws")
    shared = base / "shared-artifacts"
    ws = on_postgres(clone_workspace(knn_workspace, base / "ws"), url, shared)
    outs = _train_at_once(ws, ("left", "right"))
    return ws, url, shared, sorted(outs, key=lambda o: o["version"])


def test_two_trainings_at_once(trained):
    ws, url, shared, outs = trained
    assert [o["version"] for o in outs] == [1, 2]
    assert sorted(o["name"] for o in outs) == ["left", "right"]
    assert not (ws.root / "mlflow.db").exists()  # nothing went to SQLite
    rows = query(url, "SELECT name, version, run_id FROM model_versions ORDER BY version")
    assert rows == [("face_model", o["version"], o["run_id"]) for o in outs]
    for o in outs:
        bundle = ws.root / "models" / "face_model" / str(o["version"])
        manifest = json.loads((bundle / "manifest.json").read_text())
        assert manifest["name"] == o["name"] and manifest["run_id"] == o["run_id"]
        # the run's artifacts (bundle, plots, reports) are in the shared folder
        assert (shared / "facefleet" / o["run_id"] / "artifacts" / "bundle" / "manifest.json").is_file()
    moves = versions.audit_log(ws, "experimental")
    assert sorted(e["to_version"] for e in moves) == [1, 2]
    holder = query(url, "SELECT version FROM registered_model_aliases WHERE alias = 'experimental'")
    assert holder == [(moves[-1]["to_version"],)]  # the alias and the log agree on the last move


def test_models_commands_on_postgres(trained, tmp_path, capsys):
    ws, url, shared, outs = trained
    first, second = outs[0]["name"], outs[1]["name"]
    assert main(["-w", str(ws.root), "models", "promote", "1", "--to", "production", "--why", "pg"]) == 0
    assert main(["-w", str(ws.root), "models", "promote", second, "--to", "production"]) == 0
    aliases = dict(query(url, "SELECT alias, version FROM registered_model_aliases"))
    assert aliases["production"] == 2
    assert main(["-w", str(ws.root), "models", "rollback", "production", "--why", "back"]) == 0
    capsys.readouterr()
    assert main(["-w", str(ws.root), "models", "list"]) == 0
    listing = capsys.readouterr().out
    assert first in listing and second in listing and "production" in listing
    assert main(["-w", str(ws.root), "models", "history", "production"]) == 0
    history = capsys.readouterr().out
    assert "back" in history and "pg" in history
    assert [e["to_version"] for e in versions.audit_log(ws, "production")] == [1, 2, 1]
    assert query(url, "SELECT version FROM registered_model_aliases WHERE alias = 'production'") == [(1,)]
    assert main(["-w", str(ws.root), "models", "diff", "1", "2"]) == 0

    # another server's workspace on the same database gets the bundle from the shared artifacts
    other = on_postgres(Workspace.init(tmp_path / "other"), url, shared)
    from facefleet.registry.catalog import resolve

    got = resolve(other, "@production").path  # downloaded from the run's artifacts
    assert json.loads((got / "manifest.json").read_text())["name"] == first


def test_unreachable_database_is_one_line(knn_workspace, copy_workspace, tmp_path, capsys):
    url = f"postgresql://facefleet:secret@127.0.0.1:{free_port()}/nowhere"
    ws = on_postgres(copy_workspace(knn_workspace), url, tmp_path / "artifacts")
    assert main(["-w", str(ws.root), "models", "list"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("facefleet: error: cannot reach the MLflow database") and "\n" not in err
    assert "secret" not in err and "***" in err
