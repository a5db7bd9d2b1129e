"""Push deployment over real SSH (OpenSSH servers on loopback standing for devices)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from testkit import known_hosts_for, write_inventory

from facefleet import layout
from facefleet.errors import BundleError
from facefleet.fleet import records
from facefleet.fleet.deploy import deploy
from facefleet.fleet.inventory import load_inventory
from facefleet.registry.install import install


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_current(dev, version: int, model: str = "face_model") -> None:
    mdir = dev.models_dir / model
    assert os.readlink(mdir / "current") == str(version)
    manifest = json.loads((mdir / "current" / "manifest.json").read_text())
    assert manifest["version"] == version
    for name, digest in manifest["files"].items():
        assert sha(mdir / "current" / name) == digest
    assert not [p for p in mdir.iterdir() if p.name.startswith(".")], "temp files left behind"


def no_temp_dirs(dev) -> bool:
    return not [p for p in dev.models_dir.rglob(".*")]


@pytest.fixture
def fleet(start_device, ssh_env, tmp_path, workspace):
    _, key = ssh_env
    sentinels = {n: start_device(n) for n in ("cam1", "cam2", "cam3")}
    sinks = {"sink1": start_device("sink1")}
    known = known_hosts_for(tmp_path / "known_hosts", [*sentinels.values(), *sinks.values()])
    groups = {"sentinels": sentinels, "datasinks": sinks}
    inv = write_inventory(tmp_path / "inventory.yaml", groups, key)
    return {"ws": workspace, "groups": groups, "known": known, "inv": inv, "key": key, "tmp": tmp_path}


def test_deploy_to_all_then_update_keeps_previous(fleet, bundle_factory):
    ws, known = fleet["ws"], fleet["known"]
    sentinels, sinks = fleet["groups"]["sentinels"], fleet["groups"]["datasinks"]
    inv = load_inventory(fleet["inv"])
    b1 = bundle_factory(1)
    report = deploy(ws, inv, b1, known_hosts=known, parallel=3)
    assert [r.result for r in report.results] == ["ok"] * 4, report.results
    for dev in sentinels.values():
        assert_current(dev, 1)
        assert dev.restarts.read_text().split() == ["1"]
    sink = sinks["sink1"]
    assert os.readlink(sink.models_dir / "facelist_current.csv") == "facelist_1.csv"
    header = (sink.models_dir / "facelist_current.csv").read_text().splitlines()[0]
    assert header.startswith("date,event,timestamp,objid,source,status,name,proba")

    b2 = bundle_factory(2)
    report = deploy(ws, inv, b2.parent / "2", known_hosts=known)
    assert {r.host: (r.old, r.new, r.result) for r in report.results}["cam1"] == (1, 2, "ok")
    for dev in sentinels.values():
        assert_current(dev, 2)
        assert os.readlink(dev.models_dir / "face_model" / "previous") == "1"
    # keep N (2 in the inventory): a third version prunes v1, never current/previous
    deploy(ws, inv, bundle_factory(3), known_hosts=known)
    for dev in sentinels.values():
        assert sorted(p.name for p in (dev.models_dir / "face_model").iterdir()) == [
            "2",
            "3",
            "current",
            "previous",
        ]
    store = records.open_store(ws)
    try:
        rows = records.deployments(store, host="cam2")
    finally:
        store.close()
    assert [(r["old_version"], r["new_version"], r["result"]) for r in rows] == [
        (2, 3, "ok"),
        (1, 2, "ok"),
        (None, 1, "ok"),
    ]


def _immutable_supported(path: Path) -> bool:
    probe = path / "probe"
    probe.mkdir()
    try:
        if subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode != 0:
            return False
        try:
            (probe / "x").mkdir()
        except OSError:
            return True
        return False
    finally:
        subprocess.run(["chattr", "-i", str(probe)], capture_output=True)
        shutil.rmtree(probe, ignore_errors=True)


def test_faults_leave_failed_devices_on_their_previous_version(fleet, start_device, ssh_env, bundle_factory):
    ws, tmp = fleet["ws"], fleet["tmp"]
    _, key = ssh_env
    sentinels = dict(fleet["groups"]["sentinels"])
    sentinels["cam4"] = start_device("cam4")
    sentinels["cam5"] = start_device("cam5")
    groups = {"sentinels": sentinels, "datasinks": fleet["groups"]["datasinks"]}
    known = known_hosts_for(tmp / "known_hosts", [*sentinels.values(), *groups["datasinks"].values()])
    inv_path = write_inventory(tmp / "inventory.yaml", groups, key)
    first = deploy(ws, load_inventory(inv_path), bundle_factory(1), known_hosts=known)
    assert all(r.result == "ok" for r in first.results), first.results

    # cam2: sshd stopped. cam3: models folder made immutable (chattr +i: root ignores mode
    # bits, not the immutable flag), or failing that a models dir under a regular file.
    # cam4: restart command exits 1. cam5: the upload is corrupted in transit.
    sentinels["cam2"].stop()
    cam3_model = sentinels["cam3"].models_dir / "face_model"
    overrides: dict[str, dict] = {"cam4": {"facefleet_restart": "exit 1"}}
    if _immutable_supported(tmp):
        subprocess.run(["chattr", "+i", str(cam3_model)], check=True)
        cam3_mode = "immutable"
    else:
        blocker = sentinels["cam3"].root / "blocker"
        blocker.write_text("a file, not a folder")
        overrides["cam3"] = {"facefleet_models_dir": str(blocker / "models")}
        cam3_mode = "under-a-file"
    inv_path = write_inventory(tmp / "inventory.yaml", groups, key, overrides)

    def corrupt(host, remote_tmp):
        if host.name == "cam5":
            target = Path(remote_tmp) / "model.npz"
            data = bytearray(target.read_bytes())
            data[len(data) // 2] ^= 0xFF  # one flipped byte, as a bad link might do
            target.write_bytes(bytes(data))

    report = deploy(
        ws, load_inventory(inv_path), bundle_factory(2), known_hosts=known, upload_hook=corrupt, parallel=6
    )
    by_host = {r.host: r for r in report.results}
    assert by_host["cam1"].result == "ok" and by_host["sink1"].result == "ok"
    assert {h for h, r in by_host.items() if r.result == "failed"} == {"cam2", "cam3", "cam4", "cam5"}
    assert "ssh" in by_host["cam2"].error
    assert "restart command failed" in by_host["cam4"].error and by_host["cam4"].rolled_back
    assert "checksum" in by_host["cam5"].error
    assert_current(sentinels["cam1"], 2)
    for name in ("cam2", "cam3", "cam4", "cam5"):
        dev = sentinels[name]
        if name == "cam3" and cam3_mode == "immutable":
            subprocess.run(["chattr", "-i", str(cam3_model)], check=True)
        assert_current(dev, 1)
        assert no_temp_dirs(dev), name
        assert not (dev.models_dir / "face_model" / "2").exists(), name
    # cam4 restarted for v2, failed, was put back on v1 and restarted again
    assert sentinels["cam4"].restarts.read_text().split() == ["1"]
    assert sentinels["cam1"].restarts.read_text().split() == ["1", "2"]


def test_tampered_bundle_is_refused_before_any_host(fleet, bundle_factory):
    ws = fleet["ws"]
    bundle = bundle_factory(1)
    npz = bundle / "model.npz"
    npz.write_bytes(npz.read_bytes() + b"x")
    with pytest.raises(BundleError, match="checksum"):
        deploy(ws, load_inventory(fleet["inv"]), bundle, known_hosts=fleet["known"])
    for dev in fleet["groups"]["sentinels"].values():
        assert list(dev.models_dir.iterdir()) == []


def test_unknown_host_key_refused_then_accepted_and_recorded(fleet, bundle_factory, tmp_path):
    ws = fleet["ws"]
    inv = load_inventory(fleet["inv"])
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    report = deploy(ws, inv, bundle_factory(1), known_hosts=empty, host="cam1")
    assert report.results[0].result == "failed"
    assert "host key" in report.results[0].error
    report = deploy(ws, inv, bundle_factory(1), known_hosts=empty, host="cam1", accept_new_host_keys=True)
    assert report.results[0].result == "ok", report.results[0].error
    cam1 = fleet["groups"]["sentinels"]["cam1"]
    assert cam1.host_key_line.split()[2] in empty.read_text()
    # a wrong recorded key is never overwritten, even with accept-new
    cam2 = fleet["groups"]["sentinels"]["cam2"]
    wrong = cam2.host_key_line.replace(cam2.host_key_line.split()[2], cam1.host_key_line.split()[2])
    empty.write_text(wrong)
    report = deploy(ws, inv, bundle_factory(1), known_hosts=empty, host="cam2", accept_new_host_keys=True)
    assert report.results[0].result == "failed" and "impostor" in report.results[0].error


def test_dry_run_changes_nothing(fleet, bundle_factory):
    report = deploy(
        fleet["ws"],
        load_inventory(fleet["inv"]),
        bundle_factory(1),
        known_hosts=fleet["known"],
        dry_run=True,
        group="sentinels",
    )
    assert [r.result for r in report.results] == ["dry-run"] * 3
    for dev in fleet["groups"]["sentinels"].values():
        assert list(dev.models_dir.iterdir()) == []


def test_device_module_install_and_rollback_locally(workspace, bundle_factory, tmp_path):
    from facefleet.registry.format import pack_bundle
    from facefleet.registry.keys import load_public_key, public_key_path

    key = load_public_key(public_key_path(workspace.keys_dir))
    models = tmp_path / "dev"
    r1 = install(models, pack_bundle(bundle_factory(1), tmp_path / "b1.tar.gz"), key)
    r2 = install(models, bundle_factory(2), key)
    assert (r1.old_version, r2.old_version) == (None, 1)
    assert layout.state(models, "face_model")["current"] == 2
    assert layout.rollback(models / "face_model") == (2, 1)
    assert layout.state(models, "face_model") == {
        "model": "face_model",
        "current": 1,
        "previous": 2,
        "versions": [1, 2],
    }
    assert not [p for p in models.iterdir() if p.name.startswith(".")]
