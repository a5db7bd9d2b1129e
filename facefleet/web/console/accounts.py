"""Console accounts: users with a role, argon2id password hashes, and the sign-in back-off.

Users live in the workspace store (table ``console_users``). Roles: ``admin`` (everything),
``reviewer`` (review, label, enrol), ``viewer`` (read only). ``epoch`` goes up when a
password changes or a user is removed and re-added, so old session cookies stop working.
Device bearer tokens (``facefleet.fleet.records``) are a separate thing.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from facefleet.errors import FacefleetError
from facefleet.store import now_iso

ROLES = ("viewer", "reviewer", "admin")  # each role can do what the ones before it can
MIN_PASSWORD = 8
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS console_users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'reviewer', 'admin')),
    hash TEXT NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 1,
    created TEXT NOT NULL,
    last_login TEXT
);
"""


class AccountError(FacefleetError):
    """A user could not be created, changed or found."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    epoch: int
    created: str
    last_login: str | None

    def can(self, role: str) -> bool:
        """Whether this user holds ``role`` or a higher one."""
        return ROLES.index(self.role) >= ROLES.index(role)


def _hasher() -> Any:
    from argon2 import PasswordHasher

    # argon2id, 64 MiB, 3 passes: argon2-cffi's RFC 9106 low-memory profile
    return PasswordHasher(time_cost=3, memory_cost=65536, parallelism=1)


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    return role


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"a password needs at least {MIN_PASSWORD} characters")
    return password


def _row(r: Any) -> User:
    return User(r["name"], r["role"], int(r["epoch"]), r["created"], r["last_login"])


def ensure(store: Any) -> Any:
    store.ensure_schema(SCHEMA)
    return store


def add_user(store: Any, name: str, role: str, password: str) -> User:
    """Create a user (a name already taken is an error)."""
    ensure(store)
    if not _NAME.match(name or ""):
        raise AccountError(f"bad user name {name!r}: letters, digits and _.@- only, at most 64")
    check_role(role)
    digest = hash_password(check_password(password))
    with store.transaction() as conn:
        if conn.execute("SELECT 1 FROM console_users WHERE name = ?", (name,)).fetchone():
            raise AccountError(f"user {name!r} already exists (use 'facefleet users passwd' or 'role')")
        conn.execute(
            "INSERT INTO console_users (name, role, hash, epoch, created) VALUES (?, ?, ?, 1, ?)",
            (name, role, digest, now_iso()),
        )
    return get_user(store, name)


def find_user(store: Any, name: str) -> User | None:
    """The user named ``name`` (the table must exist: ``ensure``)."""
    r = store.conn.execute("SELECT * FROM console_users WHERE name = ?", (name,)).fetchone()
    return _row(r) if r else None


def get_user(store: Any, name: str) -> User:
    ensure(store)
    user = find_user(store, name)
    if user is None:
        raise AccountError(f"no user {name!r} (see 'facefleet users list')")
    return user


def list_users(store: Any) -> list[User]:
    ensure(store)
    return [_row(r) for r in store.conn.execute("SELECT * FROM console_users ORDER BY name")]


def set_password(store: Any, name: str, password: str) -> User:
    """New password; every session of this user ends."""
    get_user(store, name)
    digest = hash_password(check_password(password))
    with store.transaction() as conn:
        conn.execute("UPDATE console_users SET hash = ?, epoch = epoch + 1 WHERE name = ?", (digest, name))
    return get_user(store, name)


def set_role(store: Any, name: str, role: str) -> User:
    get_user(store, name)
    with store.transaction() as conn:
        conn.execute(
            "UPDATE console_users SET role = ?, epoch = epoch + 1 WHERE name = ?", (check_role(role), name)
        )
    return get_user(store, name)


def remove_user(store: Any, name: str) -> None:
    get_user(store, name)
    with store.transaction() as conn:
        conn.execute("DELETE FROM console_users WHERE name = ?", (name,))


def verify(store: Any, name: str, password: str) -> User | None:
    """The user when ``password`` is theirs, else None (the same work either way)."""
    from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

    r = store.conn.execute("SELECT * FROM console_users WHERE name = ?", (name,)).fetchone()
    hasher = _hasher()
    digest = r["hash"] if r else _DUMMY_HASH.get()
    try:
        hasher.verify(digest, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if r is None:
        return None
    with store.transaction() as conn:
        conn.execute("UPDATE console_users SET last_login = ? WHERE name = ?", (now_iso(), name))
    return _row(r)


class _Lazy:
    """A hash of nothing, so unknown user names cost as much as wrong passwords."""

    def __init__(self) -> None:
        self._value: str | None = None

    def get(self) -> str:
        if self._value is None:
            self._value = hash_password("not a real password, only for timing")
        return self._value


_DUMMY_HASH = _Lazy()


# -- sign-in back-off ------------------------------------------------------------------------
def backoff_seconds(failures: int, free: int = 3, cap: float = 60.0) -> float:
    """How long to refuse sign-ins after ``failures`` consecutive failures (pure): the first
    ``free`` are free, then 1, 2, 4, ... seconds up to ``cap``."""
    if failures < free:
        return 0.0
    return float(min(cap, 2 ** (failures - free)))


class Throttle:
    """Consecutive failed sign-ins per key (user name, client address), in memory."""

    def __init__(self, free: int = 3, cap: float = 60.0) -> None:
        self.free, self.cap = free, cap
        self._fails: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def wait(self, *keys: str, now: float | None = None) -> float:
        """Seconds before any of ``keys`` may try again (0 when free to try)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            out = 0.0
            for key in keys:
                count, last = self._fails.get(key, (0, 0.0))
                out = max(out, last + backoff_seconds(count, self.free, self.cap) - now)
            return max(0.0, out)

    def failed(self, *keys: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            for key in keys:
                count, _ = self._fails.get(key, (0, 0.0))
                self._fails[key] = (count + 1, now)
            if len(self._fails) > 10_000:  # bounded memory under a spray of names
                for key, _ in sorted(self._fails.items(), key=lambda kv: kv[1][1])[:5_000]:
                    del self._fails[key]

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._fails.pop(key, None)
