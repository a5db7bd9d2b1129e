"""The facefleet command, run as a user runs it (a subprocess on the installed console script)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def run(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "FACEFLEET_NO_PROGRESS": "1", **(env or {})}
    full_env.pop("FACEFLEET_HOME", None)
    return subprocess.run(
        [sys.executable, "-m", "facefleet.cli.main", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_init_enroll_people_identify(tmp_path, faces_dir):
    ws = tmp_path / "ws"
    assert run("init", str(ws)).returncode == 0
    assert (ws / "facefleet.yaml").is_file() and (ws / "few_shot_examples" / "unknown").is_dir()
    train = faces_dir / "examples" / "knn_examples" / "train"
    out = run(
        "-w",
        str(ws),
        "enroll",
        "obama",
        str(train / "obama" / "obama.jpg"),
        str(train / "obama" / "obama2.jpg"),
    )
    assert out.returncode == 0, out.stderr
    person_id = out.stdout.strip().splitlines()[-1].split("\t")[0]
    assert person_id.startswith("p")
    assert run("-w", str(ws), "enroll", "--folder", str(train)).returncode == 0
    people = json.loads(run("-w", str(ws), "people", "list", "--json").stdout)
    assert {p["name"] for p in people} == {"alex_lacamoire", "biden", "kit_harington", "obama", "rose_leslie"}
    assert run("-w", str(ws), "people", "rename", "obama", "barack").returncode == 0
    shown = run("-w", str(ws), "people", "show", "barack")
    assert person_id in shown.stdout and "in_use" in shown.stdout
    res = run(
        "-w",
        str(ws),
        "identify",
        "--json",
        str(faces_dir / "examples" / "knn_examples" / "test" / "obama1.jpg"),
    )
    (entry,) = json.loads(res.stdout)
    assert entry["error"] is None and entry["faces"][0]["name"] == "barack"
    assert set(entry["faces"][0]) >= {"box", "name", "distance", "quality"}
    csv_out = run("-w", str(ws), "identify", "--csv", str(faces_dir / "examples" / "obama.jpg")).stdout
    assert csv_out.splitlines()[0].startswith("path,face") and "barack" in csv_out
    assert run("-w", str(ws), "people", "remove", "barack").returncode == 0
    db = tmp_path / "face_database.json"
    assert run("-w", str(ws), "export-database", "--out", str(db)).returncode == 0
    assert json.loads(db.read_text())["total_people"] == 4


def test_clear_errors(tmp_path):
    out = run("people", "list", cwd=tmp_path)
    assert out.returncode == 2 and "facefleet init" in out.stderr and "Traceback" not in out.stderr
    run("init", str(tmp_path / "ws"))
    out = run("-w", str(tmp_path / "ws"), "people", "show", "nobody")
    assert out.returncode == 2 and "no person 'nobody'" in out.stderr


def test_demo_runs_and_reports(tmp_path, faces_dir):
    out = run("demo", "--data", str(faces_dir), "--dir", str(tmp_path / "demo"))
    assert out.returncode == 0, out.stderr
    assert "identified 25 of 25" in out.stdout and "rejected" in out.stdout
    bad = run("demo", "--data", str(tmp_path), "--dir", str(tmp_path / "demo2"))
    assert bad.returncode == 2 and "five_celebrity" in bad.stderr
