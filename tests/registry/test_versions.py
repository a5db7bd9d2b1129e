"""Versions, aliases, audit log, rollback, diff and versions.yaml on a real MLflow SQLite store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from facefleet.registry import tracking, versions
from facefleet.registry.versions import VersionError
from facefleet.workspace import Workspace

MODEL = "face_model"


def _register(ws: Workspace, name: str, accuracy: float, params: dict, manifest: dict) -> int:
    """Do what a training run does: a run with params/metrics/manifest, a version, @experimental."""
    import mlflow

    client = tracking.configure(ws)
    with tracking.start_run(ws, f"train-{name}") as run:
        mlflow.log_params(params)
        mlflow.log_metrics({"accuracy": accuracy, "n_people": len(manifest["labels"])})
        mlflow.log_text(json.dumps(manifest), "bundle/manifest.json")
    try:
        client.get_registered_model(MODEL)
    except Exception:  # noqa: BLE001
        client.create_registered_model(MODEL)
    mv = client.create_model_version(
        MODEL, source=f"{run.info.artifact_uri}/bundle", run_id=run.info.run_id, tags={"name": name}
    )
    write_signed_bundle(ws, int(mv.version), name, manifest["labels"])
    client.set_registered_model_alias(MODEL, "experimental", mv.version)
    return int(mv.version)


def write_signed_bundle(ws: Workspace, version: int, name: str, labels: list[str]) -> Path:
    """A real signed bundle for ``version`` (promote verifies one before moving an alias)."""
    import numpy as np

    from facefleet.registry.format import write_bundle
    from facefleet.registry.keys import generate_keypair, load_private_key, private_key_path
    from facefleet.vision.embed import dlib_embedder_id

    if not private_key_path(ws.keys_dir).is_file():
        generate_keypair(ws.keys_dir)
    gallery = np.random.default_rng(version).normal(size=(2 * len(labels), 128)).astype(np.float32)
    centroids = gallery.reshape(len(labels), 2, 128).mean(axis=1)
    manifest = {
        "model": MODEL,
        "version": version,
        "name": name,
        "embedder_id": dlib_embedder_id(),  # install and package check the device has it
        "labels": labels,
        "thresholds": dict.fromkeys(labels, 0.5),
        "method": "centroid",
        "metrics": {},
        "created": "2026-01-01T00:00:00+00:00",
    }
    arrays = {
        "gallery": gallery,
        "gallery_labels": np.repeat(np.arange(len(labels), dtype=np.int32), 2),
        "centroids": centroids,
        "temperature": np.array(1.0, dtype=np.float32),
    }
    key = load_private_key(private_key_path(ws.keys_dir))
    return write_bundle(
        ws.models_dir / MODEL / str(version), manifest=manifest, arrays=arrays, private_key=key
    )


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("ws")
    ws = Workspace.init(root)
    _register(
        ws,
        "alpha1",
        0.90,
        {"method": "svm", "C": "1.0"},
        {"labels": ["ann", "bob"], "thresholds": {"ann": 0.5, "bob": 0.55}},
    )
    _register(
        ws,
        "beta2",
        0.93,
        {"method": "svm", "C": "10.0"},
        {"labels": ["ann", "bob", "cy"], "thresholds": {"ann": 0.5, "bob": 0.6, "cy": 0.5}},
    )
    _register(
        ws,
        "gamma3",
        0.95,
        {"method": "centroid"},
        {"labels": ["ann", "cy"], "thresholds": {"ann": 0.45, "cy": 0.5}},
    )
    return ws


def test_parse_ref_kinds():
    assert versions.parse_ref("3") == ("version", 3)
    assert versions.parse_ref("v12") == ("version", 12)
    assert versions.parse_ref(4) == ("version", 4)
    assert versions.parse_ref("@production") == ("alias", "production")
    assert versions.parse_ref("gamma4") == ("name", "gamma4")
    with pytest.raises(VersionError, match="unknown alias"):
        versions.parse_ref("@prod")
    with pytest.raises(VersionError, match="empty"):
        versions.parse_ref("  ")


def test_alias_stack_replays_promotions_and_rollbacks():
    log = [
        {"alias": "production", "action": "promote", "from_version": None, "to_version": 1},
        {"alias": "validated", "action": "promote", "from_version": None, "to_version": 2},
        {"alias": "production", "action": "promote", "from_version": 1, "to_version": 2},
        {"alias": "production", "action": "promote", "from_version": 2, "to_version": 3},
        {"alias": "production", "action": "rollback", "from_version": 3, "to_version": 2},
    ]
    assert versions.alias_stack(log, "production") == [1, 2]
    assert versions.alias_stack(log, "validated") == [2]
    assert versions.alias_stack(log, "experimental") == []


def test_list_and_resolve(ws):
    infos = versions.list_versions(ws)
    assert [i.version for i in infos] == [3, 2, 1]
    assert [i.name for i in infos] == ["gamma3", "beta2", "alpha1"]
    assert infos[0].aliases == ["experimental"]
    assert infos[1].accuracy == pytest.approx(0.93)
    assert infos[1].params["C"] == "10.0"
    assert versions.resolve_version(ws, "beta2").version == 2
    assert versions.resolve_version(ws, "1").name == "alpha1"
    assert versions.resolve_version(ws, "@experimental").name == "gamma3"


def test_resolve_errors_are_clear(ws):
    with pytest.raises(VersionError, match="no version 99"):
        versions.resolve_version(ws, 99)
    with pytest.raises(VersionError, match="no version named 'zeta'"):
        versions.resolve_version(ws, "zeta")
    with pytest.raises(VersionError, match="holds @production"):
        versions.resolve_version(ws, "@production")


def test_promote_rollback_audit_and_versions_yaml(ws):
    # Order matters inside this test: it walks one history.
    e1 = versions.promote(ws, "alpha1", "production", why="first model", user="ann@lab")
    assert e1["from_version"] is None and e1["to_version"] == 1 and e1["user"] == "ann@lab"
    versions.promote(ws, 2, "validated", why="passed the gate")
    versions.promote(ws, "@validated", "production", why="better on strangers")
    assert versions.promote(ws, 2, "production") is None  # already there: no move, no log line
    versions.promote(ws, "gamma3", "production", why="centroid")
    assert versions.resolve_version(ws, "@production").version == 3

    log = versions.audit_log(ws, "production")
    assert [(e["from_version"], e["to_version"]) for e in log] == [(None, 1), (1, 2), (2, 3)]
    assert all(e["user"] and e["ts"] for e in log)
    assert log[0]["user"] == "ann@lab" and "@" in log[1]["user"]

    data = yaml.safe_load(versions.versions_yaml_path(ws).read_text())
    assert data["production"]["version"] == 3
    assert data["production"]["accuracy"] == pytest.approx(0.95)
    assert data["production"]["notes"] == "centroid"
    assert data["production"]["deployed"] == log[-1]["ts"]
    assert [v["version"] for v in data["validated"]] == [2, 1]
    assert data["experimental"] == []

    back = versions.rollback(ws, "production", why="false accepts")
    assert (back["from_version"], back["to_version"], back["action"]) == (3, 2, "rollback")
    assert versions.resolve_version(ws, "@production").version == 2
    back = versions.rollback(ws, "production")
    assert back["to_version"] == 1
    with pytest.raises(VersionError, match="no earlier holder"):
        versions.rollback(ws, "production")
    assert versions.resolve_version(ws, "@production").version == 1

    data = yaml.safe_load(versions.versions_yaml_path(ws).read_text())
    assert data["production"]["version"] == 1
    v3 = next(v for v in data["validated"] if v["version"] == 3)
    assert "rolled back from @production" in v3["notes"]
    # The audit log is append-only JSONL: every move is still there.
    lines = versions.audit_path(ws).read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(line) for line in lines)


def test_torn_audit_line_is_skipped(tmp_path):
    ws = Workspace(root=tmp_path, config={"registry": {"model_name": MODEL}})
    good = {"alias": "production", "action": "promote", "from_version": None, "to_version": 1}
    versions.audit_path(ws).write_text(json.dumps(good) + "\n" + '{"alias": "produc')
    assert versions.audit_log(ws) == [good]


def test_diff_params_metrics_labels_thresholds(ws):
    d = versions.diff(ws, "alpha1", "beta2")
    params = {row[0]: row for row in d.params}
    assert params["C"] == ("C", "1.0", "10.0", True)
    assert params["method"][3] is False
    metrics = {row[0]: row for row in d.metrics}
    assert metrics["accuracy"][1:] == (pytest.approx(0.90), pytest.approx(0.93), True)
    assert (d.labels_removed, d.labels_added) == ([], ["cy"])
    thr = {row[0]: row for row in d.thresholds}
    assert thr["bob"] == ("bob", 0.55, 0.6, True) and thr["ann"][3] is False
    assert thr["cy"] == ("cy", None, 0.5, True)


# The real entry point with only this command group loaded: independent of other groups.
CLI = (
    "import sys; from facefleet.cli import main as m; "
    "m.COMMAND_MODULES[:] = ['facefleet.cli.models_cmds']; sys.exit(m.main(sys.argv[1:]))"
)


def _cli(ws: Workspace, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, FACEFLEET_NO_PROGRESS="1")
    return subprocess.run(
        [sys.executable, "-c", CLI, "-w", str(ws.root), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_cli_models_commands(ws):
    out = _cli(ws, "models", "list")
    assert out.returncode == 0, out.stderr
    assert "gamma3" in out.stdout and "@production" in out.stdout

    out = _cli(ws, "models", "show", "@production")
    assert out.returncode == 0, out.stderr
    assert "alpha1" in out.stdout

    out = _cli(ws, "models", "diff", "1", "3")
    assert out.returncode == 0, out.stderr
    assert "method" in out.stdout and "centroid" in out.stdout and "- bob" in out.stdout

    out = _cli(ws, "models", "promote", "gamma3", "--to", "validated", "--why", "cli test")
    assert out.returncode == 0, out.stderr
    assert versions.audit_log(ws)[-1]["why"] == "cli test"

    out = _cli(ws, "models", "promote", "zeta", "--to", "production")
    assert out.returncode == 2 and "no version named 'zeta'" in out.stderr
    assert "Traceback" not in out.stderr

    target = ws.root / "out" / "v.yaml"
    out = _cli(ws, "models", "export-versions", "-o", str(target))
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(target.read_text())["production"]["version"] == 1

    out = _cli(ws, "models", "history")
    assert out.returncode == 0 and "cli test" in out.stdout


def test_no_model_yet_is_a_clear_error(ws, tmp_path):
    other = Workspace(root=tmp_path, config={**ws.config, "registry": {"model_name": "none_yet"}})
    other.config["mlflow"] = {"tracking_uri": ws.tracking_uri, "experiment": "facefleet"}
    with pytest.raises(VersionError, match="train one"):
        versions.list_versions(other)
    data = yaml.safe_load(Path(versions.write_versions_yaml(other)).read_text())
    assert data == {"production": None, "validated": [], "experimental": []}


def test_promote_refuses_broken_versions_repairs_and_cleans_up(tmp_path):
    """One workspace, three failure stories (each MLflow database costs seconds to create)."""
    import shutil
    import socket

    from facefleet.registry.catalog import bundle_path
    from facefleet.train.pipeline import OWNER_TAG, clean_incomplete_versions

    ws = Workspace.init(tmp_path / "ws")
    for name in ("one", "two", "three"):
        _register(ws, name, 0.9, {"method": "centroid"}, {"labels": ["ann", "bob"], "thresholds": {}})
    versions.promote(ws, 1, "production", why="start")
    client = tracking.configure(ws)

    # 1. refused: a version still pending, one whose bundle was altered, one with no bundle
    client.set_model_version_tag(MODEL, "2", versions.BUNDLE_TAG, versions.PENDING)
    with pytest.raises(VersionError, match="incomplete"):
        versions.promote(ws, 2, "production")
    bundle = ws.models_dir / MODEL / "3"
    data = bytearray((bundle / "model.npz").read_bytes())
    data[-10] ^= 0xFF
    (bundle / "model.npz").write_bytes(bytes(data))
    with pytest.raises(VersionError, match="does not verify: checksum mismatch for model.npz"):
        versions.promote(ws, 3, "production")
    shutil.rmtree(bundle)  # gone from models/, and its run logged only a manifest
    with pytest.raises(VersionError, match="v3's bundle does not verify: not a bundle"):
        versions.promote(ws, 3, "production")
    assert versions.resolve_version(ws, "@production").version == 1  # never moved

    # 2. a promote killed after moving the alias: registry moved, no audit line, stale yaml
    client.set_registered_model_alias(MODEL, "production", "3")
    assert yaml.safe_load(versions.versions_yaml_path(ws).read_text())["production"]["version"] == 1
    versions.promote(ws, 1, "validated", why="the next call repairs")
    log = versions.audit_log(ws, "production")
    assert [(e["action"], e["to_version"]) for e in log] == [("promote", 1), ("repair", 3)]
    assert yaml.safe_load(versions.versions_yaml_path(ws).read_text())["production"]["version"] == 3
    assert versions.rollback(ws, "production", why="undo")["to_version"] == 1

    # 3. a train killed after registering version 2: pending, owner gone, a hidden temp folder
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    client.set_model_version_tag(MODEL, "2", OWNER_TAG, f"{socket.gethostname()}:{dead.stdout.strip()}")
    (ws.models_dir / MODEL / ".2.tmpxyz").mkdir()
    assert clean_incomplete_versions(ws, client, MODEL) == [2]
    assert [i.version for i in versions.list_versions(ws)] == [3, 1]
    assert not (ws.models_dir / MODEL / "2").exists() and not (ws.models_dir / MODEL / ".2.tmpxyz").exists()
    # a pending version whose trainer is alive (this process) is left alone
    client.set_model_version_tag(MODEL, "1", versions.BUNDLE_TAG, versions.PENDING)
    client.set_model_version_tag(MODEL, "1", OWNER_TAG, f"{socket.gethostname()}:{os.getpid()}")
    assert clean_incomplete_versions(ws, client, MODEL) == []
    assert bundle_path(ws, "1").name == "1"
