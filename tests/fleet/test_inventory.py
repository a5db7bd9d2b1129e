"""Inventory parsing: Ansible's YAML shape, variable precedence, clear errors."""

from __future__ import annotations

import pytest

from facefleet.errors import ConfigError
from facefleet.fleet.inventory import parse_inventory
from facefleet.layout import versions_to_prune

INV = {
    "all": {
        "vars": {
            "facefleet_models_dir": "/opt/m",
            "facefleet_restart": "systemctl restart x",
            "facefleet_models": {"face_model": {"sentinels": ["cam1"], "datasinks": []}},
        },
        "children": {
            "sentinels": {
                "vars": {"facefleet_health": "true"},
                "hosts": {
                    "cam1": {"ansible_host": "10.0.0.5", "ansible_port": 2222, "ansible_user": "pi"},
                    "cam2": {"facefleet_models_dir": "/srv/m"},
                },
            },
            "datasinks": {"vars": {"facefleet_receives": "facelist"}, "hosts": {"sink": None}},
        },
    }
}


def test_precedence_and_targets():
    inv = parse_inventory(INV)
    cam1, cam2, sink = inv.hosts["cam1"], inv.hosts["cam2"], inv.hosts["sink"]
    assert (cam1.address, cam1.port, cam1.user, cam1.models_dir) == ("10.0.0.5", 2222, "pi", "/opt/m")
    assert cam2.models_dir == "/srv/m" and cam2.address == "cam2" and cam2.port == 22
    assert cam1.health == "true" and sink.health is None and sink.receives == "facelist"
    assert [h.name for h in inv.select("face_model")] == ["cam1", "sink"]
    assert [h.name for h in inv.select("other_model")] == ["cam1", "cam2", "sink"]
    assert [h.name for h in inv.select("face_model", group="datasinks")] == ["sink"]


@pytest.mark.parametrize(
    "data, message",
    [
        ({"sentinels": {}}, "top-level 'all:'"),
        ({"all": {"hosts": {"a": {"ansible_port": "x"}}}}, "ansible_port"),
        ({"all": {"hosts": {"a": {"facefleet_receives": "pizza"}}}}, "facefleet_receives"),
        ({"all": {"hosts": {"a": {"facefleet_models_dir": "rel/path"}}}}, "absolute"),
        ({"all": {"host": {"a": None}}}, "unexpected key"),
        ({"all": {"children": {"g": []}}}, "expected a mapping"),
        (
            {"all": {"vars": {"facefleet_models": {"m": {"nogroup": []}}}, "hosts": {"a": None}}},
            "no group 'nogroup'",
        ),
        ({"all": {}}, "no hosts"),
    ],
)
def test_bad_inventories_give_clear_errors(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_inventory(data, "inv.yaml")


def test_select_unknown_group_or_host():
    inv = parse_inventory(INV)
    with pytest.raises(ConfigError, match="no group 'nope'"):
        inv.select("face_model", group="nope")
    with pytest.raises(ConfigError, match="no host 'nope'"):
        inv.select("face_model", host="nope")


def test_prune_keeps_newest_and_protected():
    assert versions_to_prune([1, 2, 3, 4, 5], 2, [1, None]) == [2, 3]
    assert versions_to_prune([1, 2], 3, []) == []
