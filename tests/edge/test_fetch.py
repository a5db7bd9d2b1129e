"""--fetch-model against a real OpenSSH server on 127.0.0.1: key auth, known_hosts checked,
bundle verified before it is installed."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from facefleet.edge.fetch import fetch_model
from facefleet.edge.model import install_version, resolve_model
from facefleet.errors import BundleError, DeployError
from facefleet.registry.keys import load_public_key

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = shutil.which("ssh-keygen")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"sshd not listening on 127.0.0.1:{port}")


@pytest.fixture
def server(tmp_path, edge_ws):
    """A training server: sshd on loopback whose models folder holds version 1 as current."""
    if not SSHD.exists() or SSH_KEYGEN is None:
        pytest.skip("OpenSSH server not installed (/usr/sbin/sshd)")
    ws, first = edge_ws
    etc = tmp_path / "etc"
    etc.mkdir()
    client_key = tmp_path / "client_key"
    host_key = etc / "host_ed25519"
    for key in (client_key, host_key):
        subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    shutil.copy(f"{client_key}.pub", etc / "authorized_keys")
    port = _free_port()
    cfg = etc / "sshd_config"
    cfg.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}",
        f"AuthorizedKeysFile {etc / 'authorized_keys'}", f"PidFile {etc / 'sshd.pid'}",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes", "UsePAM no", "StrictModes no", "PermitRootLogin yes",
        "Subsystem sftp internal-sftp", "LogLevel ERROR", "",
    ]))
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    remote = tmp_path / "server_models"
    model_dir = remote / first.model
    model_dir.mkdir(parents=True)
    shutil.copytree(first.bundle_dir, model_dir / str(first.version))
    install_version(model_dir, str(first.version))
    known = tmp_path / "known_hosts"
    pub = Path(f"{host_key}.pub").read_text().split()[:2]
    known.write_text(f"[127.0.0.1]:{port} {pub[0]} {pub[1]}\n")
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port)
        yield {"port": port, "key": client_key, "known": known, "remote": remote,
               "model_dir": model_dir, "ws": ws, "first": first}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _fetch(server, local: Path, **kw):
    ws = server["ws"]
    return fetch_model(
        "127.0.0.1", os.environ.get("USER") or "root",
        models_dir=local, model=server["first"].model,
        public_key=load_public_key(ws.keys_dir / "signing_key.pub.pem"),
        remote_dir=str(server["remote"]), port=server["port"],
        known_hosts=kw.get("known", server["known"]), client_keys=[server["key"]], timeout=10,
    )


def test_fetch_installs_current_version(server, tmp_path):
    local = tmp_path / "device_models"
    installed = _fetch(server, local)
    first = server["first"]
    model_dir = local / first.model
    assert installed == model_dir / str(first.version)
    assert os.readlink(model_dir / "current") == str(first.version)
    assert resolve_model(model_dir) == installed.resolve()
    assert sorted(p.name for p in installed.iterdir()) == sorted(
        p.name for p in first.bundle_dir.iterdir())
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")]  # no leftovers


def test_fetch_refuses_tampered_bundle_and_keeps_old(server, tmp_path):
    local = tmp_path / "device_models"
    _fetch(server, local)
    first = server["first"]
    remote_v = server["model_dir"] / "7"
    shutil.copytree(first.bundle_dir, remote_v)
    manifest = remote_v / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"version": 1', '"version": 7'))
    install_version(server["model_dir"], "7")
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
