"""Edge fixtures: a workspace with Lin-Manuel Miranda and the knn_examples people enrolled,
a signing key, and bundles trained through facefleet.train (built once per session)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def _train(ws, name: str):
    from facefleet.train.config import load_config
    from facefleet.train.pipeline import train

    config = load_config(workspace_train=ws.settings.train or None)
    config.name = name
    return train(ws, config)


@pytest.fixture(scope="session")
def edge_ws(tmp_path_factory, shared_data: Path):
    """(workspace, first TrainResult): version 1 installed as models/<model>/current."""
    from facefleet.enrol import enroll, plan_folder
    from facefleet.layout import switch
    from facefleet.registry.keys import generate_keypair
    from facefleet.workspace import Workspace

    ws = Workspace.init(tmp_path_factory.mktemp("edge"))
    items = [("lin_manuel_miranda", shared_data / "faces/examples/lin-manuel-miranda.png")]
    items += plan_folder(shared_data / "faces/examples/knn_examples/train")
    report = enroll(ws, items)
    assert all(o.accepted for o in report.outcomes), report.outcomes
    generate_keypair(ws.keys_dir)
    first = _train(ws, "edge-one")
    switch(first.bundle_dir.parent, first.bundle_dir.name)
    return ws, first


@pytest.fixture(scope="session")
def second_bundle(edge_ws):
    """A second trained version of the same model (not installed as current)."""
    ws, _ = edge_ws
    return _train(ws, "edge-two")


@pytest.fixture
def device_models(edge_ws, tmp_path):
    """A device-style models folder (copy): <tmp>/models/<model>/{1, current -> 1}."""
    ws, first = edge_ws
    from facefleet.layout import switch

    model_dir = tmp_path / "models" / first.model
    model_dir.mkdir(parents=True)
    shutil.copytree(first.bundle_dir, model_dir / str(first.version))
    switch(model_dir, str(first.version))
    return model_dir


@pytest.fixture(scope="session")
def hamilton(shared_data: Path) -> Path:
    return shared_data / "video" / "short_hamilton_clip.mp4"


@pytest.fixture(scope="session")
def pbs(shared_data: Path) -> Path:
    return shared_data / "video" / "pbs_whitehouse_meeting_17s.mp4"
