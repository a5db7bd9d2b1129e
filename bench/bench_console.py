"""Benchmark the web console's pages on a large synthetic workspace.

    python bench/bench_console.py                    # 500 people, 20,000 events, ...
    python bench/bench_console.py --repeat 30 --keep /tmp/bench-ws

The workspace: 500 people (3 enrolled faces each), 20,000 recognition events, 5,000
unknown captures in 300 clusters and 1,500 faces reviewed as strangers (5 of each of 300
people) from 50 devices over 30 days (rows written through the store API; the images are
small generated JPEGs shared between rows), 50 devices with
heartbeats and three deployments each in an inventory of five groups, and two trained model
versions (real training, nearest-centroid, MLflow). Then a real ``facefleet serve`` runs on
127.0.0.1 and every page is fetched ``--repeat`` times by a signed-in client; the server
time is the console's ``Server-Timing`` header (the time inside the app), the size is the
HTML body. Prints median and p95 per page, and the first (cold) request's time; the target
is a median under 200 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def build(root: Path, args: argparse.Namespace) -> None:
    import cv2
    import yaml

    from facefleet.curate.clusters import SCHEMA as CLUSTER_SCHEMA
    from facefleet.fleet import records
    from facefleet.registry.keys import generate_keypair
    from facefleet.registry.versions import promote
    from facefleet.store import now_iso
    from facefleet.train.config import load_config
    from facefleet.train.pipeline import current_embedder_id, train
    from facefleet.web.console import accounts
    from facefleet.workspace import Workspace

    rng = np.random.default_rng(0)
    pyrng = random.Random(0)
    ws = Workspace.init(root)
    generate_keypair(ws.keys_dir)
    emb = current_embedder_id(ws)
    folder = ws.images_dir / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(200):  # small generated "faces": a gradient and a disc
        img = np.full((96, 96, 3), 40 + (i * 7) % 180, np.uint8)
        cv2.circle(img, (48, 48), 30, (200 - i % 150, 120, 60 + i % 190), -1)
        path = folder / f"face{i:03d}.jpg"
        cv2.imwrite(str(path), img)
        files.append(path)
    box = [18, 18, 78, 78]
    quality = {"size_px": 60, "sharpness": 80.0, "frontalness": 0.9, "brightness": 120.0}

    def unit(v: np.ndarray) -> np.ndarray:
        return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)

    centres = unit(rng.normal(size=(args.people, 128)))
    t0 = time.monotonic()
    start = 1_790_000_000  # a fixed 30 days of events
    devices = [f"cam{d:02d}" for d in range(args.devices)]
    with ws.open_store() as st:
        st.ensure_schema(CLUSTER_SCHEMA)
        accounts.ensure(st)
        n = 0

        def face(status: str, person_id=None, meta=None, vector=None, source="collect:bench") -> int:
            """A face row on one of the generated images (under its own sha256), and its vector."""
            nonlocal n
            image_id, _ = st.add_image(files[n % len(files)], source=source, sha256=f"{n:064x}")
            n += 1
            fid = st.add_face(
                image_id, person_id=person_id, box=box, quality=quality, status=status, meta=meta
            )
            if vector is not None:
                st.add_embedding(fid, emb, unit(vector))
            return fid

        def when() -> str:
            return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(start + pyrng.randrange(30 * 86400)))

        with st.transaction():
            people = [st.add_person(f"person_{p:03d}") for p in range(args.people)]
            for p, pid in enumerate(people):
                for _k in range(3):
                    face("in_use", pid, vector=centres[p] + 0.05 * rng.normal(size=128), source="enrol")
            for _e in range(args.events):
                p = pyrng.randrange(args.people)
                meta = {
                    "origin": "events",
                    "device": pyrng.choice(devices),
                    "event_time": when(),
                    "name": f"person_{p:03d}",
                    "proba": 0.995,
                    "dist": round(pyrng.uniform(0.2, 0.5), 3),
                    "margin": 0.2,
                }
                face("selected", meta=meta)  # reviewed already: events, not review work
            ucentres = rng.normal(size=(args.clusters, 128))
            now = now_iso()
            for c in range(1, args.clusters + 1):
                st.conn.execute("INSERT INTO curate_clusters (id, created) VALUES (?, ?)", (c, now))
            for u in range(args.unknowns):
                c = u % args.clusters
                device = pyrng.choice(devices)
                meta = {"origin": "capture", "device": device, "event_time": when(), "name": None}
                fid = face("candidate", meta=meta, vector=unit(ucentres[c]) + 0.04 * rng.normal(size=128))
                st.conn.execute(
                    "INSERT INTO curate_cluster_members (face_id, cluster_id) VALUES (?, ?)", (fid, c + 1)
                )
            scentres = rng.normal(size=(max(1, args.strangers // 5), 128))
            for u in range(args.strangers):  # reviewed strangers: 5 faces of each person
                vector = unit(scentres[u // 5 % len(scentres)]) + 0.04 * rng.normal(size=128)
                face("selected", meta={"origin": "capture"}, vector=vector)
        fst = records.open_store(ws)
        for d, name in enumerate(devices):
            records.record_heartbeat(fst, name, "face_model", 2, 20 + d % 30, "127.0.0.1")
            for run in range(3):
                records.record_deployment(
                    fst,
                    f"run{run:02d}",
                    {
                        "host": name,
                        "model": "face_model",
                        "old_version": run or None,
                        "new_version": run + 1,
                        "result": "ok",
                        "seconds": 3.2,
                        "method": "ssh",
                    },
                )
        fst.close()
        accounts.add_user(st, "bench", "admin", "bench-password")
    groups = {
        f"site{g}": {"hosts": {devices[i]: {"ansible_host": "127.0.0.1"} for i in range(g, args.devices, 5)}}
        for g in range(5)
    }
    (ws.root / "inventory.yaml").write_text(yaml.safe_dump({"all": {"children": groups}}))
    print(f"store rows written in {time.monotonic() - t0:.1f} s", flush=True)
    t0 = time.monotonic()
    config = load_config(workspace_train=None)
    config.search.method = "centroid"
    for name in ("bench1", "bench2"):
        config.name = name
        result = train(ws, config)
    promote(ws, 1, "production", why="bench")
    promote(ws, result.version, "validated", why="bench")
    print(f"two versions trained in {time.monotonic() - t0:.1f} s", flush=True)


def measure(root: Path, repeat: int) -> dict[str, dict[str, float]]:
    import httpx
    from webkit import serving

    with serving(root) as url:
        client = httpx.Client(base_url=url, timeout=120)
        token = client.get("/login").text.split('name="csrf" value="')[1].split('"')[0]
        login = {"username": "bench", "password": "bench-password", "csrf": token}
        r = client.post("/login", data=login, follow_redirects=False)
        assert r.status_code == 303, r.text
        pages = {
            "review (clusters)": "/review",
            "review page 8": "/review?page=8",
            "review (candidates)": "/review?tab=candidates",
            "people": "/people",
            "people page 5": "/people?page=5",
            "person": "/people/" + client.get("/people").text.split('href="/people/')[1].split('"')[0],
            "models": "/models",
            "version": "/models/2",
            "diff": "/models/diff?a=1&b=2",
            "fleet": "/fleet",
            "events": "/events",
            "events page 100": "/events?page=100",
            "events filtered": "/events?device=cam07&person=person_123",
            "events by date": "/events?since=2026-09-25&until=2026-09-28",
        }
        out = {}
        for label, path in pages.items():
            first = client.get(path)  # cold: MLflow import, embedder id, caches
            cold = float(first.headers["server-timing"].split("dur=")[1])
            times, size = [], 0
            for _ in range(repeat):
                r = client.get(path)
                assert r.status_code == 200, (path, r.status_code, r.text[:300])
                times.append(float(r.headers["server-timing"].split("dur=")[1]))
                size = len(r.content)
            times.sort()
            p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
            out[label] = {
                "cold_ms": cold,
                "median_ms": statistics.median(times),
                "p95_ms": p95,
                "kb": size / 1024,
            }
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--people", type=int, default=500)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--unknowns", type=int, default=5_000)
    ap.add_argument("--clusters", type=int, default=300)
    ap.add_argument("--strangers", type=int, default=1_500, help="faces reviewed as strangers")
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--keep", type=Path, help="build (or reuse) the workspace here and keep it")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("FACEFLEET_NO_PROGRESS", "1")
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        root = args.keep or Path(tmp) / "ws"
        if not (root / "facefleet.yaml").exists():
            build(root, args)
        result = measure(root, args.repeat)
    if args.json:
        print(json.dumps(result, indent=1))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'page':22s} {'median ms':>10s} {'p95 ms':>8s} {'first ms':>9s} {'size KB':>8s}")
    for label, r in result.items():
        flag = "" if r["median_ms"] < 200 else "  over 200 ms"
        print(
            f"{label:22s} {r['median_ms']:10.1f} {r['p95_ms']:8.1f} {r['cold_ms']:9.1f} {r['kb']:8.1f}{flag}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
