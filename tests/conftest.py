"""Shared fixtures: the real test data beside the repository and enrolled workspaces.

Enrolment is the slow part (~0.1-0.3 s a photo), so enrolled workspaces are built once per
session; a test that changes one works on a copy (``copy_workspace``). The learning-loop
fixtures (``base_ws``: knn_examples enrolled and v1 at @production; ``camera_runs``: the pbs
clip recognised on two cameras) are shared by the curate and web console tests.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from testkit import SSH_KEYGEN, SSHD, Device, camera_run, clone_workspace, keygen, start_sshd

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("FACEFLEET_NO_PROGRESS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FACEFLEET_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "faces").is_dir():
        pytest.fail(f"test data not found at {SHARED_DATA}: ../shared/data must sit beside the repository")
    return SHARED_DATA


@pytest.fixture(scope="session")
def faces_dir(shared_data: Path) -> Path:
    return shared_data / "faces"


def _enrolled(root: Path, folders: list[Path]):
    from facefleet.enrol import enroll, plan_folder
    from facefleet.workspace import Workspace

    ws = Workspace.init(root)
    items = [item for folder in folders for item in plan_folder(folder)]
    report = enroll(ws, items)
    return ws, report


@pytest.fixture(scope="session")
def celebrity_workspace(tmp_path_factory, faces_dir):
    """five_celebrity/train enrolled (read-only: copy it before changing anything)."""
    ws, _ = _enrolled(tmp_path_factory.mktemp("celebrity"), [faces_dir / "five_celebrity" / "train"])
    return ws


@pytest.fixture(scope="session")
def celebrity_enrolment(celebrity_workspace, faces_dir):
    """The enrolment report of five_celebrity/train (a second, fully cached, pass)."""
    from facefleet.enrol import enroll, plan_folder

    return enroll(celebrity_workspace, plan_folder(faces_dir / "five_celebrity" / "train"))


@pytest.fixture(scope="session")
def celebrity_orl_workspace(tmp_path_factory, faces_dir):
    """five_celebrity/train + ORL photos 1-7 of each of the 40 subjects (8-10 held out)."""
    from facefleet.enrol import enroll, plan_folder
    from facefleet.workspace import Workspace

    ws = Workspace.init(tmp_path_factory.mktemp("celebrity_orl"))
    items = plan_folder(faces_dir / "five_celebrity" / "train")
    items += [(f"orl_{n}", p) for n, p in plan_folder(faces_dir / "orl") if int(p.stem) <= 7]
    enroll(ws, items)
    return ws


@pytest.fixture(scope="session")
def knn_workspace(tmp_path_factory, faces_dir):
    """One to two photos each of five people (few-shot)."""
    ws, _ = _enrolled(tmp_path_factory.mktemp("knn"), [faces_dir / "examples" / "knn_examples" / "train"])
    return ws


@pytest.fixture
def copy_workspace(tmp_path):
    """Copy a session workspace so a test may change it."""
    return lambda ws: clone_workspace(ws, tmp_path / "ws")


@pytest.fixture(scope="session")
def ssh_env(tmp_path_factory):
    """A client key pair for the SSH tests; skips without OpenSSH's sshd (scripts/setup.sh
    installs it)."""
    if not SSHD.exists() or SSH_KEYGEN is None:
        pytest.skip("OpenSSH server not installed (/usr/sbin/sshd): apt-get install openssh-server")
    base = tmp_path_factory.mktemp("ssh")
    return base, keygen(base / "client_key")


@pytest.fixture
def start_device(ssh_env, tmp_path):
    """Factory: start a real sshd for a named device; all stopped at teardown."""
    _, client_key = ssh_env
    started: list[Device] = []

    def start(name: str) -> Device:
        device = start_sshd(name, tmp_path / "devices" / name, client_key)
        started.append(device)
        return device

    yield start
    for device in started:
        device.stop()
        # undo chattr +i (the read-only device test) so pytest can remove the temp folder
        if device.models_dir.exists():
            for path in [device.models_dir, *device.models_dir.rglob("*")]:
                subprocess.run(["chattr", "-i", str(path)], capture_output=True)


# -- the learning loop (curate and web tests) ---------------------------------------------
@pytest.fixture(scope="session")
def base_ws(tmp_path_factory, shared_data: Path):
    """(workspace, TrainResult v1 "base" at @production): five knn_examples people."""
    from facefleet.enrol import enroll, plan_folder
    from facefleet.registry.keys import generate_keypair
    from facefleet.registry.versions import promote
    from facefleet.train.config import load_config
    from facefleet.train.pipeline import train
    from facefleet.workspace import Workspace

    ws = Workspace.init(tmp_path_factory.mktemp("curate") / "ws")
    report = enroll(ws, plan_folder(shared_data / "faces/examples/knn_examples/train"))
    assert all(o.accepted for o in report.outcomes)
    generate_keypair(ws.keys_dir)
    config = load_config(workspace_train=None)
    config.name = "base"
    first = train(ws, config)
    promote(ws, first.version, "production", why="first model")
    return ws, first


@pytest.fixture(scope="session")
def camera_runs(base_ws, tmp_path_factory, shared_data: Path):
    """Two device folders (cam1, cam2: different crop margins) after recognising the pbs
    clip with model v1: ``<dev>/output/events.jsonl`` and ``<dev>/few_shot_examples/unknown``."""
    ws, first = base_ws
    root = tmp_path_factory.mktemp("devices")
    devices = {}
    clip = shared_data / "video/pbs_whitehouse_meeting_17s.mp4"
    for name, margin in (("cam1", 0.25), ("cam2", 0.4)):
        dev = root / name
        # the scenes these tests were written on (HOG every 3rd frame)
        summary = camera_run(ws, first, clip, dev, margin=margin, detector="hog")
        assert summary.unknown_saved >= 2, (name, summary.unknown_saved)
        devices[name] = dev
    return devices
