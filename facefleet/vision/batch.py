"""Analyse many image files, spread over processes (dlib runs one core per process).

Each worker process holds its own FaceEngine; results come back as plain arrays and dicts.
Native code can still die on an input no guard foresaw (abort, segfault, the OOM killer): a
worker that dies costs only the file it held, which gets ``error: "crashed the face engine
(signal N)"``; the worker is replaced and the batch goes on. Workers die with their parent.

:func:`analyse_files` is the face analysis of ``enroll``, ``identify`` and ``evaluate``;
:func:`map_isolated` runs any per-file function the same way (``collect``, and each Dask
task inside its worker, see ``dask_backend``).
"""

from __future__ import annotations

import fnmatch
import logging
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facefleet.errors import FacefleetError, ImageError
from facefleet.lifetime import main_script_hidden
from facefleet.progress import progress
from facefleet.vision.engine import FaceEngine, VisionConfig

log = logging.getLogger(__name__)


@dataclass
class FoundFace:
    box: tuple[int, int, int, int]
    landmarks: np.ndarray
    quality: dict[str, float]
    detector: str
    embedding: np.ndarray | None
    chip: np.ndarray | None = field(default=None, repr=False)


@dataclass
class ImageAnalysis:
    path: str
    faces: list[FoundFace]
    size: tuple[int, int] | None = None  # width, height
    error: str | None = None


_ENGINE: FaceEngine | None = None

# Test-only fault injection: "abort:GLOB" or "kill:GLOB" (several joined by ",") makes a pool
# worker abort (SIGABRT) or SIGKILL itself on a file whose name matches GLOB, as a native crash
# or the OOM killer would.
FAULT_ENV = "FACEFLEET_FAULT_INJECT"


def _init_worker(config: VisionConfig) -> None:
    global _ENGINE
    _ENGINE = FaceEngine(config)


def analyse_file(
    engine: FaceEngine, path: str, *, fallback: bool = True, keep_chips: bool = False
) -> ImageAnalysis:
    """Load and analyse one file; an unreadable file becomes an ``error``, never an exception."""
    from facefleet.vision.image import load_image

    try:
        rgb = load_image(path)
        faces = engine.analyse(rgb, fallback=fallback, embed=True)
    except ImageError as exc:
        message = str(exc)
        return ImageAnalysis(path=path, faces=[], error=message if path in message else f"{path}: {message}")
    return ImageAnalysis(
        path=path,
        size=(rgb.shape[1], rgb.shape[0]),
        faces=[
            FoundFace(
                box=tuple(int(v) for v in f.box),
                landmarks=f.landmarks,
                quality=f.quality.as_dict(),
                detector=f.detector,
                embedding=f.embedding,
                chip=f.chip if keep_chips else None,
            )
            for f in faces
        ],
    )


def _inject_fault(path: str) -> None:
    for spec in os.environ.get(FAULT_ENV, "").split(","):
        kind, _, pattern = spec.partition(":")
        if pattern and fnmatch.fnmatch(Path(path).name, pattern):
            if kind == "abort":
                os.abort()
            if kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class Failed:
    """What :func:`map_isolated` gives for a file whose worker died or whose ``fn`` raised:
    ``message`` without the path (callers put it in their own result type)."""

    message: str


# a job: fn(engine, path, *args), fn a module-level function the worker can import
Job = tuple[Callable[..., Any], str, tuple]


def _analyse_task(engine: FaceEngine, path: str, fallback: bool, keep_chips: bool) -> ImageAnalysis:
    return analyse_file(engine, path, fallback=fallback, keep_chips=keep_chips)


def _worker_task(job: Job) -> Any:
    fn, path, args = job
    assert _ENGINE is not None
    _inject_fault(path)
    try:
        return fn(_ENGINE, path, *args)
    except Exception as exc:  # one file's engine failure must not end the worker's other files
        return Failed(f"face engine error ({exc})")


def as_analysis(path: str, result: ImageAnalysis | Failed) -> ImageAnalysis:
    """``result`` as an :class:`ImageAnalysis` (a :class:`Failed` one becomes its ``error``)."""
    if isinstance(result, Failed):
        return ImageAnalysis(path=path, faces=[], error=f"{path}: {result.message}")
    return result


def crash_message(exitcode: int | None) -> str:
    """What a file gets when the worker analysing it died."""
    if exitcode is not None and exitcode < 0:
        return f"crashed the face engine (signal {-exitcode})"
    return f"crashed the face engine (exit status {exitcode})"


def worker_count(requested: int | None, jobs: int) -> int:
    cores = os.cpu_count() or 1
    wanted = requested or cores
    return max(1, min(wanted, jobs, cores * 2))


@dataclass
class PoolStats:
    """How the last pool run went (``analyse_files(stats=...)``)."""

    crashes: int = 0
    restarts: int = 0


def analyse_files(
    paths: Sequence[Path | str],
    config: VisionConfig,
    *,
    workers: int | None = None,
    fallback: bool = True,
    keep_chips: bool = False,
    engine: FaceEngine | None = None,
    desc: str = "faces",
    stats: PoolStats | None = None,
) -> Iterator[ImageAnalysis]:
    """Analyse ``paths`` in order: one file in this process, more over a pool of worker
    processes in which a worker that dies costs only the file it held (or on the Dask
    cluster when the caller runs under ``facefleet.compute.using``)."""
    from facefleet import compute

    cluster = compute.current()
    if cluster is not None:
        from facefleet.vision import dask_backend

        known = engine.embedder.id if engine is not None else None
        yield from dask_backend.analyse_files(
            paths, config, cluster, fallback=fallback, keep_chips=keep_chips, embedder_id=known, desc=desc
        )
        return
    jobs = [(str(p), (fallback, keep_chips)) for p in paths]
    if len(jobs) <= 1:
        engine = engine or FaceEngine(config)
        for path, _ in progress(jobs, total=len(jobs), desc=desc):
            yield analyse_file(engine, path, fallback=fallback, keep_chips=keep_chips)
        return
    results = map_isolated(_analyse_task, jobs, config, workers=workers, stats=stats)
    for (path, _), result in zip(jobs, progress(results, total=len(jobs), desc=desc), strict=True):
        yield as_analysis(path, result)


def map_isolated(
    fn: Callable[..., Any],
    items: Sequence[tuple[str, tuple]],
    config: VisionConfig,
    *,
    workers: int | None = None,
    stats: PoolStats | None = None,
) -> Iterator[Any]:
    """``fn(engine, path, *args)`` for every ``(path, args)`` of ``items``, in order, over a
    pool of worker processes (each with its engine for ``config``). A file whose worker died
    gives ``Failed("crashed the face engine (signal N)")``, one whose ``fn`` raised
    ``Failed("face engine error (...)")``; the batch goes on. ``fn`` must be importable by
    the workers (a module-level function)."""
    if not items:
        return
    pool = Pool(worker_count(workers, len(items)), config, stats)
    try:
        yield from pool.run([(fn, path, tuple(args)) for path, args in items])
    finally:
        pool.close()


def _worker_main(conn, config: VisionConfig, parent_pid: int) -> None:
    """A pool worker: load the engine, say ready, then analyse one job at a time until None."""
    from facefleet.lifetime import die_with_parent

    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        _init_worker(config)
        assert _ENGINE is not None
        embedder_id = _ENGINE.embedder.id  # loads the embedder now, not inside the first file
    except Exception as exc:
        conn.send(("fatal", f"face engine failed to start: {exc}"))
        return
    conn.send(("ready", embedder_id))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        index, job = msg
        conn.send(("done", (index, _worker_task(job))))


class _Worker:
    def __init__(self, ctx, config: VisionConfig) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, config, os.getpid()), daemon=True)
        with main_script_hidden():
            self.proc.start()
        child.close()
        self.ready = False
        self.jobs: deque[int] = deque()  # sent, not yet answered: the first is being analysed


def can_start_workers() -> bool:
    """Whether this process may start worker processes (a daemonic one may not, e.g. a Dask
    worker under a nanny with ``distributed.worker.daemon`` left on)."""
    return not mp.current_process().daemon


class Pool:
    """Worker processes fed jobs over pipes; a dead worker is replaced. One pool can
    :meth:`run` many batches (its workers keep their engines); :meth:`close` ends it."""

    MAX_START_FAILURES = 3

    def __init__(self, count: int, config: VisionConfig, stats: PoolStats | None = None) -> None:
        # spawn, not fork: forking after onnxruntime or dlib started threads can deadlock the child.
        self.ctx = mp.get_context("spawn")
        self.config = config
        self.stats = stats if stats is not None else PoolStats()
        self.start_failures = 0
        self.embedder_id: str | None = None  # sent by each worker when its engine is ready
        self.workers = [_Worker(self.ctx, config) for _ in range(count)]

    def grow(self, count: int) -> None:
        """At least ``count`` workers from now on (call between runs)."""
        while len(self.workers) < count:
            self.workers.append(_Worker(self.ctx, self.config))

    def run(self, jobs: list[Job], *, depth: int = 1) -> Iterator[Any]:
        """Each job's result (or :class:`Failed`), in the order of ``jobs``. Each worker is
        sent up to ``depth`` jobs ahead (answered in order, so a dead worker's first open job
        is the one it died on and the others are sent again): more than 1 saves a round trip
        between processes per job where jobs are short and the pool has one worker."""
        pending = deque(enumerate(jobs))
        done: dict[int, Any] = {}
        next_out = 0
        while next_out < len(jobs):
            for w in self.workers:
                while w.ready and len(w.jobs) < depth and pending:
                    index, job = pending.popleft()
                    w.jobs.append(index)
                    w.conn.send((index, job))
            waitables = [w.conn for w in self.workers] + [w.proc.sentinel for w in self.workers]
            ready = set(mp_connection.wait(waitables))
            for i, w in enumerate(self.workers):
                if (w.conn in ready or w.proc.sentinel in ready) and not self._drain(w, done):
                    self.workers[i] = self._replace(w, jobs, done, pending)
            while next_out in done:
                yield done.pop(next_out)
                next_out += 1

    def _drain(self, w: _Worker, done: dict[int, Any]) -> bool:
        """Read what ``w`` sent; False when it is gone."""
        try:
            while w.conn.poll():
                kind, payload = w.conn.recv()
                if kind == "ready":
                    w.ready = True
                    self.embedder_id = payload
                    self.start_failures = 0
                elif kind == "done":
                    index, result = payload
                    done[index] = result
                    w.jobs.remove(index)
                elif kind == "fatal":
                    raise FacefleetError(payload)
        except (EOFError, OSError):
            return False
        return w.proc.is_alive()

    def _replace(self, w: _Worker, jobs: list[Job], done: dict[int, Any], pending: deque) -> _Worker:
        w.proc.join(5)
        w.conn.close()
        code = w.proc.exitcode
        if w.jobs:
            culprit = w.jobs.popleft()
            pending.extendleft((i, jobs[i]) for i in reversed(w.jobs))  # sent again, first
            path = jobs[culprit][1]
            done[culprit] = Failed(crash_message(code))
            self.stats.crashes += 1
            log.warning("%s: %s; starting a new worker", path, crash_message(code))
        elif not w.ready:
            self.start_failures += 1
            if self.start_failures >= self.MAX_START_FAILURES:
                raise FacefleetError(f"the face engine worker keeps dying at start ({crash_message(code)})")
        self.stats.restarts += 1
        return _Worker(self.ctx, self.config)

    def close(self) -> None:
        for w in self.workers:
            with suppress(OSError, ValueError):
                w.conn.send(None)
        deadline = time.monotonic() + 5
        for w in self.workers:
            w.proc.join(max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(2)
            w.conn.close()
