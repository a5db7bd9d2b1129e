"""Web console fixtures: a copy of the learning-loop workspace (tests/conftest.py: knn_examples
enrolled, a trained model, the pbs clip recognised on two cameras) with the clip's device
output collected and clustered, console users made with ``facefleet users add``, a real ``facefleet serve`` on
127.0.0.1, and headless Debian Chromium driven by Selenium."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from console_helpers import PASSWORDS, ROLES
from testkit import clone_workspace, known_hosts_for, start_sshd, write_inventory
from webkit import CHROMEDRIVER, CHROMIUM, chromium, serving

REPO = Path(__file__).resolve().parents[2]


def facefleet(ws_root: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "facefleet.cli.main", "-w", str(ws_root), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="session")
def console_devices(ssh_env, tmp_path_factory):
    """Two real sshd "cameras" on 127.0.0.1 for deployments started from the console."""
    _, key = ssh_env
    root = tmp_path_factory.mktemp("console-devices")
    devices = {}
    try:
        for name in ("gate-cam", "yard-cam"):
            devices[name] = start_sshd(name, root / name, key)
        yield devices, key
    finally:
        for dev in devices.values():
            dev.stop()


@pytest.fixture(scope="session")
def console_ws(tmp_path_factory, base_ws, camera_runs, console_devices):
    """A copy of the learning-loop workspace (knn_examples enrolled, v1 trained) with nothing
    collected yet (the curate tests may have run on the original), both cameras' pbs output
    collected and clustered, two sshd cameras in its inventory, and three users made with
    ``facefleet users add``."""
    import yaml

    from facefleet.curate import clusters as cl
    from facefleet.curate.collect import collect
    from facefleet.train.pipeline import current_embedder_id

    ws = clone_workspace(base_ws[0], tmp_path_factory.mktemp("console") / "ws")
    devices, key = console_devices
    write_inventory(ws.root / "inventory.yaml", {"cams": devices}, key)
    known = known_hosts_for(ws.root / "known_hosts", devices.values())
    cfg = yaml.safe_load(ws.config_path.read_text())
    cfg["fleet"] = {"inventory": "inventory.yaml", "known_hosts": str(known)}
    ws.config_path.write_text(yaml.safe_dump(cfg))
    ws = type(ws).open(ws.root)
    with ws.open_store() as store:
        store.ensure_schema(cl.SCHEMA)
        with store.transaction() as conn:
            conn.execute("DELETE FROM curate_cluster_members")
            conn.execute("DELETE FROM curate_clusters")
            conn.execute(
                "DELETE FROM faces WHERE image_id IN (SELECT id FROM images WHERE source LIKE 'collect:%')"
            )
            conn.execute("DELETE FROM images WHERE id NOT IN (SELECT image_id FROM faces)")
    assert collect(ws, list(camera_runs.values())).added
    emb = current_embedder_id(ws)
    with ws.open_store() as store:
        cl.update_clusters(store, emb)
        assert len(cl.clusters(store, emb)) >= 2, "the pbs clip should give two clusters or more"
    for name, role in ROLES.items():
        done = facefleet(
            ws.root, "users", "add", name, "--role", role, "--password-stdin", stdin=PASSWORDS[name]
        )
        assert done.returncode == 0, done.stderr
    done = facefleet(
        ws.root, "users", "add", "ada", "--role", "admin", "--password-stdin", stdin="another-pass"
    )
    assert done.returncode == 2 and "already exists" in done.stderr
    return ws


@pytest.fixture(scope="session")
def server(console_ws, tmp_path_factory):
    """``facefleet serve`` on a free loopback port; yields its base URL."""
    with serving(console_ws.root, tmp_path_factory.mktemp("serve") / "serve.log") as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium with a fresh profile."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("chromium and chromium-driver are needed (scripts/setup.sh installs them)")
    with chromium("1400,1000") as driver:
        yield driver
