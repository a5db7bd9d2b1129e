"""What the supervised ``recognize`` costs: FPS on a clip with the engine in a child process
and in process, the per-frame bookkeeping of each, and how long a restart takes after a
real crash (the ``FACEFLEET_FAULT_INJECT`` hook aborts the engine process on one frame).

    taskset -c 1 .venv/bin/python bench/bench_supervisor.py [--workspace WS] [--clip pbs]
        [--runs 2] [--crash-frame 100] [--json FILE]

Needs a workspace with a trained bundle; without one it builds a throwaway one (as
bench_edge.py does). Prints figures only; one run each unless ``--runs``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_edge import CLIPS, throwaway_workspace  # noqa: E402


def bookkeeping_us(frames: int = 20_000) -> dict[str, float]:
    """Microseconds per frame of the stats/hook calls the loop makes, in process and in the
    engine process (shared memory), for a frame with six stage timings and one name."""
    from facefleet.edge.recognize import LoopHooks
    from facefleet.edge.stats import RunStats
    from facefleet.edge.supervisor import SharedStats, _ChildHooks

    outputs = SimpleNamespace(
        event_count=3, unknown_saved=1, named_saved=0, shots=SimpleNamespace(saved=[]), video_path=None
    )
    stages = ("decode", "detect", "track", "align", "embed", "classify")

    def loop(stats, hooks) -> float:
        t0 = time.perf_counter()
        for i in range(frames):
            frame = SimpleNamespace(index=i)
            stats.add("decode", 0.001)
            hooks.begin(frame)
            for stage in stages[1:]:
                stats.add(stage, 0.002)
            stats.embeddings += 0
            stats.face_frames += 1
            stats.count_names({"someone"})
            stats.frames += 1
            hooks.done(frame, outputs)
        return (time.perf_counter() - t0) / frames * 1e6

    plain = loop(RunStats(), LoopHooks())
    shared = SharedStats.create()
    try:
        child = SharedStats.attach(shared.shm.name, shared.labels(), lambda msg: None)
        hooks = _ChildHooks(child, SimpleNamespace(send=lambda msg: None), 0, None)
        hooks.pipeline = SimpleNamespace(tracker=SimpleNamespace(next_id=1))
        supervised = loop(child, hooks)
        child.close()
    finally:
        shared.close(unlink=True)
    return {"in_process_us": round(plain, 2), "engine_process_us": round(supervised, 2)}


def run(opts, isolate: bool, fault: str | None = None) -> dict:
    from facefleet.edge.recognize import recognize
    from facefleet.vision.batch import FAULT_ENV

    opts.isolate = isolate
    if fault:
        os.environ[FAULT_ENV] = fault
    else:
        os.environ.pop(FAULT_ENV, None)
    t0 = time.perf_counter()
    try:
        summary = recognize(opts)
    finally:
        os.environ.pop(FAULT_ENV, None)
    s = summary.stats
    return {
        "frames": summary.frames,
        "fps": s["fps"],
        "cpu_percent": s["cpu_percent"],
        # frames per CPU-second of the loop: on a loaded machine, closer to an idle core
        "cpu_fps": round(summary.frames / max(s["seconds"] * s["cpu_percent"] / 100, 1e-9), 1),
        "peak_rss_mb": s["peak_rss_mb"],
        "call_seconds": round(time.perf_counter() - t0, 2),  # with engine start(s)
        "engine_restarts": summary.engine_restarts,
        "restart_seconds": s["restart_seconds"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path)
    parser.add_argument("--clip", choices=list(CLIPS), default="pbs")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--crash-frame", type=int, default=100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("FACEFLEET_NO_PROGRESS", "1")

    from facefleet.edge.recognize import RecognizeOptions
    from facefleet.workspace import Workspace

    tmp = tempfile.TemporaryDirectory(prefix="bench-supervisor-")
    ws = Workspace.open(args.workspace) if args.workspace else throwaway_workspace(Path(tmp.name) / "ws")
    out = Path(tmp.name) / "out"
    opts = RecognizeOptions(
        source=str(CLIPS[args.clip]),
        model=ws.models_dir / ws.model_name,
        public_key=ws.public_key_path,
        output_dir=out,
        unknown_dir=out / "unknown",
        display=False,
        cache_dir=ws.cache_dir,
        detector=ws.settings.edge.detector,
        embedder=ws.settings.vision.embedder,
    )
    result: dict = {"clip": args.clip, "bookkeeping": bookkeeping_us()}
    print(f"bookkeeping per frame: {result['bookkeeping']}")
    for i in range(args.runs):
        for label, isolate in (("supervised", True), ("in_process", False)):
            figures = run(opts, isolate)
            result.setdefault(label, []).append(figures)
            print(f"run {i + 1} {label:<11} {figures}")
    crash = run(opts, True, fault=f"abort:frame:{args.crash_frame}")
    result["crash"] = crash
    print(f"crash on frame {args.crash_frame}: {crash}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
