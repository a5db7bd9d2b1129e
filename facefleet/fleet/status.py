"""``facefleet fleet status`` and ``history``: which version runs where, since when, and the
devices' last heartbeat and FPS, from the deployment and heartbeat records in the store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from facefleet.fleet import records
from facefleet.texttable import text_table

if TYPE_CHECKING:
    from facefleet.workspace import Workspace


@dataclass
class DeviceStatus:
    host: str
    model: str
    version: int | None
    since: str | None
    last_result: str | None
    heartbeat: str | None
    heartbeat_version: int | None
    fps: float | None


def combine(
    deploys: list[dict[str, Any]], beats: list[dict[str, Any]], hosts: list[str] | None = None
) -> list[DeviceStatus]:
    """One row per (device, model) from deployment rows (newest first) and heartbeats (pure).

    ``version``/``since``: the newest successful deployment (a failed one leaves the device on
    what it ran before); ``last_result`` is the newest attempt's outcome.
    """
    rows: dict[tuple[str, str], DeviceStatus] = {}
    for d in deploys:
        key = (d["host"], d["model"])
        row = rows.setdefault(
            key, DeviceStatus(d["host"], d["model"], None, None, d["result"], None, None, None)
        )
        if row.version is None and d["result"] in ("ok", "unchanged"):
            row.version, row.since = d["new_version"], d["ts"]
    for b in beats:
        key = (b["device"], b["model"])
        row = rows.setdefault(key, DeviceStatus(b["device"], b["model"], None, None, None, None, None, None))
        row.heartbeat, row.heartbeat_version, row.fps = b["ts"], b["version"], b["fps"]
        if row.version is None:
            row.version = b["version"]
    for host in hosts or []:
        if not any(k[0] == host for k in rows):
            rows[(host, "-")] = DeviceStatus(host, "-", None, None, None, None, None, None)
    return sorted(rows.values(), key=lambda r: (r.host, r.model))


def fleet_status(ws: Workspace, hosts: list[str] | None = None) -> list[DeviceStatus]:
    store = records.open_store(ws)
    try:
        return combine(records.deployments(store, limit=100_000), records.heartbeats(store), hosts)
    finally:
        store.close()


def history(ws: Workspace, *, host: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    store = records.open_store(ws)
    try:
        return records.deployments(store, host=host, limit=limit)
    finally:
        store.close()


def _v(version: int | None) -> str:
    return "-" if version is None else f"v{version}"


def status_table(items: list[DeviceStatus]) -> str:
    rows = [["HOST", "MODEL", "VERSION", "SINCE", "LAST DEPLOY", "HEARTBEAT", "REPORTS", "FPS"]]
    for s in items:
        rows.append(
            [
                s.host,
                s.model,
                _v(s.version),
                s.since or "-",
                s.last_result or "-",
                s.heartbeat or "-",
                _v(s.heartbeat_version),
                "-" if s.fps is None else f"{s.fps:.1f}",
            ]
        )
    return text_table(rows)


def history_table(items: list[dict[str, Any]]) -> str:
    rows = [["TIME", "RUN", "HOST", "MODEL", "OLD -> NEW", "RESULT", "SECONDS"]]
    for d in items:
        result = d["result"] + (f": {d['error']}" if d.get("error") else "")
        rows.append(
            [
                d["ts"],
                d["run_id"],
                d["host"],
                d["model"],
                f"{_v(d['old_version'])} -> {_v(d['new_version'])}",
                result,
                f"{d['seconds']:.1f}",
            ]
        )
    return text_table(rows)
