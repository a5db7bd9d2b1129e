"""Helpers shared by the fleet tests (inventories, known_hosts, signed bundles)."""

from __future__ import annotations

from pathlib import Path

from testkit import signed_bundle


def make_bundle(ws, version: int, *, name: str | None = None, model: str = "face_model") -> Path:
    """A small signed bundle (two people, centroid method) in the workspace's models dir."""
    return signed_bundle(ws, version, model=model, name=name)
