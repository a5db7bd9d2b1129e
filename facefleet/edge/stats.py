"""Benchmark figures of a run: frames per second, per-stage latency percentiles, embeddings
per second, CPU use, peak memory, dropped frames and engine restarts (frames that crashed the
face engine's process, see ``edge.supervisor``)."""

from __future__ import annotations

import json
import os
import resource
import time
from collections import Counter
from pathlib import Path
from typing import Any

STAGES = ("decode", "detect", "track", "align", "embed", "classify", "draw", "write")
MAX_SAMPLES = 200_000  # per stage: a day-long run keeps the first ones, still ample for p95


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation; 0 for no values."""
    if not values:
        return 0.0
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


class RunStats:
    """Collects stage timings while a run goes; ``summary()`` turns them into figures."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {s: [] for s in STAGES}
        self.frames = 0
        self.embeddings = 0
        self.dropped = 0
        self.frame_errors = 0  # frames the face engine failed on (skipped, the run went on)
        self.face_frames = 0  # frames with at least one face on screen
        self.name_frames: Counter = Counter()  # frames on which each name (None = unknown) was shown
        self.crashed_frames: list[int] = []  # frames the engine's process died on (supervised runs)
        self.engine_restarts = 0  # new engine processes started after one died
        self.restart_seconds = 0.0  # time spent starting a new engine process after a crash
        self._wall0 = time.perf_counter()
        self._cpu0 = time.process_time()
        self._wall1: float | None = None
        self._cpu1: float | None = None

    def add(self, stage: str, seconds: float) -> None:
        bucket = self.samples.setdefault(stage, [])
        if len(bucket) < MAX_SAMPLES:
            bucket.append(seconds)

    def count_names(self, names) -> None:
        """One more frame on which each of ``names`` was shown."""
        for name in names:
            self.name_frames[name] += 1

    @property
    def consumed(self) -> int:
        """Frames taken from the source: processed ones and the ones that crashed the engine."""
        return self.frames + len(self.crashed_frames)

    def stop(self) -> None:
        self._wall1 = time.perf_counter()
        self._cpu1 = time.process_time()

    def elapsed(self) -> tuple[float, float]:
        """(wall, CPU) seconds of the run."""
        wall = (self._wall1 or time.perf_counter()) - self._wall0
        cpu = (self._cpu1 or time.process_time()) - self._cpu0
        return wall, cpu

    def peak_rss(self) -> int:
        return peak_rss_bytes()

    def summary(self) -> dict[str, Any]:
        wall, cpu = self.elapsed()
        stages = {}
        for name, vals in self.samples.items():
            if len(vals):
                stages[name] = {
                    "count": len(vals),
                    "p50_ms": round(percentile(vals, 50) * 1000, 3),
                    "p95_ms": round(percentile(vals, 95) * 1000, 3),
                    "max_ms": round(max(vals) * 1000, 3),
                }
        return {
            "frames": self.frames,
            "seconds": round(wall, 3),
            "fps": round(self.frames / wall, 2) if wall > 0 else 0.0,
            "embeddings": self.embeddings,
            "embeddings_per_s": round(self.embeddings / wall, 3) if wall > 0 else 0.0,
            "cpu_percent": round(100.0 * cpu / wall, 1) if wall > 0 else 0.0,
            "peak_rss_mb": round(self.peak_rss() / 2**20, 1),
            "dropped_frames": self.dropped,
            "frame_errors": self.frame_errors,
            "engine_restarts": self.engine_restarts,
            "crashed_frames": list(self.crashed_frames),
            "restart_seconds": round(self.restart_seconds, 3),
            "cores": os.cpu_count(),
            "stages": stages,
        }


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if os.uname().sysname == "Darwin" else peak * 1024)


def format_table(summary: dict[str, Any]) -> str:
    """The summary as a plain-text table for the terminal."""
    lines = [
        f"frames {summary['frames']}  in {summary['seconds']:.1f} s  ->  {summary['fps']:.1f} FPS",
        f"embeddings {summary['embeddings']} ({summary['embeddings_per_s']:.2f}/s)   "
        f"CPU {summary['cpu_percent']:.0f} %   peak RSS {summary['peak_rss_mb']:.0f} MB   "
        f"dropped {summary['dropped_frames']}   frame errors {summary.get('frame_errors', 0)}",
        f"{'stage':<10}{'count':>8}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}",
    ]
    for name, s in summary["stages"].items():
        lines.append(f"{name:<10}{s['count']:>8}{s['p50_ms']:>10.2f}{s['p95_ms']:>10.2f}{s['max_ms']:>10.2f}")
    restarts = summary.get("engine_restarts", 0)
    if restarts:
        crashed = ", ".join(str(i) for i in summary.get("crashed_frames", []))
        where = f"crashed on frame {crashed}" if crashed else "crashed while starting"
        lines.insert(
            2, f"engine restarts {restarts} ({where}; {summary.get('restart_seconds', 0.0):.1f} s restarting)"
        )
    return "\n".join(lines)


def write_json(summary: dict[str, Any], path: Path) -> None:
    from facefleet.fileio import atomic_write_text

    atomic_write_text(Path(path), json.dumps(summary, indent=1) + "\n")
