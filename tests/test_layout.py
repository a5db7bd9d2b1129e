"""The model-folder layout: the Python rules and the generated shell give the same folder."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from facefleet import layout
from facefleet.errors import DeployError
from facefleet.fleet.package import render_install_sh


def _model_dir(root: Path, versions: range) -> Path:
    mdir = root / "models" / "face_model"
    for v in versions:
        (mdir / str(v)).mkdir(parents=True)
        (mdir / str(v) / "manifest.json").write_text("{}")
    return mdir


def _sh(script: str, **env: str) -> str:
    out = subprocess.run(
        ["sh", "-eu", "-c", script],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout


def _snapshot(mdir: Path) -> dict:
    links = {p.name: os.readlink(p) for p in mdir.iterdir() if p.is_symlink()}
    dirs = sorted(p.name for p in mdir.iterdir() if p.is_dir() and not p.is_symlink())
    return {"links": links, "dirs": dirs}


def _python_steps(mdir: Path, keep: int) -> None:
    for v in (2, 3, 5, 5, 4):
        layout.switch(mdir, v)
    layout.prune(mdir, keep)


def _shell_steps(mdir: Path, keep: int) -> None:
    for v in (2, 3, 5, 5, 4):
        _sh(layout.sh_switch("MDIR", "VERSION"), MDIR=str(mdir), VERSION=str(v))
    _sh(layout.sh_prune("MDIR", "KEEP"), MDIR=str(mdir), KEEP=str(keep))


@pytest.mark.parametrize("keep", [1, 2, 3, 9])
def test_switch_and_prune_agree(tmp_path: Path, keep: int) -> None:
    py = _model_dir(tmp_path / "py", range(1, 7))
    sh = _model_dir(tmp_path / "sh", range(1, 7))
    _python_steps(py, keep)
    _shell_steps(sh, keep)
    assert _snapshot(py) == _snapshot(sh)
    assert layout.state(py.parent, "face_model") == layout.state(sh.parent, "face_model")
    assert layout.state(py.parent, "face_model")["current"] == 4
    assert layout.state(py.parent, "face_model")["previous"] == 5


def test_remote_commands_agree(tmp_path: Path) -> None:
    """What deploy runs over SSH: set links, roll back, list and prune."""
    py = _model_dir(tmp_path / "py", range(1, 6))
    sh = _model_dir(tmp_path / "sh", range(1, 6))
    layout.switch(py, 3)
    layout.switch(py, 4)
    assert layout.rollback(py) == (4, 3)
    doomed_py = layout.prune(py, 1)
    for link, target in ((layout.CURRENT, 3), (layout.PREVIOUS, None), (layout.PREVIOUS, 4)):
        _sh(layout.sh_set_link(str(sh), link, target))
    assert layout.parse_links(_sh(layout.sh_read_links(str(sh)))) == (3, 4)
    doomed_sh = layout.prune_from_listing(_sh(layout.sh_list(str(sh))), 1)
    _sh(layout.sh_remove(str(sh), doomed_sh))
    assert doomed_py == doomed_sh == [1, 2]
    assert _snapshot(py) == _snapshot(sh)


def test_install_sh_uses_the_layout_rules() -> None:
    script = render_install_sh("face_model", 3, "gamma3", "face_model-3.tar.gz")
    assert layout.sh_switch("MDIR", "VERSION") in script
    assert layout.sh_prune("MDIR", "KEEP") in script
    assert "@" + "SWITCH@" not in script and layout.TMP_PREFIX in script


def test_rules() -> None:
    assert layout.versions_to_prune([1, 2, 3, 4], 2, [1, None]) == [2]
    with pytest.raises(DeployError):
        layout.versions_to_prune([1], 0, [])
    assert layout.parse_links("\n|\n") == (None, None)
