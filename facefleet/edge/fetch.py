"""``recognize --fetch-model``: pull the current bundle from the training server over SFTP
(asyncssh: key authentication, host checked against known_hosts), verify it like any bundle,
and install it as ``<models_dir>/<model>/<version>`` with ``current`` switched atomically."""

from __future__ import annotations

import asyncio
import logging
import os
import posixpath
import shutil
import tempfile
from pathlib import Path

from facefleet.errors import BundleError, DeployError
from facefleet.fileio import replace_dir
from facefleet.layout import CURRENT, switch
from facefleet.ssh import SshTarget, connect, known_hosts_path

FETCH_HINT = "add the device's key to that file (ssh-keyscan) or pass --known-hosts FILE"

log = logging.getLogger(__name__)

MAX_BUNDLE_BYTES = 512 * 1024 * 1024


def remote_path(path: str) -> str:
    """SFTP paths are relative to the login folder: ``~/x`` becomes ``x``."""
    if path == "~":
        return "."
    return path[2:] if path.startswith("~/") else path


def _safe_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and not name.startswith(".")


async def _fetch(
    host: str,
    user: str,
    *,
    port: int,
    remote_dir: str,
    model: str,
    dest: Path,
    known_hosts: Path,
    client_keys: list[str] | None,
    timeout: float,
) -> str:
    """Download the remote current version's files into ``dest``; returns the version name."""
    import asyncssh

    target = SshTarget(host, port, user, tuple(client_keys or ()))
    try:
        conn = await connect(target, known_hosts, timeout=timeout, hint=FETCH_HINT)
    except (OSError, asyncssh.Error, DeployError) as exc:
        raise DeployError(f"cannot connect to {user}@{host}:{port}: {exc}") from None
    async with conn, conn.start_sftp_client() as sftp:
        base = posixpath.join(remote_path(remote_dir), model)
        try:
            target = await sftp.readlink(posixpath.join(base, CURRENT))
            version = posixpath.basename(target.rstrip("/"))
        except asyncssh.SFTPError:
            try:
                names = await sftp.listdir(base)
            except asyncssh.SFTPError as exc:
                raise DeployError(f"{host}:{base}: no models there ({exc.reason})") from None
            numbered = [n for n in names if n.isdigit()]
            if not numbered:
                raise DeployError(f"{host}:{base}: no 'current' link and no version folders") from None
            version = max(numbered, key=int)
        if not _safe_name(version):
            raise DeployError(f"{host}:{base}/current points to an odd name {version!r}")
        folder = posixpath.join(base, version)
        try:
            entries = await sftp.readdir(folder)
        except asyncssh.SFTPError as exc:
            raise DeployError(f"{host}:{folder}: {exc.reason}") from None
        total = 0
        for entry in entries:
            name = entry.filename
            if name in (".", ".."):
                continue
            if not _safe_name(name) or entry.attrs.type != asyncssh.FILEXFER_TYPE_REGULAR:
                raise DeployError(f"{host}:{folder}: unexpected entry {name!r} in a bundle")
            total += entry.attrs.size or 0
            if total > MAX_BUNDLE_BYTES:
                raise DeployError(f"{host}:{folder}: larger than {MAX_BUNDLE_BYTES >> 20} MB")
            await sftp.get(posixpath.join(folder, name), str(dest / name))
    return version


def fetch_model(
    host: str,
    user: str,
    *,
    models_dir: Path,
    public_key,
    model: str = "face_model",
    remote_dir: str = "~/facefleet/models",
    port: int = 22,
    known_hosts: str | Path | None = None,
    client_keys: list[str | Path] | None = None,
    timeout: float = 30.0,
) -> Path:
    """Fetch, verify and install the server's current bundle; returns the installed folder.

    ``known_hosts`` defaults to ``~/.ssh/known_hosts`` (an unknown host key is refused);
    ``client_keys`` to the user's default keys.
    """
    from facefleet.registry.format import verify_bundle

    model_dir = Path(models_dir) / model
    model_dir.mkdir(parents=True, exist_ok=True)
    known = known_hosts_path(known_hosts)
    keys = None if client_keys is None else [str(k) for k in client_keys]
    tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=model_dir))
    try:
        version = asyncio.run(
            _fetch(
                host,
                user,
                port=port,
                remote_dir=remote_dir,
                model=model,
                dest=tmp,
                known_hosts=known,
                client_keys=keys,
                timeout=timeout,
            )
        )
        try:
            manifest = verify_bundle(tmp, public_key)
        except BundleError as exc:
            raise BundleError(f"bundle fetched from {host} refused: {exc}") from None
        if str(manifest.get("version")) != version and version.isdigit():
            log.warning("%s: folder %s holds version %s", host, version, manifest.get("version"))
        os.chmod(tmp, 0o755)
        final = model_dir / version
        replace_dir(tmp, final)
        switch(model_dir, version)
        log.warning("fetched model %s version %s from %s", model, manifest.get("version"), host)
        return final
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
