"""Helpers shared by the fleet tests (inventories, known_hosts, signed bundles)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import yaml


def make_bundle(ws, version: int, *, name: str | None = None, model: str = "face_model") -> Path:
    """A small signed bundle (two people, centroid method) in the workspace's models dir."""
    from facefleet.registry.bundle import write_bundle
    from facefleet.registry.keys import load_private_key, private_key_path

    rng = np.random.default_rng(version)
    gallery = rng.normal(size=(4, 128)).astype(np.float32)
    manifest = {
        "format": 1,
        "model": model,
        "version": version,
        "name": name or f"gen{version}",
        "embedder_id": "dlib-resnet-v1:test",
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
