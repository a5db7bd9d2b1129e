"""The model server under a fleet's load: simulated devices on loopback poll their alias and
send heartbeats, then all fetch a new bundle at once.

    .venv/bin/python bench/bench_model_server.py [--devices 500] [--duration 60] [--poll 5]
        [--heartbeat 15] [--bundle-mb 5] [--clients 2]

A fresh workspace with a real MLflow registry (SQLite) holds version 1 (small) as
``@production`` and version 2 (a ``--bundle-mb`` MB gallery). ``facefleet serve`` runs as a
subprocess; ``--clients`` processes run the devices with asyncio + httpx, each device with
its own token. A device first downloads version 1, then every ``--poll`` s (random phase)
asks for ``/v1/models/face_model/production/bundle.tar.gz`` with ``If-None-Match`` (304 while
nothing changed) and every ``--heartbeat`` s posts a heartbeat. After ``--duration`` s the
bench moves ``@production`` to version 2 (the audited promote): every device downloads it on
its next poll. Reported: requests/s, p50/p99 latency of the steady phase and of the roll-out,
errors (any status other than 200/304, any exception or timeout), the server's peak RSS, and
the time from the promote until the last device holds version 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
MODEL = "face_model"


# -- the workspace -------------------------------------------------------------------------------
def make_bundle(ws, version: int, megabytes: float, seed: int) -> Path:
    from facefleet.registry.format import write_bundle
    from facefleet.train.pipeline import signing_key

    rng = np.random.default_rng(seed)
    rows = max(8, int(megabytes * 1e6 / (128 * 4)))  # a gallery of float32 vectors: ~incompressible
    labels = [f"person_{i:04d}" for i in range(min(rows, 500))]
    y = np.arange(rows) % len(labels)
    arrays = {
        "gallery": rng.normal(size=(rows, 128)).astype(np.float32),
        "gallery_labels": y.astype(np.int32),
        "centroids": rng.normal(size=(len(labels), 128)).astype(np.float32),
        "temperature": np.asarray(0.1),
    }
    manifest = {
        "format": 1, "model": MODEL, "version": version, "name": f"bench-{version}",
        "embedder_id": "bench", "labels": labels, "thresholds": dict.fromkeys(labels, 0.5),
        "method": "nearest", "metrics": {}, "created": "2026-01-01T00:00:00Z",
    }  # fmt: skip
    return write_bundle(
        ws.models_dir / MODEL / str(version), manifest=manifest, arrays=arrays, private_key=signing_key(ws)
    )


def prepare(root: Path, devices: int, megabytes: float):
    from facefleet.fleet import records
    from facefleet.registry import tracking
    from facefleet.registry.versions import promote
    from facefleet.workspace import Workspace

    ws = Workspace.init(root)
    client = tracking.configure(ws)
    client.create_registered_model(MODEL)
    for version, size in ((1, 0.1), (2, megabytes)):
        bundle = make_bundle(ws, version, size, seed=version)
        client.create_model_version(
            MODEL, source=bundle.resolve().as_uri(), tags={"name": f"bench-{version}"}
        )
    promote(ws, 1, "production", why="bench start")
    store = records.open_store(ws)
    try:
        tokens = [records.create_token(store, f"cam{i:04d}") for i in range(devices)]
    finally:
        store.close()
    return ws, tokens


# -- the devices -----------------------------------------------------------------------------------
async def device(http, base: str, token: str, name: str, args, switch_at: float, stats: dict) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{base}/v1/models/{MODEL}/production/bundle.tar.gz"
    etag, version = None, None
    await asyncio.sleep(random.uniform(0, args.poll))
    next_beat = time.time() + random.uniform(0, args.heartbeat)
    while True:
        now = time.time()
        if now > stats["end"] or version == 2:
            break
        phase = "rollout" if now >= switch_at else "steady" if version else "first"
        if phase != "rollout":
            stats["steady_count"] += 1
        t0 = time.perf_counter()
        try:
            req_headers = {**headers, **({"If-None-Match": f'"{etag}"'} if etag else {})}
            async with http.stream("GET", url, headers=req_headers) as resp:
                size = 0
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                code = resp.status_code
                if code == 200:
                    etag = resp.headers["etag"].strip('"')
                    got = int(resp.headers["x-facefleet-version"])
                    if got == 2 and version != 2:
                        stats["got_v2"].append(time.time())
                    version = got
            stats["lat"][phase].append(time.perf_counter() - t0)
            stats["codes"][str(code)] = stats["codes"].get(str(code), 0) + 1
            if code not in (200, 304):
                stats["errors"].append(f"GET {code}")
            stats["bytes"] += size
        except Exception as exc:  # noqa: BLE001 - counted as an error
            stats["errors"].append(f"GET {type(exc).__name__}: {exc}"[:200])
        if time.time() >= next_beat:
            next_beat += args.heartbeat
            stats["steady_count"] += time.time() < switch_at
            t0 = time.perf_counter()
            try:
                beat = {"device": name, "model": MODEL, "version": version, "fps": 12.5}
                resp = await http.post(f"{base}/v1/heartbeat", json=beat, headers=headers)
                stats["lat"]["heartbeat"].append(time.perf_counter() - t0)
                if resp.status_code != 200:
                    stats["errors"].append(f"heartbeat {resp.status_code}")
            except Exception as exc:  # noqa: BLE001
                stats["errors"].append(f"heartbeat {type(exc).__name__}: {exc}"[:200])
        await asyncio.sleep(max(0.0, args.poll - (time.perf_counter() - t0)) * random.uniform(0.9, 1.1))


def client_process(base: str, tokens: list[tuple[str, str]], args, switch_at: float, out: str) -> None:
    import httpx

    async def run() -> dict:
        stats = {
            "lat": {"first": [], "steady": [], "rollout": [], "heartbeat": []},
            "codes": {}, "errors": [], "got_v2": [], "bytes": 0,
            "end": switch_at + args.rollout_timeout, "steady_count": 0,
        }  # fmt: skip
        # a device keeps its connection between polls (the server keeps idle ones for 75 s)
        n = len(tokens) + 10
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n, keepalive_expiry=60.0)
        timeout = httpx.Timeout(args.timeout)
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
            await asyncio.gather(*(device(http, base, t, n, args, switch_at, stats) for n, t in tokens))
        return stats

    Path(out).write_text(json.dumps(asyncio.run(run())))


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=500)
    ap.add_argument("--duration", type=float, default=60.0, help="steady phase, seconds")
    ap.add_argument("--poll", type=float, default=5.0)
    ap.add_argument("--heartbeat", type=float, default=15.0)
    ap.add_argument("--bundle-mb", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=2, help="client processes")
    ap.add_argument("--timeout", type=float, default=30.0, help="per request")
    ap.add_argument("--rollout-timeout", type=float, default=120.0)
    args = ap.parse_args()
    from testkit import free_port, wait_port

    from facefleet.registry.versions import promote

    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        ws, tokens = prepare(Path(tmp) / "ws", args.devices, args.bundle_mb)
        v2 = ws.models_dir / MODEL / "2"
        print(
            f"{args.devices} devices, bundle v2 {sum(f.stat().st_size for f in v2.iterdir()) / 1e6:.1f} MB",
            flush=True,
        )
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true"}
        cmd = [sys.executable, "-m", "facefleet.cli.main", "-w", str(ws.root), "serve", "--port", str(port)]
        log = open(Path(tmp) / "server.log", "wb")  # noqa: SIM115
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_port(port, 60)
            base = f"http://127.0.0.1:{port}"
            # one request first: the server imports MLflow on its first alias lookup (seconds)
            import httpx

            warm = httpx.get(
                f"{base}/v1/models/{MODEL}/production/manifest",
                headers={"Authorization": f"Bearer {tokens[0]}"},
                timeout=120,
            )
            warm.raise_for_status()
            start = time.time() + 2
            switch_at = start + args.duration
            named = [(f"cam{i:04d}", t) for i, t in enumerate(tokens)]
            ctx = mp.get_context("spawn")
            outs = [str(Path(tmp) / f"client{i}.json") for i in range(args.clients)]
            procs = [
                ctx.Process(
                    target=client_process, args=(base, named[i :: args.clients], args, switch_at, outs[i])
                )
                for i in range(args.clients)
            ]
            for p in procs:
                p.start()
            peak = 0.0
            promoted_at = None
            while any(p.is_alive() for p in procs):
                peak = max(peak, rss_mb(server.pid))
                if promoted_at is None and time.time() >= switch_at:
                    promote(ws, 2, "production", why="bench roll-out")
                    promoted_at = time.time()
                    print(f"promoted v2 at +{promoted_at - start:.1f} s", flush=True)
                time.sleep(0.25)
            for p in procs:
                p.join()
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()
        parts = [json.loads(Path(o).read_text()) for o in outs if Path(o).exists()]
        server_log = (Path(tmp) / "server.log").read_text(errors="replace")
    lat = {k: sum((p["lat"][k] for p in parts), []) for k in ("first", "steady", "rollout", "heartbeat")}
    codes: dict[str, int] = {}
    for p in parts:
        for k, v in p["codes"].items():
            codes[k] = codes.get(k, 0) + v
    errors = sum((p["errors"] for p in parts), [])
    got = sorted(sum((p["got_v2"] for p in parts), []))
    steady_n = sum(p["steady_count"] for p in parts)
    total = sum(len(v) for v in lat.values())
    print(f"requests: {total} ({codes}), errors: {len(errors)}")
    first = f"first download (v1) p50 {pct(lat['first'], 50):.1f} ms p99 {pct(lat['first'], 99):.1f} ms"
    print(first)
    poll = f"poll p50 {pct(lat['steady'], 50):.1f} ms p99 {pct(lat['steady'], 99):.1f} ms"
    beat = f"heartbeat p50 {pct(lat['heartbeat'], 50):.1f} ms p99 {pct(lat['heartbeat'], 99):.1f} ms"
    print(f"steady phase: {steady_n / args.duration:.0f} requests/s incl. heartbeats; {poll}; {beat}")
    roll = f"p50 {pct(lat['rollout'], 50):.1f} ms p99 {pct(lat['rollout'], 99):.1f} ms"
    served = sum(p["bytes"] for p in parts) / 1e9
    print(f"roll-out: {len(lat['rollout'])} requests, {roll}, {served:.2f} GB in all")
    last = f"; the last {got[-1] - promoted_at:.1f} s after the promote" if promoted_at and got else ""
    print(f"devices holding v2: {len(got)} of {args.devices}{last}")
    print(f"server peak RSS: {peak:.0f} MB")
    for e in sorted(set(errors))[:10]:
        print(f"  error: {e} (x{errors.count(e)})")
    tracebacks = [line for line in server_log.splitlines() if "Error" in line or "Exception" in line]
    for line in sorted(set(tracebacks))[:10]:
        print(f"  server: {line[:200]}")
    return 0 if not errors and len(got) == args.devices else 1


if __name__ == "__main__":
    sys.exit(main())
