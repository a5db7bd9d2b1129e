"""Version YAML: the shipped example loads; bad files and values give clear ConfigErrors."""

from __future__ import annotations

from pathlib import Path

import pytest

from facefleet.errors import ConfigError
from facefleet.train.config import load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "gamma4.yaml"


def test_example_loads_and_flags_override():
    cfg = load_config(EXAMPLE)
    assert cfg.name == "gamma4" and cfg.model_name == "face_model"
    assert cfg.search.C == (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
    assert cfg.search.gamma == (0.1, 0.01, 0.001, 0.0001, 0.00001)
    assert cfg.open_set.target_far == 0.01 and cfg.open_set.max_threshold == 0.6
    assert cfg.open_set.margin == 0.6
    assert "gamma4" in cfg.source
    over = load_config(EXAMPLE, name="gamma5", method="centroid", target_far=0.001)
    assert (over.name, over.search.method, over.open_set.target_far) == ("gamma5", "centroid", 0.001)
    assert over.search.C == cfg.search.C
    assert load_config(None).name is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("parameters: [unclosed\n", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        ("paramaters: {}\n", "unknown section"),
        ("parameters: {kernal: [rbf]}\n", "unknown key.*kernal"),
        ("parameters: {C: [1, -2]}\n", "positive numbers"),
        ("parameters: {C: fast}\n", "non-empty list"),
        ("parameters: {kernels: [poly]}\n", "rbf and/or linear"),
        ("parameters: {cv_folds: 1}\n", "integer >= 2"),
        ("parameters: {method: magic}\n", "method"),
        ("parameters: {open_set: {target_far: 5}}\n", r"\[0, 1\)"),
        ("parameters: {open_set: {min_threshold: 0.3}}\n", "no longer used.*open-set score"),
        ("parameters: {open_set: {target_frr: 0.05}}\n", "no longer used.*target_far"),
        ("parameters: {open_set: {margin: 2}}\n", r"\[0, 1\]"),
        ("inputs: {statuses: [approved]}\n", "statuses"),
        ("inputs: {negatives: 'yes'}\n", "true or false"),
        ("outputs: {name: a/b}\n", "plain name"),
    ],
)
def test_bad_files_give_clear_errors(tmp_path, text, message):
    path = tmp_path / "v.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_missing_file_and_bad_flag(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="command-line options"):
        load_config(None, cv_folds=0)
