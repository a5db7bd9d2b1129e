"""Benchmark ``facefleet edge notify``: events/s to a webhook on 127.0.0.1, and what its
at-least-once bookkeeping (the state file, written atomically after every event) costs,
beside plain POSTs of the same bodies with no bookkeeping.

    python bench/bench_notify.py [--events 1000] [--from events.jsonl]

The events are copies of one event: the first of a recorded ``events.jsonl`` given with
``--from``, or one shaped like it. Pin to one core for device-like figures:
``taskset -c 0 python bench/bench_notify.py``.
"""

from __future__ import annotations

import argparse
import http.server
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SAMPLE = {
    "ts": "2026-12-08T00:54:16.560+00:00",
    "device": "door",
    "source": "usb:0",
    "run": "3aa5bc28",
    "frame": 120,
    "track_id": 7,
    "name": "lin_manuel_miranda",
    "candidate": "lin_manuel_miranda",
    "distance": 0.41,
    "score": -0.12,
    "margin": 0.05,
    "box": [120, 80, 220, 180],
    "quality": {"size_px": 100.0, "sharpness": 120.5, "frontalness": 0.91, "brightness": 110.0},
    "landmarks": [[150.0, 110.0], [190.0, 111.0], [170.0, 130.0], [155.0, 150.0], [185.0, 151.0]],
    "model_version": 3,
    "crop": None,
    "crop_kind": None,
}


def serve() -> tuple[http.server.ThreadingHTTPServer, str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_POST(self):  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/hook"


def main() -> int:
    from facefleet.edge import notify

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--from", dest="source", type=Path, help="an events.jsonl to take the first event of")
    args = ap.parse_args()
    event = json.loads(args.source.read_text().splitlines()[0]) if args.source else SAMPLE
    server, url = serve()
    receiver = notify.Receiver(url)
    with tempfile.TemporaryDirectory() as tmp:
        events = Path(tmp) / "events.jsonl"
        events.write_text("".join(json.dumps({**event, "frame": i}) + "\n" for i in range(args.events)))
        rows = []
        # baseline: the same bodies POSTed one by one, nothing remembered
        lat = []
        t0 = time.perf_counter()
        for i in range(args.events):
            t = time.perf_counter()
            assert receiver.post({**event, "frame": i}) == 200
            lat.append(time.perf_counter() - t)
        rows.append(("plain POST loop (no state)", time.perf_counter() - t0, lat))
        # the follower: read, filter, post, state file after each event
        t0 = time.perf_counter()
        stats = notify.follow(events, receiver, once=True, from_start=True)
        took = time.perf_counter() - t0
        assert stats.sent == args.events
        rows.append(("edge notify --once (state per event)", took, None))
    server.shutdown()
    print(f"{args.events} events of {len(json.dumps(event))} bytes to a receiver on 127.0.0.1")
    print(f"{'':40} {'events/s':>9} {'ms/event':>9} {'p50 ms':>7} {'p99 ms':>7}")
    for label, secs, lat in rows:
        p50 = p99 = "-"
        if lat:
            q = statistics.quantiles([1000 * x for x in lat], n=100)
            p50, p99 = f"{q[49]:.2f}", f"{q[98]:.2f}"
        print(f"{label:40} {args.events / secs:9.0f} {1000 * secs / args.events:9.2f} {p50:>7} {p99:>7}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
