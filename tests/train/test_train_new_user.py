"""What a new user tripped over in training and the model commands (issue 15), run through
``facefleet ...`` as a user runs it."""

from __future__ import annotations

import argparse
import importlib.util
import json
import warnings
from pathlib import Path

import pytest

from facefleet.cli.main import build_parser, main


@pytest.fixture(scope="module")
def single_photo_ws(tmp_path_factory, faces_dir):
    """Three people with one photo each."""
    from facefleet.enrol import enroll
    from facefleet.registry.keys import generate_keypair
    from facefleet.workspace import Workspace

    ws = Workspace.init(tmp_path_factory.mktemp("single"))
    ex = faces_dir / "examples"
    report = enroll(
        ws, [("obama", ex / "obama.jpg"), ("biden", ex / "biden.jpg"), ("lin", ex / "lin-manuel-miranda.png")]
    )
    assert len(report.accepted) == 3
    generate_keypair(ws.keys_dir)
    return ws


@pytest.fixture(scope="module")
def trained_knn(tmp_path_factory, knn_workspace):
    """knn_examples (1-2 photos each) with v1 trained, then v2 trained with ``--report`` as a
    user runs it (a subprocess: the report kernel's own output is captured too)."""
    import os
    import subprocess
    import sys
    from types import SimpleNamespace

    from testkit import clone_workspace

    from facefleet.registry.keys import generate_keypair

    ws = clone_workspace(knn_workspace, tmp_path_factory.mktemp("knn_trained") / "ws")
    generate_keypair(ws.keys_dir)
    assert main(["-w", str(ws.root), "train", "--json"]) == 0
    report = None
    if importlib.util.find_spec("papermill") is not None:
        env = {**os.environ, "FACEFLEET_NO_PROGRESS": "1"}
        report = subprocess.run(
            [sys.executable, "-m", "facefleet.cli.main", "-w", str(ws.root), "train", "--report"],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
    else:
        assert main(["-w", str(ws.root), "train"]) == 0
    return SimpleNamespace(ws=ws, root=ws.root, report=report)


def test_training_with_one_photo_each_says_why_there_is_no_cv(single_photo_ws, capsys):
    """Item 10: no "cross-validated accuracy 0.0000", no numpy divide warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["-w", str(single_photo_ws.root), "train"]) == 0
    out = capsys.readouterr().out
    assert "accuracy 0.0000" not in out
    assert "cross-validation needs two photos of someone" in out and "gallery (nearest face)" in out
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
    assert main(["-w", str(single_photo_ws.root), "models", "list"]) == 0
    row = capsys.readouterr().out.splitlines()[2].split()
    assert row[0] == "v1" and row[3] == "-"  # no accuracy rather than a false 0


def test_models_list_shows_the_cross_validated_accuracy(trained_knn, capsys):
    """Item 11: the accuracy column is filled from the training run."""
    capsys.readouterr()
    assert main(["-w", str(trained_knn.root), "models", "list"]) == 0
    header, _, row = capsys.readouterr().out.splitlines()[:3]
    accuracy = row.split()[header.split().index("accuracy")]
    assert accuracy != "-" and 0.0 <= float(accuracy) <= 1.0


def test_train_help_gives_the_real_target_far_default(capsys):
    """Item 11: ``train --help`` states the default the runs use."""
    from facefleet.train.thresholds import OpenSetParams

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"(default {OpenSetParams.target_far})" in help_text


def test_every_option_has_help_text():
    """Item 11: ``identify``, ``ui`` and every other command explain each option."""

    def missing(parser: argparse.ArgumentParser, path: list[str]):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from missing(sub, [*path, name])
            elif not action.help and not isinstance(action, argparse._HelpAction):
                yield f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}"

    assert list(missing(build_parser(), ["facefleet"])) == []


def test_people_with_no_action_lists_people(single_photo_ws, capsys):
    """Item 11: ``facefleet people`` lists people, as ``people list`` does."""
    capsys.readouterr()
    assert main(["-w", str(single_photo_ws.root), "people"]) == 0
    listed = capsys.readouterr().out
    assert main(["-w", str(single_photo_ws.root), "people", "list"]) == 0
    assert listed == capsys.readouterr().out and "obama" in listed and "biden" in listed


def test_train_report_says_where_the_notebook_and_plots_went(trained_knn):
    """Item 12: the paths are printed; the kernel prints no TCP warning."""
    if trained_knn.report is None:
        pytest.skip("papermill not installed")
    res = trained_knn.report
    assert res.returncode == 0, res.stderr
    lines = {line.split()[0]: line.split()[-1] for line in res.stdout.splitlines() if line.startswith("  ")}
    assert Path(lines["report"]).is_file() and Path(lines["report"]).suffix == ".ipynb"
    assert {p.name for p in Path(lines["plots"]).iterdir()} >= {"strangers_vs_missed_train.png"}
    assert "without encryption" not in res.stderr and "WARNING" not in res.stderr, res.stderr


def test_evaluate_says_where_the_plots_went(trained_knn, faces_dir, capfd):
    """Item 12."""
    capfd.readouterr()
    test_dir = faces_dir / "examples" / "knn_examples" / "train"
    assert main(["-w", str(trained_knn.root), "evaluate", "--test", str(test_dir), "--no-fallback"]) == 0
    out = capfd.readouterr().out
    (plots,) = [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("plots ")]
    assert {p.name for p in Path(plots).iterdir()} == {"confusion_matrix.png", "strangers_vs_missed.png"}


def test_models_diff_draws_no_download_bars(trained_knn, capfd):
    """Item 12: ``models diff`` prints the diff, not MLflow's artifact progress bars."""
    capfd.readouterr()
    assert main(["-w", str(trained_knn.root), "models", "diff", "1", "2"]) == 0
    out, err = capfd.readouterr()
    assert "metrics:" in out and "Downloading artifacts" not in out + err, err


def _model_line(err: str) -> str:
    (line,) = [x for x in err.splitlines() if x.startswith("model: ")]
    return line


def test_server_side_prefers_production_then_validated_then_newest(trained_knn, faces_dir, tmp_path, capfd):
    """Item 1: identify, evaluate and recognize use @production, else the newest @validated,
    else the newest version, and say which and why; ``--model @alias`` works everywhere."""
    ws = str(trained_knn.root)
    photo = faces_dir / "examples" / "knn_examples" / "test" / "obama1.jpg"
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "obama1.jpg").symlink_to(photo)

    capfd.readouterr()
    assert main(["-w", ws, "identify", "--json", str(photo)]) == 0
    line = _model_line(capfd.readouterr().err)
    assert "v2" in line and "newest" in line and "no @production" in line

    assert main(["-w", ws, "models", "promote", "1", "--to", "validated"]) == 0
    capfd.readouterr()
    assert main(["-w", ws, "identify", "--json", str(photo)]) == 0
    line = _model_line(capfd.readouterr().err)
    assert "v1" in line and "@validated" in line and "no @production" in line

    assert main(["-w", ws, "models", "promote", "1", "--to", "production"]) == 0
    assert main(["-w", ws, "models", "promote", "2", "--to", "validated"]) == 0
    capfd.readouterr()
    assert main(["-w", ws, "identify", "--json", str(photo)]) == 0
    assert "v1" in _model_line(capfd.readouterr().err)
    test_dir = faces_dir / "examples" / "knn_examples" / "train"
    assert main(["-w", ws, "evaluate", "--test", str(test_dir), "--no-fallback", "--json"]) == 0
    out, err = capfd.readouterr()
    assert json.loads(out)["model"]["version"] == 1 and "@production" in _model_line(err)
    rec = ["-w", ws, "recognize", str(photos), "--no-display", "--no-events", "--no-unknowns"]
    assert main(rec) == 0
    out, err = capfd.readouterr()
    assert "model version(s) 1" in out and "@production" in _model_line(err)

    # --model @alias everywhere, recognize included
    assert main([*rec, "--model", "@validated"]) == 0
    assert "model version(s) 2" in capfd.readouterr().out
    assert main([*rec, "--model", "@production"]) == 0
    assert "model version(s) 1" in capfd.readouterr().out
    assert main(["-w", ws, "identify", "--json", "--model", "@experimental", str(photo)]) == 0
    assert "v2" in _model_line(capfd.readouterr().err)
    assert main([*rec, "--model", "@nosuch"]) == 2
    assert "@nosuch" in capfd.readouterr().err
