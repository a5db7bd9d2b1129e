"""SSH connections to devices (asyncssh): key authentication only, host keys checked against
a known_hosts file, new keys recorded only when asked. Used by fleet deploy, edge fetch and
curate collect; imports nothing above the bottom layer.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facefleet.errors import DeployError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 15.0
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
ACCEPT_HINT = "check it and rerun with --accept-new-host-keys to record it"


@dataclass(frozen=True)
class SshTarget:
    """Where to connect: ``key_files`` empty means the user's default keys and agent."""

    address: str
    port: int = 22
    user: str | None = None
    key_files: tuple[str, ...] = ()
    name: str = ""

    @classmethod
    def of(cls, host: Any) -> SshTarget:
        """From an inventory ``Host`` (anything with address, port, user, key_file, name)."""
        key = getattr(host, "key_file", None)
        return cls(host.address, host.port, host.user, (str(key),) if key else (), host.name)

    @property
    def key_label(self) -> str:
        """The host as a known_hosts line names it."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"


def known_hosts_path(path: str | Path | None) -> Path:
    """``path``, or the user's ``~/.ssh/known_hosts``."""
    return Path(path or DEFAULT_KNOWN_HOSTS).expanduser()


def has_entry(known_hosts: Path, target: SshTarget) -> bool:
    """Whether ``known_hosts`` holds any key for the target (matching or not)."""
    import asyncssh

    if not known_hosts.is_file():
        return False
    try:
        keys = asyncssh.read_known_hosts(str(known_hosts))
    except (ValueError, OSError):
        return False
    matched = keys.match(target.address, "", target.port)
    return any(matched[:3])


async def connect(
    target: SshTarget,
    known_hosts: Path,
    *,
    accept_new: bool = False,
    lock: asyncio.Lock | None = None,
    timeout: float = CONNECT_TIMEOUT,
    hint: str = ACCEPT_HINT,
) -> Any:
    """An open ``asyncssh`` connection. An unknown host key is a ``DeployError`` (``hint`` says
    what to do), or with ``accept_new`` is recorded in ``known_hosts`` (under ``lock``, one
    writer at a time); a key that differs from the recorded one is always refused."""
    import asyncssh

    opts: dict[str, Any] = {
        "port": target.port,
        "known_hosts": str(known_hosts) if known_hosts.is_file() else (),
        "preferred_auth": "publickey",
        "connect_timeout": timeout,
    }
    if target.user:
        opts["username"] = target.user
    if target.key_files:
        opts["client_keys"] = list(target.key_files)
        opts["agent_path"] = None
    try:
        return await asyncssh.connect(target.address, **opts)
    except asyncssh.HostKeyNotVerifiable:
        async with lock or asyncio.Lock():
            if not accept_new or has_entry(known_hosts, target):
                raise DeployError(
                    f"host key of {target.address}:{target.port} is not in {known_hosts}"
                    + (" or does not match it (possible impostor)" if accept_new else f"; {hint}")
                ) from None
            key = await asyncio.wait_for(asyncssh.get_server_host_key(target.address, target.port), timeout)
            if key is None:
                raise DeployError(f"{target.address}:{target.port} offered no host key") from None
            line = f"{target.key_label} {key.export_public_key('openssh').decode().strip()}\n"
            known_hosts.parent.mkdir(parents=True, exist_ok=True)
            with open(known_hosts, "a", encoding="utf-8") as fh:
                fh.write(line)
            log.warning("recorded new host key for %s in %s", target.name or target.address, known_hosts)
        opts["known_hosts"] = str(known_hosts)
        return await asyncssh.connect(target.address, **opts)
