"""The device's pull client: fetch the bundle an alias names from the model server, verify its
signature against the configured public key, install it with the same atomic switch as a push
deploy (``facefleet.registry.install``), report a heartbeat.

``facefleet recognize`` watches ``<models_dir>/<model>/current`` and hot-reloads. Standard
library HTTP only (urllib); never imports mlflow, sklearn or pandas, never unpickles anything.
Network errors are retried with bounded exponential back-off; a download goes to a hidden
temporary file that is removed whatever happens, so a failure never leaves a half-installed
bundle.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from facefleet import layout
from facefleet.errors import BundleError, FacefleetError
from facefleet.registry.install import install

log = logging.getLogger(__name__)

T = TypeVar("T")
STATE_FILE = ".facefleet-sync.json"
HTTP_TIMEOUT = 30.0
MAX_BYTES = 512 << 20  # refuse absurd downloads


class SyncError(FacefleetError):
    """The model server refused or could not be reached (after retries)."""


class TransientError(SyncError):
    """A failure worth retrying: connection refused/reset, timeout, 5xx."""


@dataclass
class SyncResult:
    status: str  # installed | unchanged
    version: int | None
    etag: str | None


# -- small pure helpers -------------------------------------------------------------------


def backoff_delays(attempts: int, base: float = 1.0, cap: float = 60.0) -> list[float]:
    """Waits between ``attempts`` tries: base, 2*base, 4*base ... each at most ``cap``."""
    return [min(cap, base * 2**i) for i in range(max(0, attempts - 1))]


def bundle_url(server: str, model: str, alias: str, what: str = "bundle.tar.gz") -> str:
    ref = urllib.parse.quote(alias.lstrip("@"), safe="")
    return f"{server.rstrip('/')}/v1/models/{urllib.parse.quote(model, safe='')}/{ref}/{what}"


def with_retries(
    fn: Callable[[], T],
    *,
    attempts: int = 5,
    base: float = 1.0,
    cap: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn``; on :class:`TransientError` wait and retry, at most ``attempts`` times."""
    delays = backoff_delays(attempts, base, cap)
    for delay in [*delays, None]:
        try:
            return fn()
        except TransientError as exc:
            if delay is None:
                raise SyncError(f"{exc} (gave up after {attempts} attempts)") from None
            log.warning("%s; retrying in %.0f s", exc, delay)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


# -- state --------------------------------------------------------------------------------


def _read_state(models_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((models_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_state(models_dir: Path, state: dict[str, Any]) -> None:
    from facefleet.fileio import atomic_write_text

    atomic_write_text(models_dir / STATE_FILE, json.dumps(state, sort_keys=True))


# -- HTTP ---------------------------------------------------------------------------------


def _request(
    url: str, token: str, *, data: bytes | None = None, headers: dict[str, str] | None = None
) -> Any:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    req.add_header("Authorization", f"Bearer {token}")
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    try:
        return urllib.request.urlopen(req, timeout=HTTP_TIMEOUT)  # noqa: S310 - http(s) only
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return exc
        detail = exc.read(2000).decode("utf-8", "replace")
        exc.close()
        if exc.code >= 500:
            raise TransientError(f"{url}: server error {exc.code}") from None
        if exc.code == 401:
            raise SyncError(f"{url}: token refused (401): {detail}") from None
        raise SyncError(f"{url}: HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TransientError(f"{url}: {reason}") from None


def _download(
    url: str, token: str, etag: str | None, models_dir: Path
) -> tuple[Path | None, str | None, int | None]:
    """GET the bundle into a hidden temp file; ``(None, etag, None)`` when not modified."""
    headers = {"If-None-Match": f'"{etag}"'} if etag else {}
    resp = _request(url, token, headers=headers)
    with resp:
        if getattr(resp, "status", None) == 304 or getattr(resp, "code", None) == 304:
            return None, etag, None
        new_etag = (resp.headers.get("ETag") or "").strip('"') or None
        version_hdr = resp.headers.get("X-Facefleet-Version")
        fd, name = tempfile.mkstemp(prefix=layout.TMP_PREFIX + "dl-", suffix=".tar.gz", dir=models_dir)
        tmp = Path(name)
        digest, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as out:
                while True:
                    try:
                        block = resp.read(1 << 16)
                    except (OSError, TimeoutError) as exc:
                        raise TransientError(f"{url}: download interrupted ({exc})") from None
                    if not block:
                        break
                    size += len(block)
                    if size > MAX_BYTES:
                        raise SyncError(f"{url}: bundle larger than {MAX_BYTES >> 20} MB")
                    digest.update(block)
                    out.write(block)
            length = resp.headers.get("Content-Length")
            if length is not None and int(length) != size:
                raise TransientError(f"{url}: download truncated ({size} of {length} bytes)")
            if new_etag and digest.hexdigest() != new_etag:
                raise TransientError(f"{url}: download does not match its ETag (sha256)")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    version = int(version_hdr) if version_hdr and version_hdr.isdigit() else None
    return tmp, new_etag, version


def read_snapshot(path: Path | None, limit: int = 256 * 1024) -> str | None:
    """The device's latest snapshot JPEG as base64, when the file exists and is small enough."""
    if path is None:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    if not data or len(data) > limit:
        return None
    import base64

    return base64.b64encode(data).decode("ascii")


def send_heartbeat(
    server: str,
    token: str,
    device_id: str | None,
    model: str,
    version: int | None,
    fps: float | None,
    snapshot: str | None = None,
) -> None:
    beat = {"device": device_id, "model": model, "version": version, "fps": fps}
    if snapshot:
        beat["snapshot"] = snapshot
    body = json.dumps(beat)
    resp = _request(
        f"{server.rstrip('/')}/v1/heartbeat",
        token,
        data=body.encode("utf-8"),
        headers={"Content-Type": "application/json"},
    )
    resp.close()


def read_fps(path: Path | None) -> float | None:
    """The FPS of the device's last benchmark: a JSON file with an ``fps`` key, if present."""
    if path is None or not Path(path).is_file():
        return None
    try:
        fps = json.loads(Path(path).read_text(encoding="utf-8")).get("fps")
    except (OSError, ValueError, AttributeError):
        return None
    return float(fps) if isinstance(fps, (int, float)) else None


# -- sync ---------------------------------------------------------------------------------


def sync_once(
    server: str,
    *,
    token: str,
    public_key: Any,
    models_dir: Path,
    model: str = "face_model",
    alias: str = "production",
    keep: int = layout.DEFAULT_KEEP,
    device_id: str | None = None,
    fps: float | None = None,
    snapshot: Path | None = None,
    attempts: int = 5,
    base_delay: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> SyncResult:
    """One round: fetch if changed, verify, install atomically, heartbeat."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    state = _read_state(models_dir)
    key = f"{model}@{alias.lstrip('@')}"
    current = layout.link_target(models_dir / model / layout.CURRENT)
    known = state.get(key) or {}
    # the saved ETag only stands for what is installed if current still points at it
    etag = known.get("etag") if known.get("version") == current else None
    url = bundle_url(server, model, alias)
    tmp, new_etag, _ = with_retries(
        lambda: _download(url, token, etag, models_dir), attempts=attempts, base=base_delay, sleep=sleep
    )
    if tmp is None:
        result = SyncResult("unchanged", current, etag)
    else:
        try:
            installed = install(models_dir, tmp, public_key, keep=keep)
        finally:
            tmp.unlink(missing_ok=True)
        if installed.model != model:
            raise BundleError(f"server sent a bundle of {installed.model!r}, not {model!r}")
        state[key] = {"etag": new_etag, "version": installed.version}
        _write_state(models_dir, state)
        result = SyncResult("installed", installed.version, new_etag)
        log.info("installed %s v%s (was %s)", model, installed.version, installed.old_version)
    with contextlib.suppress(SyncError):  # a lost heartbeat is not worth failing the round
        with_retries(
            lambda: send_heartbeat(
                server, token, device_id, model, result.version, fps, read_snapshot(snapshot)
            ),
            attempts=2,
            base=base_delay,
            sleep=sleep,
        )
    return result


def sync_loop(server: str, *, every: float, rounds: int | None = None, **kwargs: Any) -> None:
    """``sync_once`` every ``every`` seconds (``rounds`` bounds it; None = until interrupted).

    A failed round (server down, tampered bundle) is logged and the next round tries again;
    what is installed keeps running.
    """
    done = 0
    while rounds is None or done < rounds:
        try:
            result = sync_once(server, **kwargs)
            log.info("sync: %s (v%s)", result.status, result.version)
        except FacefleetError as exc:
            log.error("sync failed: %s", exc)
        done += 1
        if rounds is None or done < rounds:
            time.sleep(every)
