"""The fleet commands end to end through ``facefleet`` (the same API a Python user calls)."""

from __future__ import annotations

import os

from testkit import known_hosts_for, write_inventory

from facefleet.cli.main import main


def test_cli_deploy_status_history_tokens(start_device, ssh_env, workspace, bundle_factory, tmp_path, capsys):
    _, key = ssh_env
    cams = {n: start_device(n) for n in ("cam1", "cam2")}
    sinks = {"sink1": start_device("sink1")}
    known = known_hosts_for(tmp_path / "known_hosts", [*cams.values(), *sinks.values()])
    inv = write_inventory(workspace.root / "inventory.yaml", {"sentinels": cams, "datasinks": sinks}, key)
    bundle = bundle_factory(1)
    ws = ["-w", str(workspace.root)]
    assert main([*ws, "deploy", str(bundle), "--known-hosts", str(known), "--parallel", "2"]) == 0
    out = capsys.readouterr().out
    assert "cam1" in out and "- -> v1" in out and "ok" in out
    assert os.readlink(cams["cam2"].models_dir / "face_model" / "current") == "1"

    cams["cam2"].stop()
    # no v2 yet: a clear error (status 2), nothing touched
    code = main([*ws, "deploy", "2", "--inventory", str(inv), "--known-hosts", str(known)])
    err = capsys.readouterr().err
    assert code == 2 and "v2" in err, err
    bundle_factory(2)
    code = main([*ws, "deploy", "2", "--known-hosts", str(known), "--group", "sentinels"])
    out = capsys.readouterr().out
    assert code == 1 and "1 of 2 host(s) failed: cam2" in out

    assert main([*ws, "fleet", "status"]) == 0
    status = capsys.readouterr().out
    assert "cam1" in status and "v2" in status and "failed" in status
    assert main([*ws, "fleet", "history", "--host", "cam2"]) == 0
    history = capsys.readouterr().out
    assert "-> v2" in history and "failed: ssh" in history

    assert main([*ws, "tokens", "create", "cam1"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("fft_")
    assert main([*ws, "tokens", "list"]) == 0
    listed = capsys.readouterr().out
    assert "cam1\tactive" in listed and token not in listed
    assert main([*ws, "tokens", "revoke", "cam1"]) == 0
    assert main([*ws, "tokens", "revoke", "cam1"]) == 2


def test_cli_bad_inventory_is_a_clear_error(workspace, bundle_factory, capsys):
    (workspace.root / "inventory.yaml").write_text("all:\n  children:\n    cams: [1, 2]\n")
    code = main(["-w", str(workspace.root), "deploy", str(bundle_factory(1))])
    err = capsys.readouterr().err
    assert code == 2 and "all.children.cams: expected a mapping" in err
