"""--fetch-model against a real OpenSSH server on 127.0.0.1: key auth, known_hosts checked,
bundle verified before it is installed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from facefleet.edge.fetch import fetch_model
from facefleet.edge.model import resolve_model
from facefleet.errors import BundleError, DeployError
from facefleet.layout import switch
from facefleet.registry.keys import load_public_key


@pytest.fixture
def server(start_device, ssh_env, tmp_path, edge_ws):
    """A training server: a real sshd on loopback whose models folder holds version 1 as
    current."""
    ws, first = edge_ws
    device = start_device("server")
    model_dir = device.models_dir / first.model
    model_dir.mkdir(parents=True)
    shutil.copytree(first.bundle_dir, model_dir / str(first.version))
    switch(model_dir, str(first.version))
    known = tmp_path / "known_hosts"
    known.write_text(device.host_key_line)
    yield {
        "port": device.port,
        "key": ssh_env[1],
        "known": known,
        "remote": device.models_dir,
        "model_dir": model_dir,
        "ws": ws,
        "first": first,
    }


def _fetch(server, local: Path, **kw):
    ws = server["ws"]
    return fetch_model(
        "127.0.0.1",
        os.environ.get("USER") or "root",
        models_dir=local,
        model=server["first"].model,
        public_key=load_public_key(ws.keys_dir / "signing_key.pub.pem"),
        remote_dir=str(server["remote"]),
        port=server["port"],
        known_hosts=kw.get("known", server["known"]),
        client_keys=[server["key"]],
        timeout=10,
    )


def test_fetch_installs_current_version(server, tmp_path):
    local = tmp_path / "device_models"
    installed = _fetch(server, local)
    first = server["first"]
    model_dir = local / first.model
    assert installed == model_dir / str(first.version)
    assert os.readlink(model_dir / "current") == str(first.version)
    assert resolve_model(model_dir) == installed.resolve()
    assert sorted(p.name for p in installed.iterdir()) == sorted(p.name for p in first.bundle_dir.iterdir())
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")]  # no leftovers


def test_fetch_refuses_tampered_bundle_and_keeps_old(server, tmp_path):
    local = tmp_path / "device_models"
    _fetch(server, local)
    first = server["first"]
    remote_v = server["model_dir"] / "7"
    shutil.copytree(first.bundle_dir, remote_v)
    manifest = remote_v / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"version": 1', '"version": 7'))
    switch(server["model_dir"], "7")
    with pytest.raises(BundleError, match="refused.*signature"):
        _fetch(server, local)
    model_dir = local / first.model
    assert os.readlink(model_dir / "current") == str(first.version)
    assert not (model_dir / "7").exists()
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")]


def test_fetch_refuses_unknown_host(server, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(DeployError, match="cannot connect"):
        _fetch(server, tmp_path / "device_models", known=empty)
