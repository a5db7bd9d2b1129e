"""Shared fixtures: the real test data beside the repository and enrolled workspaces.

Enrolment is the slow part (~0.1-0.3 s a photo), so enrolled workspaces are built once per
session; a test that changes one works on a copy (``copy_workspace``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

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
    from facefleet.workspace import Workspace

    def _copy(ws) -> Workspace:
        target = tmp_path / "ws"
        shutil.copytree(ws.root, target, ignore=shutil.ignore_patterns("*.db-wal", "*.db-shm"))
        # the WAL holds committed pages: checkpoint through sqlite by copying the database properly
        import sqlite3

        src = sqlite3.connect(ws.store_path)
        dst = sqlite3.connect(target / "facefleet.db")
        src.backup(dst)
        src.close()
        dst.close()
        return Workspace.open(target)

    return _copy
