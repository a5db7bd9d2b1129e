"""Typed workspace settings and the version-YAML checks: every bad file or value is a one-line
error through the public command (exit status 2, no traceback)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from facefleet.cli.main import main
from facefleet.errors import ConfigError
from facefleet.settings import DEFAULT_MODEL_NAME, Settings, VisionSettings
from facefleet.workspace import Workspace


def _cli(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    err = capsys.readouterr().err
    return code, err


def _ws(tmp_path: Path, extra: str | bytes | None = None) -> Path:
    root = tmp_path / "ws"
    Workspace.init(root)
    if extra is not None:
        cfg = root / "facefleet.yaml"
        if isinstance(extra, bytes):
            cfg.write_bytes(extra)
        else:
            cfg.write_text(extra)
    return root


def test_defaults_are_typed_and_init_writes_them(tmp_path):
    ws = Workspace.open(_ws(tmp_path))
    assert ws.settings == Settings()
    assert ws.settings.vision.detector == "hog" and ws.settings.quality.min_face_px == 30
    assert ws.model_name == DEFAULT_MODEL_NAME
    assert ws.public_key_path == ws.keys_dir / "signing_key.pub.pem"
    assert yaml.safe_load(ws.config_path.read_text())["vision"]["max_side"] == 1024


def test_values_from_the_file(tmp_path):
    root = _ws(tmp_path, "vision: {detector: cnn, workers: 2}\nregistry: {model_name: door_cam}\n")
    ws = Workspace.open(root)
    assert ws.settings.vision == dataclasses.replace(VisionSettings(), detector="cnn", workers=2)
    assert ws.model_name == "door_cam"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("vision: hog\n", "vision must be a mapping of keys, got 'hog'"),
        ("quality: {min_face_px: abc}\n", "quality.min_face_px must be an integer, got 'abc'"),
        (
            "identify: {distance_threshold: x}\n",
            "distance_threshold must be a finite number, got 'x'",
        ),
        ("identify: {distance_threshold: .nan}\n", "identify.distance_threshold must be a finite number"),
        ("vision: {detector: sift}\n", "vision.detector must be one of hog, cnn, haar, got 'sift'"),
        ("vision: {workers: 100000}\n", "vision.workers must be in [0, 256], got 100000"),
        ("vision: {detectr: hog}\n", "unknown key(s) in vision: detectr (known: detector,"),
        ("registry: {model_name: ..}\n", "registry.model_name must be 1-64 letters, digits"),
        ("mlflow: {experiment: 5}\n", "mlflow.experiment must be a string, got 5"),
        ("- a list\n", "expected a mapping at the top level"),
        ("vision: {detector: [\n", "not valid YAML"),
    ],
)
def test_bad_workspace_config_is_one_line(tmp_path, capsys, config, message):
    root = _ws(tmp_path, config)
    code, err = _cli(capsys, "--workspace", str(root), "people", "list")
    assert code == 2
    assert message in err and "facefleet.yaml" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_non_utf8_workspace_config(tmp_path, capsys):
    root = _ws(tmp_path, b"vision:\n  detector: h\xf6g\n")
    code, err = _cli(capsys, "--workspace", str(root), "people", "list")
    assert code == 2
    assert "facefleet.yaml: not UTF-8 text (byte 0xf6 at offset 21)" in err
    assert err.count("\n") == 1


def test_bad_value_in_a_subprocess_has_no_traceback(tmp_path):
    root = _ws(tmp_path, "quality: {min_face_px: abc}\n")
    out = subprocess.run(
        [sys.executable, "-m", "facefleet.cli.main", "--workspace", str(root), "people", "list"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().endswith("quality.min_face_px must be an integer, got 'abc'")


@pytest.mark.parametrize(
    ("version_yaml", "message"),
    [
        (
            b"parameters:\n  gamma: [.nan]\n",
            "'parameters.gamma' values must be finite positive numbers",
        ),
        (b"parameters:\n  C: [1, .inf]\n", "'parameters.C' values must be finite positive numbers, got inf"),
        (
            b"parameters:\n  n_jobs: 100000\n",
            "'parameters.n_jobs' must be an integer from 1 to 64",
        ),
        (
            b"outputs:\n  model_name: '..'\n",
            "'outputs.model_name' must be 1-64 letters, digits",
        ),
        (b"outputs:\n  model_name: a/b\n", "starting with a letter or digit; got 'a/b'"),
        (b"parameters:\n  method: svm\n  \xff\xfe: 1\n", "not UTF-8 text (byte 0xff at offset 28)"),
    ],
)
def test_bad_version_yaml_is_one_line(tmp_path, capsys, version_yaml, message):
    root = _ws(tmp_path)
    cfg = tmp_path / "gamma4.yaml"
    cfg.write_bytes(version_yaml)
    code, err = _cli(capsys, "--workspace", str(root), "train", "--config", str(cfg))
    assert code == 2
    assert message in err and "gamma4.yaml" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (root / "mlflow.db").exists()  # refused before any run started


def test_n_jobs_flag_is_capped_too(tmp_path, capsys):
    code, err = _cli(capsys, "--workspace", str(_ws(tmp_path)), "train", "--n-jobs", "1000")
    assert code == 2 and "'parameters.n_jobs' must be an integer from 1 to 64, got 1000" in err


def test_settings_of_a_constructed_workspace_are_checked_on_use(tmp_path):
    ws = Workspace(root=tmp_path, config={"identify": {"distance_threshold": "x"}})
    with pytest.raises(ConfigError, match="identify.distance_threshold"):
        ws.settings  # noqa: B018
