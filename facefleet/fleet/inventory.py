"""The device inventory, in Ansible's YAML inventory shape so existing inventories work as is.

::

    all:
      vars:                                   # global settings (lowest precedence)
        facefleet_models_dir: /opt/facefleet/models
        facefleet_models:                     # per-model targets: group -> hosts ([] = all)
          face_model: {sentinels: [], datasinks: []}
      children:
        sentinels:
          vars:
            facefleet_receives: bundle        # bundle | facelist
            facefleet_restart: systemctl restart sentinel
            facefleet_health: systemctl is-active sentinel
          hosts:
            cam1: {ansible_host: 10.0.0.5, ansible_port: 22, ansible_user: pi,
                   ansible_ssh_private_key_file: ~/.ssh/fleet}

Variables: host vars override child-group vars, which override parent-group and ``all`` vars
(Ansible's order). facefleet reads ``ansible_host``, ``ansible_port``, ``ansible_user``,
``ansible_ssh_private_key_file`` and its own ``facefleet_*`` keys; everything else is ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facefleet.errors import ConfigError
from facefleet.workspace import load_yaml

RECEIVES = ("bundle", "facelist")
DEFAULT_MODELS_DIR = "/opt/facefleet/models"
DEFAULT_KEEP = 3


@dataclass(frozen=True)
class Host:
    """One device and the settings that apply to it."""

    name: str
    address: str
    port: int
    user: str | None
    key_file: str | None
    groups: tuple[str, ...]
    models_dir: str
    receives: str
    restart: str | None
    health: str | None
    keep: int
    vars: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Inventory:
    """Hosts by name, groups to host names, and the per-model targets."""

    path: str
    hosts: dict[str, Host]
    groups: dict[str, list[str]]
    models: dict[str, dict[str, list[str]]]

    def select(self, model: str, *, group: str | None = None, host: str | None = None) -> list[Host]:
        """The hosts that receive ``model``, optionally narrowed to one group or one host."""
        if group is not None and group not in self.groups:
            raise ConfigError(f"{self.path}: no group {group!r} (groups: {', '.join(sorted(self.groups))})")
        if host is not None and host not in self.hosts:
            raise ConfigError(f"{self.path}: no host {host!r} (hosts: {', '.join(sorted(self.hosts))})")
        targets = self.models.get(model)
        if targets is None:
            names = list(self.hosts)
        else:
            names = []
            for grp, listed in targets.items():
                for name in listed or self.groups[grp]:
                    if name not in names:
                        names.append(name)
        if group is not None:
            names = [n for n in names if n in self.groups[group]]
        if host is not None:
            names = [n for n in names if n == host]
        return [self.hosts[n] for n in names]


# -- parsing ------------------------------------------------------------------------------


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _walk(
    name: str,
    node: dict[str, Any],
    where: str,
    inherited: dict[str, Any],
    lineage: tuple[str, ...],
    host_vars: dict[str, list[tuple[int, dict[str, Any]]]],
    host_groups: dict[str, list[str]],
    groups: dict[str, list[str]],
) -> None:
    unknown = set(node) - {"hosts", "vars", "children"}
    if unknown:
        raise ConfigError(
            f"{where}: unexpected key(s) {', '.join(sorted(map(str, unknown)))} "
            "(a group holds hosts, vars, children)"
        )
    if name in lineage:
        raise ConfigError(f"{where}: group {name!r} contains itself")
    merged = {**inherited, **_mapping(node.get("vars"), f"{where}.vars")}
    members = groups.setdefault(name, [])
    for host, hvars in _mapping(node.get("hosts"), f"{where}.hosts").items():
        host = str(host)
        hv = _mapping(hvars, f"{where}.hosts.{host}")
        # depth orders precedence: deeper groups override their parents
        host_vars.setdefault(host, []).append((len(lineage), merged))
        host_vars[host].append((10_000, hv))
        host_groups.setdefault(host, [])
        for grp in (*lineage, name):
            if grp not in host_groups[host]:
                host_groups[host].append(grp)
            if host not in groups.setdefault(grp, []):
                groups[grp].append(host)
        if host not in members:
            members.append(host)
    for child, cnode in _mapping(node.get("children"), f"{where}.children").items():
        _walk(
            str(child),
            _mapping(cnode, f"{where}.children.{child}"),
            f"{where}.children.{child}",
            merged,
            (*lineage, name),
            host_vars,
            host_groups,
            groups,
        )


def _str_or_none(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return str(value)


def _make_host(name: str, hv: dict[str, Any], groups: tuple[str, ...], where: str) -> Host:
    port = hv.get("ansible_port", 22)
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ConfigError(f"{where}: ansible_port must be a port number, got {port!r}")
    receives = hv.get("facefleet_receives", "bundle")
    if receives not in RECEIVES:
        raise ConfigError(
            f"{where}: facefleet_receives must be one of {', '.join(RECEIVES)}, got {receives!r}"
        )
    keep = hv.get("facefleet_keep", DEFAULT_KEEP)
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise ConfigError(f"{where}: facefleet_keep must be a positive integer, got {keep!r}")
    models_dir = _str_or_none(hv.get("facefleet_models_dir", DEFAULT_MODELS_DIR), where)
    if not models_dir or not models_dir.startswith(("/", "~")):
        raise ConfigError(f"{where}: facefleet_models_dir must be an absolute path")
    key = _str_or_none(hv.get("ansible_ssh_private_key_file"), where)
    return Host(
        name=name,
        address=_str_or_none(hv.get("ansible_host"), where) or name,
        port=port,
        user=_str_or_none(hv.get("ansible_user"), where),
        key_file=os.path.expanduser(key) if key else None,
        groups=groups,
        models_dir=models_dir,
        receives=receives,
        restart=_str_or_none(hv.get("facefleet_restart"), where),
        health=_str_or_none(hv.get("facefleet_health"), where),
        keep=keep,
        vars=hv,
    )


def parse_inventory(data: dict[str, Any], path: str = "inventory") -> Inventory:
    """An :class:`Inventory` from the parsed YAML mapping (pure; raises ConfigError)."""
    if "all" not in data:
        raise ConfigError(f"{path}: expected a top-level 'all:' group (Ansible YAML inventory)")
    extra = set(data) - {"all"}
    host_vars: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    host_groups: dict[str, list[str]] = {}
    groups: dict[str, list[str]] = {}
    _walk(
        "all", _mapping(data["all"], f"{path}: all"), f"{path}: all", {}, (), host_vars, host_groups, groups
    )
    # Ansible also accepts further top-level groups beside 'all'
    for name in sorted(map(str, extra)):
        _walk(
            name,
            _mapping(data[name], f"{path}: {name}"),
            f"{path}: {name}",
            _mapping(_mapping(data["all"], "all").get("vars"), f"{path}: all.vars"),
            ("all",),
            host_vars,
            host_groups,
            groups,
        )
    if not host_vars:
        raise ConfigError(f"{path}: no hosts")
    hosts = {}
    for name, layers in host_vars.items():
        merged: dict[str, Any] = {}
        for _, layer in sorted(layers, key=lambda item: item[0]):
            merged.update(layer)
        hosts[name] = _make_host(name, merged, tuple(host_groups[name]), f"{path}: host {name}")
    all_vars = _mapping(_mapping(data["all"], "all").get("vars"), f"{path}: all.vars")
    models = _parse_models(all_vars.get("facefleet_models"), groups, hosts, path)
    return Inventory(path=path, hosts=hosts, groups=groups, models=models)


def _parse_models(
    raw: Any, groups: dict[str, list[str]], hosts: dict[str, Host], path: str
) -> dict[str, dict[str, list[str]]]:
    where = f"{path}: all.vars.facefleet_models"
    models: dict[str, dict[str, list[str]]] = {}
    for model, targets in _mapping(raw, where).items():
        out: dict[str, list[str]] = {}
        for grp, listed in _mapping(targets, f"{where}.{model}").items():
            if grp not in groups:
                raise ConfigError(f"{where}.{model}: no group {grp!r} in the inventory")
            if listed in (None, "all"):
                listed = []
            if not isinstance(listed, list):
                raise ConfigError(f"{where}.{model}.{grp}: expected a list of hosts or 'all'")
            for name in listed:
                if str(name) not in groups[grp]:
                    raise ConfigError(f"{where}.{model}.{grp}: {name!r} is not a host of {grp}")
            out[str(grp)] = [str(n) for n in listed]
        models[str(model)] = out
    return models


def load_inventory(path: Path | str) -> Inventory:
    """Read and validate an inventory file."""
    return parse_inventory(load_yaml(Path(path)), str(path))


def default_inventory_path(ws_root: Path, configured: str | None = None) -> Path:
    """``--inventory`` or the config's ``fleet.inventory`` or ``<workspace>/inventory.yaml``."""
    if configured:
        path = Path(configured).expanduser()
        return path if path.is_absolute() else ws_root / path
    return ws_root / "inventory.yaml"
