"""Webhooks: each event the device records in ``events.jsonl`` posted to a URL as it is written
(a Home Assistant or Node-RED webhook, a chat bot, a door controller).

The follower runs beside ``recognize``, not in its frame loop: it tails the file as ``tail -F``
does, so recognising never waits on the network, and either side can restart without losing
an event. Delivery is at least once: the byte offset after the last event handled is kept in
a state file (written atomically) and an event is retried with bounded exponential back-off
until the receiver takes it, so a follower killed between a post and its state write sends
that one event again. A 4xx answer other than 408 and 429 means the receiver will never take
that event: it is skipped and said so. A line that is not JSON (torn by a crash, then ended)
is skipped. A file that shrinks or is replaced is read again from its start.

Standard-library HTTP only (urllib), like ``edge.sync``; nothing is imported from the server
side.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facefleet.errors import FacefleetError
from facefleet.fileio import atomic_write_text

log = logging.getLogger(__name__)

KINDS = ("named", "unknown")
MAX_CROP_BYTES = 256 * 1024  # a crop larger than this is sent without its image
RETRYABLE = {408, 429}
BACKOFF = (0.5, 30.0)  # first and longest wait between two tries of one event


class NotifyError(FacefleetError):
    """The receiver could not be reached for long enough (``once``: after ``tries``)."""


@dataclass
class NotifyStats:
    sent: int = 0
    skipped: list[str] = field(default_factory=list)  # why each event the receiver refused
    filtered: int = 0  # of a kind not asked for
    bad_lines: int = 0  # not JSON
    retries: int = 0


def event_kind(event: dict[str, Any]) -> str:
    """``named`` when the device gave the track a name, else ``unknown``."""
    return "named" if event.get("name") else "unknown"


def payload(event: dict[str, Any], *, with_crop: bool = False) -> bytes:
    """The JSON body posted for one event: the event as recorded, plus ``kind``, and with
    ``with_crop`` the crop's JPEG in base64 (``crop_jpeg``) when it is small enough to send."""
    body = {**event, "kind": event_kind(event)}
    crop = event.get("crop")
    if with_crop and crop:
        try:
            size = os.path.getsize(crop)
            if size <= MAX_CROP_BYTES:
                body["crop_jpeg"] = base64.b64encode(Path(crop).read_bytes()).decode("ascii")
        except OSError:  # the crop was pruned or is on another disk: the event goes without it
            pass
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def backoff(attempt: int) -> float:
    """Seconds to wait before try ``attempt + 1`` of one event (pure)."""
    first, longest = BACKOFF
    return min(longest, first * 2**attempt)


@dataclass(frozen=True)
class Receiver:
    """Where events go: the URL, its bearer token, and whether crops go along."""

    url: str
    token: str | None = None
    timeout: float = 5.0
    with_crop: bool = False

    def __post_init__(self) -> None:
        if urllib.parse.urlsplit(self.url).scheme not in ("http", "https"):
            raise FacefleetError(f"a webhook URL is http:// or https://, not {self.url!r}")

    def post(self, event: dict[str, Any]) -> int | str:
        """POST one event: the HTTP status, or the reason it could not be sent."""
        req = urllib.request.Request(self.url, data=payload(event, with_crop=self.with_crop), method="POST")
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - http(s) only
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            exc.close()
            return int(exc.code)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            return str(getattr(exc, "reason", exc))


def read_state(path: Path) -> dict[str, Any]:
    """What a follower saved (``{}`` when there is nothing readable)."""
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def state_path(events: Path) -> Path:
    return events.with_name(events.name + ".notify.json")


def follow(
    events: Path,
    receiver: Receiver,
    *,
    kinds: tuple[str, ...] = KINDS,
    state: Path | None = None,
    from_start: bool = False,
    once: bool = False,
    tries: int = 5,
    max_seconds: float | None = None,
    poll: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> NotifyStats:
    """Post every new event of ``events`` (an ``events.jsonl``) of ``kinds`` to ``receiver``.

    ``state`` (default :func:`state_path`) keeps where the last run stopped; without one a
    follower starts at the end of the file, or at its start with ``from_start``. ``once``:
    post what is there and return (a receiver still unreachable after ``tries`` raises
    ``NotifyError``); otherwise follow until ``max_seconds`` have passed (None: forever)."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise FacefleetError(f"unknown event kind {sorted(unknown)[0]!r}: use {', '.join(KINDS)}")
    events = Path(events)
    state = state or state_path(events)
    saved = read_state(state)
    offset: int | None = int(saved.get("offset", 0)) if saved else None
    inode = saved.get("inode")
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    stats = NotifyStats()

    def left() -> float:
        return float("inf") if deadline is None else deadline - time.monotonic()

    def remember(at: int, ino: int) -> None:
        atomic_write_text(state, json.dumps({"path": str(events), "inode": ino, "offset": at}))

    def handle(line: bytes) -> bool:
        """One line: True when done with (sent, refused, or not to be sent), False when time
        ran out before the receiver took it."""
        try:
            event = json.loads(line)
            if not isinstance(event, dict):
                raise ValueError("not an object")
        except ValueError:
            stats.bad_lines += 1
            return True
        if event_kind(event) not in kinds:
            stats.filtered += 1
            return True
        attempt = 0
        while True:
            answer = receiver.post(event)
            if isinstance(answer, int) and 200 <= answer < 300:
                stats.sent += 1
                return True
            if isinstance(answer, int) and 400 <= answer < 500 and answer not in RETRYABLE:
                why = f"event at {event.get('ts')} (track {event.get('track_id')}): HTTP {answer}"
                log.warning("the receiver refused the %s: skipped", why)
                stats.skipped.append(why)
                return True
            attempt += 1
            stats.retries += 1
            if once and attempt >= tries:
                raise NotifyError(
                    f"{receiver.url}: {answer} ({attempt} tries); this event and the rest are kept "
                    "for the next run"
                )
            if left() <= 0:
                return False
            sleep(min(backoff(attempt - 1), left()))

    while True:
        try:
            st = events.stat()
        except FileNotFoundError:
            st = None
        if st is not None:
            if offset is None:  # a first run: what comes from now on, unless asked
                offset, inode = (0 if from_start else st.st_size), st.st_ino
                remember(offset, inode)
            if inode != st.st_ino or st.st_size < offset:
                log.warning("%s was replaced or truncated: reading it from its start", events)
                offset, inode = 0, st.st_ino
                remember(offset, inode)
            if st.st_size > offset:
                with open(events, "rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read(st.st_size - offset)
                whole = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits
                for line in whole.splitlines(keepends=True):
                    posted = stats.sent + len(stats.skipped)
                    if not handle(line):
                        return stats  # not delivered: the next run starts with it
                    offset += len(line)
                    if stats.sent + len(stats.skipped) > posted:  # lines not posted: noted below
                        remember(offset, st.st_ino)
                remember(offset, st.st_ino)
        if once or left() <= 0:
            return stats
        sleep(min(poll, left()))
