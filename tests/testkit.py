"""Helpers the test folders share: free loopback ports, real OpenSSH servers standing for
devices with their inventory and known_hosts, a camera's run of a clip, and consistent
copies of workspaces.
(Fixtures built on them live in conftest.py.)"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = shutil.which("ssh-keygen")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


def keygen(path: Path) -> Path:
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@dataclass
class Device:
    """One real sshd on 127.0.0.1 (key auth for one client key) with its own models dir."""

    name: str
    root: Path
    port: int
    proc: subprocess.Popen | None
    host_key_line: str  # its line for a known_hosts file

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


def start_sshd(name: str, root: Path, client_key: Path) -> Device:
    """Start sshd for a device rooted at ``root``; returns once it listens."""
    etc = root / "etc"
    etc.mkdir(parents=True)
    (root / "models").mkdir()
    host_key = keygen(etc / "host_ed25519")
    shutil.copy(f"{client_key}.pub", etc / "authorized_keys")
    port = free_port()
    cfg = etc / "sshd_config"
    cfg.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"AuthorizedKeysFile {etc / 'authorized_keys'}",
                f"PidFile {etc / 'sshd.pid'}",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "UsePAM no",
                "StrictModes no",
                "PermitRootLogin yes",
                "Subsystem sftp internal-sftp",
                "LogLevel ERROR",
                "",
            ]
        )
    )
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation dir
    with open(etc / "sshd.log", "wb") as errlog:
        proc = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(cfg), "-p", str(port)], stdout=subprocess.DEVNULL, stderr=errlog
        )
    device = Device(name, root, port, proc, "")
    try:
        wait_port(port)
    except RuntimeError:
        device.stop()
        raise
    kind, key = Path(f"{host_key}.pub").read_text().split()[:2]
    device.host_key_line = f"[127.0.0.1]:{port} {kind} {key}\n"
    return device


def clone_workspace(ws, target: Path):
    """A consistent copy of a workspace: files, plus the store and MLflow databases through
    sqlite's backup (their WAL may hold committed pages a file copy would miss)."""
    from facefleet.workspace import Workspace

    shutil.copytree(ws.root, target, ignore=shutil.ignore_patterns("*.db-wal", "*.db-shm", "*.lock"))
    for name in ("facefleet.db", "mlflow.db"):
        if (ws.root / name).exists():
            src, dst = sqlite3.connect(ws.root / name), sqlite3.connect(target / name)
            src.backup(dst)
            src.close()
            dst.close()
    return Workspace.open(target)


def write_inventory(
    path: Path, groups: dict[str, dict], key: Path, overrides: dict[str, dict] | None = None
) -> Path:
    """An Ansible-shaped inventory for ``groups`` of devices; restart/health write markers."""
    children = {}
    for group, devices in groups.items():
        hosts = {}
        for name, dev in devices.items():
            hv = {
                "ansible_host": "127.0.0.1",
                "ansible_port": dev.port,
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(key),
                "facefleet_models_dir": str(dev.models_dir),
                "facefleet_restart": f'echo "$FACEFLEET_VERSION" >> {dev.restarts}',
            }
            hv.update((overrides or {}).get(name, {}))
            hosts[name] = hv
        gvars = {"facefleet_receives": "facelist" if group == "datasinks" else "bundle"}
        if group != "datasinks":
            gvars["facefleet_health"] = (
                'test -f "$FACEFLEET_MODELS_DIR/$FACEFLEET_MODEL/current/manifest.json"'
            )
        children[group] = {"vars": gvars, "hosts": hosts}
    data = {"all": {"vars": {"facefleet_keep": 2}, "children": children}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def known_hosts_for(path: Path, devices) -> Path:
    path.write_text("".join(d.host_key_line for d in devices))
    os.chmod(path, 0o600)
    return path


# -- processes ---------------------------------------------------------------------------------
def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a live process, None when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _proc_stat(int(entry.name))) is not None:
            children.setdefault(st[1], []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    """The pids still running (a zombie nobody reaps counts as gone)."""
    return {p for p in pids if (st := _proc_stat(p)) is not None and st[0] not in ("Z", "X")}


def wait_for(predicate, timeout: float, step: float = 0.1):
    """Poll ``predicate`` until it returns something truthy or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


# -- store consistency ------------------------------------------------------------------------
def store_counts(ws) -> dict[str, int]:
    """Rows per table, and the consistency checks (each 0 when consistent)."""
    conn = sqlite3.connect(ws.root / "facefleet.db")
    try:
        one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
        counts = {t: one(f"SELECT COUNT(*) FROM {t}") for t in ("people", "images", "faces", "embeddings")}
        counts["faces without embedding"] = one(
            "SELECT COUNT(*) FROM faces WHERE id NOT IN (SELECT face_id FROM embeddings)"
        )
        counts["images without face"] = one(
            "SELECT COUNT(*) FROM images WHERE id NOT IN (SELECT image_id FROM faces)"
        )
        paths = [r[0] for r in conn.execute("SELECT path FROM images")]
    finally:
        conn.close()
    counts["images missing on disk"] = sum(not Path(p).is_file() for p in paths)
    return counts


def consistent(counts: dict[str, int]) -> bool:
    return (
        counts["faces without embedding"] == 0
        and counts["images without face"] == 0
        and counts["images missing on disk"] == 0
    )


# -- bundles --------------------------------------------------------------------------------
def signed_bundle(
    ws, version: int, folder: Path | None = None, *, model: str = "face_model", name: str | None = None
) -> Path:
    """A small real signed bundle (two people, centroid method) written with the bundle API."""
    import numpy as np

    from facefleet.registry.format import write_bundle
    from facefleet.registry.keys import generate_keypair, load_private_key, private_key_path
    from facefleet.vision.embed import dlib_embedder_id

    if not private_key_path(ws.keys_dir).is_file():
        generate_keypair(ws.keys_dir)
    gallery = np.random.default_rng(version).normal(size=(4, 128)).astype(np.float32)
    manifest = {
        "format": 1,
        "model": model,
        "version": version,
        "name": name or f"gen{version}",
        "embedder_id": dlib_embedder_id(),  # install and package check the device has it
        "labels": ["alice", "bob"],
        "thresholds": {"alice": 0.6, "bob": 0.6},
        "method": "centroid",
        "metrics": {},
        "created": "2026-01-01T00:00:00+00:00",
    }
    arrays = {
        "gallery": gallery,
        "gallery_labels": np.array([0, 0, 1, 1], dtype=np.int32),
        "centroids": np.stack([gallery[:2].mean(0), gallery[2:].mean(0)]).astype(np.float32),
        "temperature": np.array(1.0, dtype=np.float32),
    }
    key = load_private_key(private_key_path(ws.keys_dir))
    out = folder or ws.models_dir / model / str(version)
    return write_bundle(out, manifest=manifest, arrays=arrays, private_key=key)


def camera_run(ws, trained, clip: Path, dev: Path, *, margin: float, detector: str | None = None):
    """A device folder ``dev`` that ran the clip with the trained version, as a camera does:
    the bundle installed under ``dev/models``, ``dev/output/events.jsonl`` and its unknown
    captures in ``dev/few_shot_examples/unknown`` (every new face kept). The run's summary."""
    from facefleet.edge.pipeline import PipelineConfig
    from facefleet.edge.recognize import RecognizeOptions, recognize
    from facefleet.edge.unknowns import UnknownConfig
    from facefleet.layout import switch

    models = dev / "models" / trained.model
    shutil.copytree(trained.bundle_dir, models / str(trained.version))
    switch(models, str(trained.version))
    return recognize(
        RecognizeOptions(
            source=str(clip),
            model=models,
            public_key=ws.keys_dir / "signing_key.pub.pem",
            output_dir=dev / "output",
            unknown_dir=dev / "few_shot_examples" / "unknown",
            display=False,
            cache_dir=ws.cache_dir,
            device=dev.name,
            **({"detector": detector} if detector else {}),
            pipeline=PipelineConfig(crop_margin=margin),
            unknowns=UnknownConfig(dedup_distance=0.25, min_interval=0.0),
        )
    )
