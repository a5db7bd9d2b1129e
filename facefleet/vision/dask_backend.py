"""Face analysis of many files on a Dask cluster: files in, faces (boxes, landmarks, quality,
embeddings, optional chips) out, in the order given.

Tasks carry a handful of paths (workers sharing the filesystem) or the files' bytes (workers
on other machines) plus the small :class:`VisionConfig`; never a model. Each worker thread
starts one crash-isolated child process (``batch.Pool``) on its first task, which builds the
:class:`FaceEngine` (dlib models, the ONNX embedder) and keeps it for every later task: a photo
that kills the native code kills that child only, costs only that photo (``crashed the face
engine (signal N)``) and the child is replaced. Where the worker may not start processes (a
daemonic worker under a nanny) the engine runs in the worker thread itself; a photo that then
kills the worker is found by re-running its task's files one per task once Dask gives the task
up (``KilledWorker``), and only that photo is marked. Nothing here writes the store: the
caller does, from the results.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import astuple, replace
from pathlib import Path

from facefleet import compute
from facefleet.compute import ComputeConfig, ComputeError, map_ordered
from facefleet.vision import batch
from facefleet.vision.batch import Failed, ImageAnalysis, Pool, as_analysis
from facefleet.vision.engine import FaceEngine, VisionConfig

_LOCAL = threading.local()
_BUILT = {"engines": 0}  # engines built in this worker's threads (read by tests via client.run)
_POOLS: list[Pool] = []  # every thread's isolated child, to count the engines they built
_BUILT_LOCK = threading.Lock()
KILLED = "crashed the face engine (its Dask worker died on it)"


def engines_built() -> int:
    """How many face engines this worker built, in its threads or in their isolated children
    (one per worker thread is the contract; a child replaced after a crash builds another)."""
    with _BUILT_LOCK:
        return _BUILT["engines"] + sum(len(p.workers) + p.stats.restarts for p in _POOLS)


def _worker_config(config: VisionConfig) -> tuple[tuple, VisionConfig]:
    """(cache key, the config this machine runs): a cache folder the client named that does
    not exist here is replaced by the worker's own cache."""
    # the cache folder only says where the ONNX graph is kept, not what it computes
    key = astuple(replace(config, cache_dir=None))
    if config.cache_dir is not None and not Path(config.cache_dir).is_dir():
        config = replace(config, cache_dir=None)
    # a Dask worker thread stands for one core (dask worker --nthreads N), as a local pool
    # process does: one ONNX thread each, not one per core of the machine per thread
    os.environ.setdefault("FACEFLEET_ONNX_THREADS", "1")
    return key, config


def worker_engine(config: VisionConfig) -> FaceEngine:
    """This thread's in-process engine for ``config``, built on first use."""
    engines: dict[tuple, FaceEngine] = getattr(_LOCAL, "engines", None) or {}
    _LOCAL.engines = engines
    key, local = _worker_config(config)
    engine = engines.get(key)
    if engine is None:
        engine = FaceEngine(local)
        _ = engine.embedder  # convert/load the ONNX graph now, once, not inside the first image
        engines[key] = engine
        with _BUILT_LOCK:
            _BUILT["engines"] += 1
    return engine


def worker_pool(config: VisionConfig) -> Pool | None:
    """This thread's crash-isolated child for ``config`` (started on first use), or None when
    this process may not start processes (then the engine runs in the thread)."""
    if not batch.can_start_workers():
        return None
    pools: dict[tuple, Pool] = getattr(_LOCAL, "pools", None) or {}
    _LOCAL.pools = pools
    key, local = _worker_config(config)
    pool = pools.get(key)
    if pool is None:
        for old in pools.values():  # one child per thread: another workspace's engine goes
            old.close()
        pools.clear()
        pool = pools[key] = Pool(1, local)
        with _BUILT_LOCK:
            _POOLS.append(pool)
    return pool


_analyse_one = batch._analyse_task  # analyse_file(engine, path, fallback, keep_chips)


def run_chunk(chunk: list[tuple[str, bytes | None, tuple]], fn, config: VisionConfig, *args):
    """The task: ``fn(engine, local_path, *item_args, *args)`` per file of ``chunk``, in this
    worker thread's isolated child (a crash there gives that file :class:`Failed`) or, where
    there can be none, in the thread; a file sent as bytes is read from a temporary copy
    (under its own name). Returns (embedder id, results)."""
    with tempfile.TemporaryDirectory(prefix="facefleet-") as tmp:
        local: list[str] = []
        for n, (path, data, _) in enumerate(chunk):
            if data is None:
                local.append(path)
                continue
            folder = Path(tmp) / str(n)
            folder.mkdir()
            copy = folder / Path(path).name
            copy.write_bytes(data)
            local.append(str(copy))
        jobs = [(fn, p, (*item_args, *args)) for p, (_, _, item_args) in zip(local, chunk, strict=True)]
        pool = worker_pool(config)
        if pool is not None:
            out = list(pool.run(jobs, depth=len(jobs)))  # the whole chunk in one go
            embedder_id = pool.embedder_id
        else:
            engine = worker_engine(config)
            out = []
            for job_fn, p, job_args in jobs:
                batch._inject_fault(p)  # test hook, as in the pool's children
                try:
                    out.append(job_fn(engine, p, *job_args))
                except Exception as exc:  # as in the pool: one file's failure, not the task's
                    out.append(Failed(f"face engine error ({exc})"))
            embedder_id = engine.embedder.id
    return embedder_id, [_renamed(r, p, path) for r, p, (path, _, _) in zip(out, local, chunk, strict=True)]


def _renamed(result, tmp: str, path: str):
    """Results name the original file, not the worker's temporary copy."""
    if tmp == path:
        return result
    if isinstance(result, ImageAnalysis):
        result.path = path
        if result.error:
            result.error = result.error.replace(tmp, path)
    elif isinstance(result, str):
        result = result.replace(tmp, path)
    elif isinstance(result, Failed):
        result.message = result.message.replace(tmp, path)
    return result


def _payload(path: str, ship: bool) -> tuple[str, bytes | None]:
    if not ship:
        return path, None
    try:
        return path, Path(path).read_bytes()
    except OSError:
        return path, None  # the worker reports it as unreadable, the same as locally


def map_files(
    fn,
    items: Sequence[tuple[str, tuple]],
    config: VisionConfig,
    cfg: ComputeConfig,
    *args,
    embedder_id: str | None = None,
    desc: str = "faces",
) -> Iterator:
    """``fn(engine, path, *item_args, *args)`` for every ``(path, item_args)`` on the cluster,
    in order; ``fn`` must be importable on the workers (a module-level function). A file that
    crashed the face engine gives :class:`Failed` (as does one whose ``fn`` raised)."""
    ship = cfg.ships_bytes()
    chunks = [list(items[i : i + cfg.chunk]) for i in range(0, len(items), cfg.chunk)]

    def build(chunk):
        return [(*_payload(p, ship), tuple(a)) for p, a in chunk]

    def killed(chunk: list) -> tuple[str | None, list]:
        return _one_per_task(chunk, fn, config, cfg, *args)

    for worker_id, results in map_ordered(
        run_chunk,
        _Lazy(chunks, build),
        fn,
        config,
        *args,
        cfg=cfg,
        desc=desc,
        weights=[len(c) for c in chunks],
        prefix="facefleet-analyse",
        on_killed=killed,
    ):
        _same_embedder(worker_id, embedder_id)
        yield from results


def _one_per_task(
    chunk: list, fn, config: VisionConfig, cfg: ComputeConfig, *args
) -> tuple[str | None, list]:
    """(embedder id, results) of a task Dask gave up on (its workers kept dying): a file alone
    in its task is the culprit and gets ``KILLED``; otherwise each file runs again as a task
    of its own, and one whose own task is given up too is tried once more, by itself, before
    it is marked (a worker's death also counts against the task queued beside the culprit's)."""
    from distributed import KilledWorker

    if len(chunk) == 1:
        return None, [Failed(KILLED)]
    c = compute.client(cfg)

    def run(entries: list) -> list:
        return [c.submit(run_chunk, [e], fn, config, *args, retries=cfg.retries, pure=False) for e in entries]

    worker_id: str | None = None
    out: list = [None] * len(chunk)
    again: list[int] = []

    def result(fut):
        try:
            return fut.result()
        except KilledWorker:
            raise
        except Exception as exc:  # noqa: BLE001 - one line for the user, as map_ordered's
            lines = str(exc).strip().splitlines()
            what = f"{type(exc).__name__}: {lines[0] if lines else ''}"
            raise ComputeError(f"a task failed on the cluster: {what}") from exc
        finally:
            fut.release()

    for i, fut in enumerate(run(chunk)):
        try:
            worker_id, (out[i],) = result(fut)
        except KilledWorker:
            again.append(i)
    for i in again:
        try:
            worker_id, (out[i],) = result(run([chunk[i]])[0])
        except KilledWorker:
            out[i] = Failed(KILLED)
    return worker_id, out


def _same_embedder(worker_id: str | None, embedder_id: str | None) -> None:
    if embedder_id is not None and worker_id is not None and worker_id != embedder_id:
        raise ComputeError(
            f"a Dask worker embeds with {worker_id}, this server with {embedder_id}: "
            "install the same facefleet and weights on every worker"
        )


def analyse_files(
    paths: Sequence[Path | str],
    config: VisionConfig,
    cfg: ComputeConfig,
    *,
    fallback: bool = True,
    keep_chips: bool = False,
    embedder_id: str | None = None,
    desc: str = "faces",
) -> Iterator[ImageAnalysis]:
    """Analyse ``paths`` on the cluster, yielding one :class:`ImageAnalysis` per path in order.

    ``embedder_id`` is the id the caller stores vectors under: a worker whose embedder differs
    (e.g. it fell back to dlib) stops the run instead of mixing vectors of two models.
    """
    results = map_files(
        _analyse_one,
        [(str(p), ()) for p in paths],
        config,
        cfg,
        fallback,
        keep_chips,
        embedder_id=embedder_id,
        desc=desc,
    )
    for path, result in zip(paths, results, strict=True):
        yield as_analysis(str(path), result)


class _Lazy(Sequence):
    """A sequence whose items are built when read (file bytes only for tasks in flight)."""

    def __init__(self, base: list, build) -> None:
        self._base, self._build = base, build

    def __len__(self) -> int:
        return len(self._base)

    def __getitem__(self, i):
        return self._build(self._base[i])
