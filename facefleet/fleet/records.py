"""Fleet records in the workspace store: deployments, device heartbeats, device tokens.

Tables are added with ``Store.ensure_schema`` (idempotent). Tokens are stored only as their
sha256: a leaked database does not leak working tokens.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from facefleet.clock import now_iso
from facefleet.errors import FacefleetError

if TYPE_CHECKING:
    from facefleet.store import Store
    from facefleet.workspace import Workspace

SCHEMA = """
CREATE TABLE IF NOT EXISTS fleet_deployments (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    ts TEXT NOT NULL,
    host TEXT NOT NULL,
    model TEXT NOT NULL,
    old_version INTEGER,
    new_version INTEGER NOT NULL,
    result TEXT NOT NULL,
    error TEXT,
    seconds REAL NOT NULL,
    method TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS fleet_deployments_host ON fleet_deployments(host, model, id);
CREATE TABLE IF NOT EXISTS fleet_heartbeats (
    device TEXT NOT NULL,
    model TEXT NOT NULL,
    version INTEGER,
    fps REAL,
    ts TEXT NOT NULL,
    remote TEXT,
    PRIMARY KEY (device, model)
);
CREATE TABLE IF NOT EXISTS fleet_tokens (
    name TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL,
    revoked TEXT,
    last_used TEXT
);
"""

TOKEN_PREFIX = "fft_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenInfo:
    name: str
    created: str
    revoked: str | None
    last_used: str | None


def open_store(ws: Workspace) -> Store:
    """The workspace store with the fleet tables present."""
    store = ws.open_store()
    store.ensure_schema(SCHEMA)
    return store


# -- deployments --------------------------------------------------------------------------


def record_deployment(store: Store, run_id: str, row: dict[str, Any]) -> None:
    """One host's outcome of one deployment run."""
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO fleet_deployments (run_id, ts, host, model, old_version, new_version,"
            " result, error, seconds, method) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                row.get("ts") or now_iso(),
                row["host"],
                row["model"],
                row.get("old_version"),
                row["new_version"],
                row["result"],
                row.get("error"),
                float(row.get("seconds", 0.0)),
                row.get("method", "ssh"),
            ),
        )


def deployments(
    store: Store, *, host: str | None = None, model: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Deployment rows, newest first."""
    clauses, params = [], []
    if host:
        clauses.append("host = ?")
        params.append(host)
    if model:
        clauses.append("model = ?")
        params.append(model)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    rows = store.conn.execute(
        f"SELECT * FROM fleet_deployments {where} ORDER BY id DESC LIMIT ?", (*params, limit)
    )
    return [dict(r) for r in rows]


# -- heartbeats ---------------------------------------------------------------------------


def record_heartbeat(
    store: Store,
    device: str,
    model: str,
    version: int | None,
    fps: float | None,
    remote: str | None = None,
) -> None:
    with store.transaction() as conn:
        conn.execute(
            "INSERT OR REPLACE INTO fleet_heartbeats (device, model, version, fps, ts, remote)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (device, model, version, fps, now_iso(), remote),
        )


def heartbeats(store: Store) -> list[dict[str, Any]]:
    return [dict(r) for r in store.conn.execute("SELECT * FROM fleet_heartbeats ORDER BY device")]


# -- tokens -------------------------------------------------------------------------------


def create_token(store: Store, name: str) -> str:
    """A new bearer token for device ``name``; shown once, stored hashed."""
    name = name.strip()
    if not name:
        raise FacefleetError("a token needs a non-empty device name")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with store.transaction() as conn:
        row = conn.execute("SELECT revoked FROM fleet_tokens WHERE name = ?", (name,)).fetchone()
        if row is not None and row["revoked"] is None:
            raise FacefleetError(
                f"device {name!r} already has a token: revoke it first ('facefleet tokens revoke')"
            )
        conn.execute(
            "INSERT OR REPLACE INTO fleet_tokens (name, sha256, created, revoked, last_used)"
            " VALUES (?, ?, ?, NULL, NULL)",
            (name, hash_token(token), now_iso()),
        )
    return token


def revoke_token(store: Store, name: str) -> None:
    with store.transaction() as conn:
        cur = conn.execute(
            "UPDATE fleet_tokens SET revoked = ? WHERE name = ? AND revoked IS NULL",
            (now_iso(), name),
        )
        if cur.rowcount == 0:
            raise FacefleetError(f"no active token for {name!r}")


def list_tokens(store: Store) -> list[TokenInfo]:
    rows = store.conn.execute("SELECT name, created, revoked, last_used FROM fleet_tokens ORDER BY name")
    return [TokenInfo(r["name"], r["created"], r["revoked"], r["last_used"]) for r in rows]


def check_token(store: Store, token: str) -> str | None:
    """The device name a valid, unrevoked token belongs to, else None."""
    if not token:
        return None
    row = store.conn.execute(
        "SELECT name FROM fleet_tokens WHERE sha256 = ? AND revoked IS NULL", (hash_token(token),)
    ).fetchone()
    if row is None:
        return None
    with store.transaction() as conn:
        conn.execute("UPDATE fleet_tokens SET last_used = ? WHERE name = ?", (now_iso(), row["name"]))
    return str(row["name"])
