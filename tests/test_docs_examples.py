"""The examples shipped in docs/ load with the same code that reads users' files."""

from __future__ import annotations

from pathlib import Path

from facefleet.fleet.inventory import load_inventory
from facefleet.train.config import load_config

DOCS = Path(__file__).resolve().parents[1] / "docs" / "examples"


def test_example_inventory():
    inv = load_inventory(DOCS / "inventory.yaml")
    garage = inv.hosts["garage"]
    assert (garage.port, garage.user, garage.receives) == (2222, "pi", "bundle")
    assert garage.restart == "systemctl restart sentinel" and garage.keep == 3
    assert inv.hosts["jetson1"].user == "nvidia"
    sink = inv.hosts["sink1"]
    assert sink.receives == "facelist" and sink.models_dir == "/home/pi/sentinelcam/facelists"


def test_example_version_yaml():
    cfg = load_config(DOCS / "gamma4.yaml")
    assert cfg.name == "gamma4" and cfg.open_set.target_far == 0.01


def test_documented_workspace_layout_is_what_init_makes(tmp_path):
    """Issue 15 item 14: docs/ARCHITECTURE.md lists what ``facefleet init`` creates."""
    import re

    from facefleet.cli.main import main

    doc = (DOCS.parent / "ARCHITECTURE.md").read_text()
    block = doc.split("## Workspace layout", 1)[1].split("```")[1]
    listed = {re.sub(r"/.*", "", entry) for entry in block.split()}
    assert main(["init", str(tmp_path / "ws")]) == 0
    made = {p.name for p in (tmp_path / "ws").iterdir()}
    assert listed <= made, f"documented but not created by init: {listed - made}"
    assert "mlflow.db" not in made and "`mlflow.db`" in doc and "first `facefleet train`" in doc
