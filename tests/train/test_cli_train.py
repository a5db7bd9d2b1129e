"""`facefleet keys init`, `train` and `evaluate` on a workspace enrolled through the store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from facefleet.cli.main import main

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "gamma4.yaml"


def test_keys_init_refuses_to_replace(tmp_path, capsys):
    from facefleet.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws")
    assert main(["-w", str(ws.root), "keys", "init"]) == 0
    assert oct((ws.keys_dir / "signing_key.pem").stat().st_mode & 0o777) == "0o600"
    assert main(["-w", str(ws.root), "keys", "init"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_train_and_evaluate_from_the_store(celebrity_workspace, copy_workspace, faces_dir, tmp_path, capsys):
    ws = copy_workspace(celebrity_workspace)
    bad = tmp_path / "bad.yaml"
    bad.write_text("parameters:\n  C: [1, oops]\n")
    assert main(["-w", str(ws.root), "train", "--config", str(bad)]) == 2
    assert "parameters.C" in capsys.readouterr().err
    assert main(["-w", str(ws.root), "keys", "init"]) == 0
    capsys.readouterr()
    assert main(["-w", str(ws.root), "train", "--config", str(EXAMPLE), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["version"] == 1 and out["name"] == "gamma4"
    assert set(out["thresholds"]) == {p.name for p in (faces_dir / "five_celebrity" / "train").iterdir()}
    assert out["metrics"]["far_trials"] == out["metrics"]["n_faces"]  # every enrolled face a stranger trial
    assert main(["-w", str(ws.root), "models", "show", "1"]) == 0
    assert "open set: strangers named (estimate): " in capsys.readouterr().out

    strangers = tmp_path / "strangers"
    strangers.mkdir()
    for name in ("obama.jpg", "biden.jpg", "lin-manuel-miranda.png", "alex-lacamoire.png"):
        os.symlink(faces_dir / "examples" / name, strangers / name)
    code = main(
        [
            "-w",
            str(ws.root),
            "evaluate",
            "--model",
            "@experimental",
            "--test",
            str(faces_dir / "five_celebrity" / "val"),
            "--unknown",
            str(strangers),
            "--no-fallback",
            "--json",
        ]
    )
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    m = res["metrics"]
    assert m["known_faces"] >= 20 and m["unknown_faces"] == 4
    assert m["closed_set_accuracy"] >= 0.95
    assert m["unknown_false_accept_rate"] == 0.0
    assert m["known_false_reject_rate"] <= 0.2
    assert res["model"]["version"] == 1 and res["run_id"]
    plot = Path(res["plot"])  # the strangers-named / known-missed curve, written by evaluate
    assert plot.parent == ws.output_dir and plot.read_bytes()[:4] == b"\x89PNG"


def test_train_with_nothing_enrolled(tmp_path, capsys):
    from facefleet.workspace import Workspace

    ws = Workspace.init(tmp_path / "empty")
    assert main(["-w", str(ws.root), "train"]) == 2
    assert "enrol" in capsys.readouterr().err


@pytest.mark.parametrize("ref", ["7", "@production"])
def test_evaluate_unknown_model(tmp_path, faces_dir, capsys, ref):
    from facefleet.workspace import Workspace

    ws = Workspace.init(tmp_path / "w")
    code = main(
        ["-w", str(ws.root), "evaluate", "--model", ref, "--test", str(faces_dir / "five_celebrity" / "val")]
    )
    assert code == 2
    assert "face_model" in capsys.readouterr().err


def test_far_line_says_what_the_estimate_rests_on():
    from facefleet.train.model import far_line
    from facefleet.train.thresholds import admitted

    base = {"far": 0.0107, "far_low": 0.0058, "far_high": 0.0197, "target_far": 0.01}
    gallery = far_line({**base, "far_trials": 1303.0})
    assert gallery == (
        "strangers named (estimate): 1.07 % (95 % interval 0.58-1.97 %, 1303 trials of enrolled "
        "people played as strangers; target 1.00 %)"
    )
    pooled = far_line({**base, "far_trials": 1403.0, "far_reviewed_share": 100 / 1403})
    assert "1303 enrolled people's trials as strangers + 100 reviewed strangers" in pooled
    assert far_line({**base, "far_trials": 1403.0, "stranger_trials": 100.0}) == pooled  # older runs
    alone = far_line({**base, "far_trials": 500.0, "far_reviewed_share": 1.0, "gallery_far": 0.0192})
    assert "500 reviewed strangers; target" in alone and alone.endswith("as strangers named 1.92 %")
    grouped = far_line(
        {**base, "far_trials": 1403.0, "far_reviewed_share": 100 / 1403, "stranger_people": 12.0}
    )
    assert "1303 enrolled people's trials as strangers + 100 faces of 12 reviewed strangers;" in grouped
    small = far_line({**base, "far_trials": 47.0})
    assert small.endswith(
        "47 trials cannot promise the target: that needs 99 (enrol more people or review strangers)"
    )
    assert admitted(98, 0.01) < 0 <= admitted(99, 0.01)
    assert "cannot promise" not in far_line({**base, "far_trials": 99.0})
    assert "older estimate" in far_line({"far": 0.0002})
