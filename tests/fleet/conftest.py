"""Fixtures for fleet tests: real OpenSSH servers on loopback standing for devices, a workspace
with signing keys, and signed bundles built with the real bundle API."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from fleet_helpers import free_port, make_bundle

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = shutil.which("ssh-keygen")


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


@dataclass
class Device:
    """One sshd on loopback with its own models dir."""

    name: str
    root: Path
    port: int
    proc: subprocess.Popen | None
    host_key_line: str

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def restarts(self) -> Path:
        return self.root / "restarts.log"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def ssh_env(tmp_path_factory):
    """The client key pair and a folder for known_hosts; skips without OpenSSH's sshd."""
    if not SSHD.exists() or SSH_KEYGEN is None:
        pytest.skip("OpenSSH server not installed (/usr/sbin/sshd): apt-get install openssh-server")
    base = tmp_path_factory.mktemp("ssh")
    key = base / "client_key"
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation dir
    return base, key


@pytest.fixture
def start_device(ssh_env, tmp_path):
    """Factory: start a real sshd for a named device; all stopped at teardown."""
    base, client_key = ssh_env
    started: list[Device] = []

    def start(name: str) -> Device:
        root = tmp_path / "devices" / name
        etc = root / "etc"
        etc.mkdir(parents=True)
        (root / "models").mkdir()
        host_key = etc / "host_ed25519"
        subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)],
                       check=True)
        shutil.copy(f"{client_key}.pub", etc / "authorized_keys")
        port = free_port()
        cfg = etc / "sshd_config"
        cfg.write_text("\n".join([
            f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}",
            f"AuthorizedKeysFile {etc / 'authorized_keys'}", f"PidFile {etc / 'sshd.pid'}",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes", "UsePAM no", "StrictModes no", "PermitRootLogin yes",
            "Subsystem sftp internal-sftp", "LogLevel ERROR", "",
        ]))
        with open(etc / "sshd.log", "wb") as errlog:
            proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(cfg), "-p", str(port)],
                                    stdout=subprocess.DEVNULL, stderr=errlog)
        dev = Device(name, root, port, proc, "")
        started.append(dev)
        wait_port(port)
        pub = (Path(f"{host_key}.pub").read_text().split())[:2]
        dev.host_key_line = f"[127.0.0.1]:{port} {pub[0]} {pub[1]}\n"
        return dev

    yield start
    for dev in started:
        dev.stop()
        # undo chattr +i so pytest can remove the temp folder
        for path in dev.models_dir.rglob("*") if dev.models_dir.exists() else []:
            subprocess.run(["chattr", "-i", str(path)], capture_output=True)
        subprocess.run(["chattr", "-i", str(dev.models_dir)], capture_output=True)


@pytest.fixture
def workspace(tmp_path):
    from facefleet.registry.keys import generate_keypair
    from facefleet.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws")
    generate_keypair(ws.keys_dir)
    return ws


@pytest.fixture
def bundle_factory(workspace):
    return lambda version, **kw: make_bundle(workspace, version, **kw)
