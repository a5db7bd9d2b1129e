"""Helpers shared by the fleet tests (inventories, known_hosts, signed bundles)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_bundle(ws, version: int, *, name: str | None = None, model: str = "face_model") -> Path:
    """A small signed bundle (two people, centroid method) in the workspace's models dir."""
    from facefleet.registry.format import write_bundle
    from facefleet.registry.keys import load_private_key, private_key_path
    from facefleet.vision.embed import dlib_embedder_id

    rng = np.random.default_rng(version)
    gallery = rng.normal(size=(4, 128)).astype(np.float32)
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
    return write_bundle(
        ws.models_dir / model / str(version), manifest=manifest, arrays=arrays, private_key=key
    )
