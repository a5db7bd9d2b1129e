"""Curation fixtures: a workspace with the knn_examples people enrolled and a production model
(v1), and the pbs news clip run through ``recognize`` on two "cameras" (the expensive part,
done once per session). The SSH fixtures come from tests/conftest.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


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
    from facefleet.edge.pipeline import PipelineConfig
    from facefleet.edge.recognize import RecognizeOptions, recognize
    from facefleet.edge.unknowns import UnknownConfig
    from facefleet.layout import switch

    ws, first = base_ws
    root = tmp_path_factory.mktemp("devices")
    devices = {}
    for name, margin in (("cam1", 0.25), ("cam2", 0.4)):
        dev = root / name
        models = dev / "models" / first.model
        shutil.copytree(first.bundle_dir, models / str(first.version))
        switch(models, str(first.version))
        summary = recognize(
            RecognizeOptions(
                source=str(shared_data / "video/pbs_whitehouse_meeting_17s.mp4"),
                model=models,
                public_key=ws.keys_dir / "signing_key.pub.pem",
                output_dir=dev / "output",
                unknown_dir=dev / "few_shot_examples" / "unknown",
                display=False,
                cache_dir=ws.cache_dir,
                device=name,
                pipeline=PipelineConfig(crop_margin=margin),
                unknowns=UnknownConfig(dedup_distance=0.25, min_interval=0.0),
            )
        )
        assert summary.unknown_saved >= 2, (name, summary.unknown_saved)
        devices[name] = dev
    return devices
