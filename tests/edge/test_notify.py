"""``facefleet edge notify``: the events real recognise runs recorded (the hamilton clip on a
"door" camera, the pbs clip on a "hall" camera, with Lin-Manuel Miranda enrolled), posted to a
real HTTP receiver on 127.0.0.1 that can be down, refuse, or answer slowly; a follower killed
with SIGKILL mid-run and started again."""

from __future__ import annotations

import base64
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from facefleet.edge import notify
from facefleet.errors import FacefleetError

REPO = Path(__file__).resolve().parents[2]


class Receiver:
    """What a webhook receiver got, and what it answers: ``script`` statuses first, then 200."""

    def __init__(self, script: list[int] | None = None, delay: float = 0.0) -> None:
        self.script = list(script or [])
        self.delay = delay
        self.bodies: list[dict] = []
        self.answers: list[int] = []
        self.headers: list[dict] = []
        self.lock = threading.Lock()


@contextmanager
def receiving(rx: Receiver):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(rx.delay)
            with rx.lock:
                status = rx.script.pop(0) if rx.script else 200
                rx.answers.append(status)
                if status == 200:
                    rx.bodies.append(json.loads(body))
                    rx.headers.append(dict(self.headers))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/webhook/door"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def cameras(edge_ws, hamilton, pbs, tmp_path_factory) -> dict[str, Path]:
    from testkit import camera_run

    ws, first = edge_ws
    root = tmp_path_factory.mktemp("notify-cameras")
    for name, clip in (("door", hamilton), ("hall", pbs)):
        camera_run(ws, first, clip, root / name, margin=0.25)
    return {"door": root / "door", "hall": root / "hall"}


def _events(cameras, tmp_path) -> tuple[Path, list[dict]]:
    """A copy of the door camera's events.jsonl (shared by the tests) and its events."""
    events = tmp_path / "output" / "events.jsonl"
    events.parent.mkdir()
    shutil.copy(cameras["door"] / "output" / "events.jsonl", events)
    recorded = [json.loads(line) for line in events.read_text().splitlines()]
    assert len(recorded) >= 5 and {notify.event_kind(e) for e in recorded} == {"named", "unknown"}
    return events, recorded


def _as_recorded(body: dict) -> dict:
    return {k: v for k, v in body.items() if k not in ("kind", "crop_jpeg")}


def test_every_event_reaches_the_webhook_once_in_order_and_only_new_ones_after(cameras, tmp_path):
    events, recorded = _events(cameras, tmp_path)
    rx = Receiver()
    with receiving(rx) as url:
        receiver = notify.Receiver(url, token="s3cret")
        # a first run starts at the end: what is already there is history
        assert notify.follow(events, receiver, once=True).sent == 0 and rx.bodies == []
        notify.state_path(events).unlink()
        stats = notify.follow(events, receiver, once=True, from_start=True)
        assert stats.sent == len(recorded) and not stats.skipped and stats.retries == 0
        assert [_as_recorded(b) for b in rx.bodies] == recorded
        assert [b["kind"] for b in rx.bodies] == [notify.event_kind(e) for e in recorded]
        assert all(h["Authorization"] == "Bearer s3cret" for h in rx.headers)
        assert all(h["Content-Type"] == "application/json" for h in rx.headers)
        # nothing twice; then only what the camera records next (the hall camera's run appended)
        assert notify.follow(events, receiver, once=True).sent == 0
        more = (cameras["hall"] / "output" / "events.jsonl").read_text()
        with open(events, "a") as fh:
            fh.write(more)
        stats = notify.follow(events, receiver, once=True, kinds=("unknown",))
        new = [json.loads(line) for line in more.splitlines()]
        unknown = [e for e in new if notify.event_kind(e) == "unknown"]
        assert stats.sent == len(unknown) and stats.filtered == len(new) - len(unknown)
        assert [_as_recorded(b) for b in rx.bodies[len(recorded) :]] == unknown


def test_a_receiver_that_is_down_or_refuses_loses_nothing_else(cameras, tmp_path):
    events, recorded = _events(cameras, tmp_path)
    waits: list[float] = []
    # down for three tries (503, 503, 429), then refuses the second event for good (400)
    rx = Receiver(script=[503, 503, 429, 200, 400])
    with receiving(rx) as url:
        stats = notify.follow(events, notify.Receiver(url), once=True, from_start=True, sleep=waits.append)
    assert waits == [0.5, 1.0, 2.0] and stats.retries == 3
    assert rx.answers[:5] == [503, 503, 429, 200, 400]
    assert [_as_recorded(b) for b in rx.bodies] == [recorded[0], *recorded[2:]]
    assert len(stats.skipped) == 1 and "HTTP 400" in stats.skipped[0]
    assert f"track {recorded[1]['track_id']}" in stats.skipped[0]
    assert notify.backoff(10) == notify.BACKOFF[1]
    with pytest.raises(FacefleetError, match="http:// or https://"):
        notify.Receiver("file:///etc/passwd")


def test_an_unreachable_receiver_keeps_the_events_for_the_next_run(cameras, tmp_path):
    events, recorded = _events(cameras, tmp_path)
    rx = Receiver()
    with receiving(rx) as url:
        pass  # the port is closed again: nothing listens there
    with pytest.raises(notify.NotifyError, match=r"3 tries\); this event and the rest are kept"):
        notify.follow(events, notify.Receiver(url), once=True, from_start=True, tries=3, sleep=lambda s: None)
    assert notify.read_state(notify.state_path(events))["offset"] == 0
    with receiving(rx) as url:
        assert notify.follow(events, notify.Receiver(url), once=True).sent == len(recorded)
    assert [_as_recorded(b) for b in rx.bodies] == recorded


def test_a_line_being_written_waits_a_torn_one_is_skipped_and_a_new_file_is_read_anew(cameras, tmp_path):
    events, recorded = _events(cameras, tmp_path)
    rx = Receiver()
    with receiving(rx) as url:
        receiver = notify.Receiver(url)
        notify.follow(events, receiver, once=True)  # from the end
        line = json.dumps(recorded[0])
        with open(events, "a") as fh:
            fh.write(line[:40])  # recognize is writing it
        assert notify.follow(events, receiver, once=True).sent == 0
        with open(events, "a") as fh:
            fh.write(line[40:] + "\n" + '{"ts": "torn by a cr\n')  # then one torn by a crash, ended
        stats = notify.follow(events, receiver, once=True)
        assert (stats.sent, stats.bad_lines) == (1, 1) and _as_recorded(rx.bodies[-1]) == recorded[0]
        # the device started a new, shorter file: read from its start
        events.write_text(json.dumps(recorded[1]) + "\n")
        assert notify.follow(events, receiver, once=True).sent == 1
        assert _as_recorded(rx.bodies[-1]) == recorded[1]


def test_the_crop_goes_along_when_asked(cameras, tmp_path):
    events, recorded = _events(cameras, tmp_path)
    rx = Receiver()
    with receiving(rx) as url:
        receiver = notify.Receiver(url, with_crop=True)
        stats = notify.follow(events, receiver, once=True, from_start=True, kinds=("unknown",))
    with_crops = [e for e in recorded if notify.event_kind(e) == "unknown" and e.get("crop")]
    assert with_crops and stats.sent == sum(1 for e in recorded if notify.event_kind(e) == "unknown")
    sent = {b["crop"]: b for b in rx.bodies if b.get("crop")}
    for e in with_crops:
        jpeg = base64.b64decode(sent[e["crop"]]["crop_jpeg"])
        assert jpeg[:2] == b"\xff\xd8" and jpeg == Path(e["crop"]).read_bytes()


def test_a_follower_killed_mid_run_resends_at_most_one_event(cameras, tmp_path):
    events, recorded = _events(cameras, tmp_path)
    rx = Receiver(delay=0.15)  # a slow receiver: the kill lands while events are in flight
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with receiving(rx) as url:
        argv = [sys.executable, "-m", "facefleet.cli.main", "edge", "notify", "--url", url]
        argv += ["--events", str(events), "--from-start", "--max-seconds", "60"]
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while len(rx.bodies) < 2 and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
        got = len(rx.bodies)
        assert 2 <= got < len(recorded), "the kill came too late to test anything"
        done = subprocess.run([*argv[:-2], "--once"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    bodies = [_as_recorded(b) for b in rx.bodies]
    # every event arrived, in order; the one in flight at the kill may have come twice
    dedup = [b for i, b in enumerate(bodies) if i == 0 or b != bodies[i - 1]]
    assert dedup == recorded and len(bodies) - len(recorded) <= 1
    assert "event(s) sent" in done.stdout
