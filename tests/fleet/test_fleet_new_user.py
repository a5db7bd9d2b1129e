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


def test_new_host_keys_are_recorded_per_address_and_port_once(
    start_device, ssh_env, workspace, bundle_factory, tmp_path, capsys
):
    """Item 9: several inventory hosts on one address (two devices on two ports, and a second
    name for one of them) all deploy with ``--accept-new-host-keys``; one line per device."""
    from testkit import write_inventory

    _, key = ssh_env
    cam1, cam2 = start_device("cam1"), start_device("cam2")
    groups = {"sentinels": {"cam1": cam1, "cam1b": cam1, "cam2": cam2}}
    overrides = {"cam1b": {"facefleet_models_dir": str(cam1.root / "models_b")}}
    inv = write_inventory(tmp_path / "inventory.yaml", groups, key, overrides)
    known = tmp_path / "known_hosts"  # empty: every key is new
    bundle_factory(1)
    args = ["-w", str(workspace.root), "deploy", "1", "--inventory", str(inv), "--known-hosts", str(known)]
    code = main([*args, "--accept-new-host-keys", "--parallel", "3"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "impostor" not in out
    lines = known.read_text().splitlines()
    assert sorted(line.split()[0] for line in lines) == sorted(f"[127.0.0.1]:{d.port}" for d in (cam1, cam2))
    assert {line.split()[2] for line in lines} == {d.host_key_line.split()[2] for d in (cam1, cam2)}
    # recorded once: a second deploy checks against them and adds nothing
    assert main([*args, "--accept-new-host-keys"]) == 0
    assert known.read_text().splitlines() == lines
