"""Fixtures for fleet tests: a workspace with signing keys and signed bundles built with the real
bundle API. The real OpenSSH devices come from tests/conftest.py (``start_device``)."""

from __future__ import annotations

import pytest
from fleet_helpers import make_bundle


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
