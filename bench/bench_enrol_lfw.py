"""Enrolment of lfw_dev (3,409 photos) locally and on a loopback Dask cluster.

    .venv/bin/python bench/bench_enrol_lfw.py [--data ../shared/data/faces/lfw_dev] [--limit N]
        [--runs local1,local2,dask1,dask2]

Every run enrols the same photos into a fresh workspace (``people/<name>/*.jpg`` as one person
each, ``strangers/*.jpg`` by file name) with the ONNX graph already cached:

* ``local1`` / ``local2``: this process / a pool of 2 processes (the pool's start-up is in
  the time: a user pays it on every call);
* ``dask1`` / ``dask2``: a real ``dask scheduler`` and 1 or 2 ``dask worker --nthreads 1``
  subprocesses on 127.0.0.1, warmed up beforehand (each worker builds its engine once, on a
  four-photo enrolment outside the timing); then the same photos through the Dask path with
  no face work (a task returning a one-face result), which is the overhead Dask adds.

Prints images/s per run and the overhead Dask adds per image (Dask with N workers against N
local processes). Only the client writes the store, so the store writes are in every time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("FACEFLEET_NO_PROGRESS", "1")
# the workers import fake_analysis from this file (as bench_enrol_lfw, not __main__)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p
)
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def plan(data: Path, limit: int | None) -> list[tuple[str, Path]]:
    from facefleet.enrol import plan_flat, plan_folder

    items = plan_folder(data / "people") + plan_flat(data / "strangers")
    return items[:limit] if limit else items


def fresh_workspace(root: Path, cache: Path):
    from facefleet.workspace import Workspace

    ws = Workspace.init(root)
    shutil.rmtree(ws.cache_dir)
    shutil.copytree(cache, ws.cache_dir)
    return ws


def timed(ws, items, **kw) -> tuple[float, int]:
    from facefleet.enrol import enroll

    start = time.perf_counter()
    report = enroll(ws, items, **kw)
    return time.perf_counter() - start, len(report.accepted)


def fake_analysis(engine, path: str):
    """A task with no face work: what the Dask path alone costs for one photo's result."""
    import numpy as np

    from facefleet.vision.batch import FoundFace, ImageAnalysis

    face = FoundFace(
        box=(10, 10, 90, 90),
        landmarks=np.zeros((5, 2), np.float32),
        quality={"size_px": 80.0, "sharpness": 50.0, "frontalness": 0.9, "brightness": 120.0},
        detector="hog",
        embedding=np.zeros(128, np.float32),
    )
    return ImageAnalysis(path=path, faces=[face], size=(250, 250))


def dask_overhead(ws, items, address: str) -> float:
    """Seconds per photo of the Dask path with no face work (tasks of ``compute.chunk`` files)."""
    from facefleet import compute
    from facefleet.vision import dask_backend

    cfg = compute.for_workspace(ws, address)
    jobs = [(str(p), ()) for _, p in items]
    import bench_enrol_lfw  # by module name: the workers cannot import __main__

    task = bench_enrol_lfw.fake_analysis
    start = time.perf_counter()
    n = sum(1 for _ in dask_backend.map_files(task, jobs, ws.vision_config(), cfg))
    return (time.perf_counter() - start) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "faces" / "lfw_dev")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--runs", default="local1,local2,dask1,dask2")
    args = ap.parse_args()
    from clusterkit import DaskCluster

    from facefleet.workspace import Workspace

    items = plan(args.data, args.limit)
    runs = args.runs.split(",")
    print(f"{len(items)} photos from {args.data}; runs {runs}; os.cpu_count()={os.cpu_count()}", flush=True)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-lfw-") as tmp:
        tmp = Path(tmp)
        warm = Workspace.init(tmp / "warm")
        warm.engine().embedder  # noqa: B018 - convert/load the ONNX graph once, outside every timing
        for run in runs:
            kind, n = run[:-1], int(run[-1])
            ws = fresh_workspace(tmp / run, warm.cache_dir)
            if kind == "local":
                seconds, accepted = timed(ws, items, workers=n)
            else:
                cluster = DaskCluster(tmp / f"cluster-{run}").start(n_workers=n)
                try:
                    scratch = fresh_workspace(tmp / f"scratch-{run}", warm.cache_dir)
                    timed(scratch, items[: 4 * n], scheduler=cluster.address)  # build every worker's engine
                    seconds, accepted = timed(ws, items, scheduler=cluster.address)
                    per = dask_overhead(scratch, items, cluster.address)
                    print(
                        f"{run}: the Dask path alone (no face work): {per * 1000:.2f} ms per photo",
                        flush=True,
                    )
                finally:
                    from facefleet import compute

                    compute.close_clients()
                    cluster.stop()
            results[run] = {
                "seconds": round(seconds, 1),
                "accepted": accepted,
                "images_s": len(items) / seconds,
            }
            print(json.dumps({"run": run, **results[run]}), flush=True)
    print(f"\n{'run':8} {'seconds':>8} {'images/s':>9} {'accepted':>9}")
    for run, r in results.items():
        print(f"{run:8} {r['seconds']:8.1f} {r['images_s']:9.2f} {r['accepted']:9d}")
    for n in (1, 2):
        local, dask = results.get(f"local{n}"), results.get(f"dask{n}")
        if local and dask:
            extra_ms = 1000 * (dask["seconds"] - local["seconds"]) / len(items)
            print(f"Dask with {n} worker(s) vs {n} local process(es): {extra_ms:+.1f} ms per image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
