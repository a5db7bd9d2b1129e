"""What a new user tripped over in curation (issue 15), through ``facefleet ...``."""

from __future__ import annotations

import csv
import json

import pytest
from testkit import clone_workspace

from facefleet.cli.main import main
from facefleet.workspace import Workspace


@pytest.fixture
def ws(base_ws, tmp_path):
    return clone_workspace(base_ws[0], tmp_path / "ws")


def _rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_facefleet_reads_back_its_own_facelists(ws, camera_runs, tmp_path, capsys):
    """Item 3: a device's facelist.csv imports and collects; a ``curate --facelist`` export
    imports; every skipped row says why."""
    device_csv = camera_runs["cam1"] / "output" / "facelist.csv"
    n_rows = len(_rows(device_csv))
    assert main(["-w", str(ws.root), "import", "facelist", str(device_csv)]) == 0
    out = capsys.readouterr().out
    assert "unknown face status" not in out
    first = out.splitlines()[0]
    added = int(first.split(": ", 1)[1].split()[0])
    skipped = int(first.split(", ")[-1].split()[0])
    assert added >= 2 and added + skipped == n_rows, out
    assert all(
        ": " in line.split("skipped ", 1)[1] for line in out.splitlines()[1:] if "skipped line" in line
    )

    other = Workspace.init(tmp_path / "other")
    assert main(["-w", str(other.root), "collect", str(device_csv)]) == 0
    out = capsys.readouterr().out
    head = out.splitlines()[0].split()
    collected, skipped = int(head[0]), int(head[-2])
    assert collected >= 2 and collected + skipped == n_rows, out
    assert all(line.strip().startswith("skipped ") and ": " in line for line in out.splitlines()[1:21])

    export = tmp_path / "curated.csv"
    assert main(["-w", str(ws.root), "curate", "--facelist", str(export)]) == 0
    exported = len(_rows(export))
    assert exported >= 9
    fresh = Workspace.init(tmp_path / "fresh")
    capsys.readouterr()
    assert main(["-w", str(fresh.root), "import", "facelist", str(export)]) == 0
    out = capsys.readouterr().out
    assert "not a timestamp" not in out and f": {exported} faces added" in out and "0 skipped" in out, out
    assert main(["-w", str(fresh.root), "people", "list", "--json"]) == 0
    names = {p["name"] for p in json.loads(capsys.readouterr().out)}
    assert names == {"alex_lacamoire", "biden", "kit_harington", "obama", "rose_leslie"}


def test_a_cluster_emptied_by_labelling_is_closed(ws, camera_runs, capsys):
    """Item 13: labelling all faces of a cluster one by one closes it (not "open, 0 faces")."""
    assert main(["-w", str(ws.root), "collect", str(camera_runs["cam1"])]) == 0
    capsys.readouterr()
    assert main(["-w", str(ws.root), "clusters", "list", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found, "the pbs clip gives unknown captures"
    target = found[0]
    assert main(["-w", str(ws.root), "label", *map(str, target["faces"]), "visitor"]) == 0
    capsys.readouterr()
    assert main(["-w", str(ws.root), "clusters", "list", "--all", "--json"]) == 0
    after = {c["id"]: c for c in json.loads(capsys.readouterr().out)}
    assert after[target["id"]]["state"] == "labelled" and after[target["id"]]["person"] == "visitor"
    assert main(["-w", str(ws.root), "clusters", "list", "--json"]) == 0
    assert target["id"] not in {c["id"] for c in json.loads(capsys.readouterr().out)}
    assert all(c["size"] > 0 for c in after.values() if c["state"] == "open")
