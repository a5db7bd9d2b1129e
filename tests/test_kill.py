"""Kill tests: ``kill -9`` in the middle of ``enroll --folder``, ``train`` and ``models
promote`` leaves the store and the registry consistent, a re-run completes without
duplicates, and the production alias stays where it was; two ``enroll`` runs at once both
land (WAL, a busy timeout and one short transaction per photo)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from testkit import alive, consistent, descendants, store_counts, wait_for

from facefleet.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "FACEFLEET_NO_PROGRESS": "1"}


def cli(ws: Workspace, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "facefleet.cli.main", "-w", str(ws.root), *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


def start(ws: Workspace, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "facefleet.cli.main", "-w", str(ws.root), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        start_new_session=True,
    )


def kill9(proc: subprocess.Popen) -> None:
    """SIGKILL the command alone (not its group), then check its workers went with it."""
    workers = descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert wait_for(lambda: not alive(workers), 15), f"workers outlived the killed parent: {alive(workers)}"


def count(db: Path, sql: str) -> int:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0
    finally:
        conn.close()


def photo_folder(faces_dir: Path, dest: Path, per_person: int, skip: int = 0) -> Path:
    """``dest/<name>/`` with links to ``per_person`` photos of each five_celebrity person."""
    for person in sorted((faces_dir / "five_celebrity" / "train").iterdir()):
        (dest / person.name).mkdir(parents=True)
        for photo in sorted(person.iterdir())[skip : skip + per_person]:
            (dest / person.name / photo.name).symlink_to(photo)
    return dest


def no_duplicates(ws: Workspace) -> None:
    db = ws.root / "facefleet.db"
    assert (
        count(db, "SELECT COUNT(*) FROM (SELECT image_id FROM faces GROUP BY image_id HAVING COUNT(*) > 1)")
        == 0
    )
    assert (
        count(db, "SELECT COUNT(*) FROM (SELECT sha256 FROM images GROUP BY sha256 HAVING COUNT(*) > 1)") == 0
    )
    files = [p for p in ws.few_shot_dir.rglob("*") if p.is_file() and p.parent.name != "unknown"]
    assert len(files) == count(db, "SELECT COUNT(*) FROM images"), "few_shot_examples and the store disagree"
    assert not [p for p in ws.few_shot_dir.rglob("*.tmp")], "a half-copied photo was left behind"


def test_kill_during_enroll_folder_then_rerun(tmp_path, faces_dir):
    ws = Workspace.init(tmp_path / "ws")
    # enough photos that the run is still analysing after its first write (every 2 s)
    folder = photo_folder(faces_dir, tmp_path / "photos", per_person=20)
    total = sum(1 for p in folder.rglob("*") if p.is_file())
    proc = start(ws, "enroll", "--folder", folder, "--workers", "2")
    db = ws.root / "facefleet.db"
    got = wait_for(lambda: count(db, "SELECT COUNT(*) FROM faces") >= 3 or proc.poll() is not None, 180)
    assert got and proc.poll() is None, "enrol finished before it could be killed"
    kill9(proc)
    kept = store_counts(ws)
    assert consistent(kept) and 3 <= kept["faces"] < total, kept  # killed half way, work kept
    no_duplicates(ws)
    done = cli(ws, "enroll", "--folder", folder, "--workers", "2", "--json")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    report = json.loads(done.stdout)
    assert len(report["photos"]) == total and sum(p["cached"] for p in report["photos"]) >= kept["faces"]
    counts = store_counts(ws)
    assert consistent(counts) and counts["faces"] == report["accepted"]
    no_duplicates(ws)


def test_two_enroll_runs_at_once_both_land(tmp_path, faces_dir):
    ws = Workspace.init(tmp_path / "ws")
    first = photo_folder(faces_dir, tmp_path / "a", per_person=4)
    second = photo_folder(faces_dir, tmp_path / "b", per_person=4, skip=2)  # 2 photos each shared
    runs = [start(ws, "enroll", "--folder", f, "--workers", "1", "--json") for f in (first, second)]
    outputs = [r.communicate(timeout=600) for r in runs]
    for run, (_out, err) in zip(runs, outputs):
        assert run.returncode == 0, err
        assert "database is locked" not in err and "Traceback" not in err, err
    reports = [json.loads(out) for out, _ in outputs]
    accepted = {Path(p["path"]).resolve() for r in reports for p in r["photos"] if p["accepted"]}
    counts = store_counts(ws)
    assert consistent(counts) and counts["faces"] == len(accepted)  # shared photos stored once
    no_duplicates(ws)


def _versions(ws: Workspace) -> list[dict]:
    from facefleet.registry import versions

    try:
        infos = versions.list_versions(ws)
    except versions.VersionError:  # nothing registered yet
        return []
    return [{"version": i.version, "tags": i.tags, "aliases": i.aliases} for i in infos]


def _production(ws: Workspace) -> int | None:
    found = [v["version"] for v in _versions(ws) if "production" in v["aliases"]]
    return found[0] if found else None


def test_kill_during_train_and_promote(celebrity_workspace, copy_workspace, tmp_path):
    from facefleet.registry import versions

    ws = copy_workspace(celebrity_workspace)
    assert cli(ws, "keys", "init").returncode == 0
    v1 = None  # no production model yet: the killed runs must not create one either

    # train, killed the moment MLflow holds its new version (before the bundle is complete if
    # the kill lands in time; the assertions below hold wherever it lands)
    proc = start(ws, "train", "--method", "nearest", "--json")
    mlflow_db = ws.root / "mlflow.db"
    wait_for(
        lambda: count(mlflow_db, "SELECT COUNT(*) FROM model_versions") > 0 or proc.poll() is not None,
        300,
        0.02,
    )
    if proc.poll() is None:
        kill9(proc)
    assert _production(ws) == v1
    for v in _versions(ws):
        if v["tags"].get(versions.BUNDLE_TAG) == versions.PENDING:
            with pytest.raises(versions.VersionError, match="incomplete"):
                versions.promote(ws, v["version"], "production")
    again = cli(ws, "train", "--method", "nearest", "--json")
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    v_new = json.loads(again.stdout)["version"]
    left = _versions(ws)
    assert not [v for v in left if v["tags"].get(versions.BUNDLE_TAG) == versions.PENDING]
    assert not list((ws.models_dir / "face_model").glob(".*")), "temporary folders left behind"
    for v in left:  # every registered version has a verified bundle
        versions.check_promotable(ws, versions.resolve_version(ws, v["version"]))
    assert _production(ws) == v1

    # promote, killed part way (wherever it lands: before the move, or after it)
    proc = start(ws, "models", "promote", v_new, "--to", "production", "--why", "killed")
    time.sleep(4.0)
    if proc.poll() is None:
        kill9(proc)
    assert _production(ws) in (v1, v_new)
    done = cli(ws, "models", "promote", v_new, "--to", "production", "--why", "re-run")
    assert done.returncode == 0, done.stderr
    assert _production(ws) == v_new
    moves = [e for e in versions.audit_log(ws, "production") if e["to_version"] == v_new]
    assert len(moves) == 1, moves  # the move is logged once: by the killed run, the repair or the re-run
    import yaml

    assert yaml.safe_load(versions.versions_yaml_path(ws).read_text())["production"]["version"] == v_new
