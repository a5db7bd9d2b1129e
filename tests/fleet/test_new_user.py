"""What a new user tripped over with the fleet commands (issue 15), run through ``facefleet``."""

from __future__ import annotations

import shutil
from pathlib import Path

from facefleet.cli.main import main

EXAMPLE_INVENTORY = Path(__file__).resolve().parents[2] / "docs" / "examples" / "inventory.yaml"


def test_relative_inventory_is_read_from_the_current_folder(workspace, tmp_path, monkeypatch, capsys):
    """Item 6: ``--inventory my.yaml`` is the file here, not <workspace>/my.yaml."""
    here = tmp_path / "elsewhere"
    here.mkdir()
    shutil.copy(EXAMPLE_INVENTORY, here / "my.yaml")
    monkeypatch.chdir(here)
    assert main(["-w", str(workspace.root), "fleet", "status", "--inventory", "my.yaml"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert listed == ["frontdoor", "garage", "jetson1", "sink1"]
    # the workspace's configured inventory stays relative to the workspace
    shutil.copy(EXAMPLE_INVENTORY, workspace.root / "fleet.yaml")
    cfg = workspace.root / "facefleet.yaml"
    cfg.write_text(cfg.read_text() + "\nfleet:\n  inventory: fleet.yaml\n")
    assert main(["-w", str(workspace.root), "fleet", "status"]) == 0
    assert "garage" in capsys.readouterr().out
