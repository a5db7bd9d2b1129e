"""Face analysis of many files on a Dask cluster: files in, faces (boxes, landmarks, quality,
embeddings, optional chips) out, in the order given.

Tasks carry a handful of paths (workers sharing the filesystem) or the files' bytes (workers
on other machines) plus the small :class:`VisionConfig`; never a model. Each worker thread
builds its :class:`FaceEngine` (dlib models, the ONNX embedder) on its first task and keeps it
for every later one. Nothing here writes the store: the caller does, from the results.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import astuple, replace
from pathlib import Path

from facefleet.compute import ComputeConfig, ComputeError, map_ordered
from facefleet.vision.batch import ImageAnalysis, analyse_file
from facefleet.vision.engine import FaceEngine, VisionConfig

_LOCAL = threading.local()
_BUILT = {"engines": 0}  # engines built in this worker process (read by tests via client.run)
_BUILT_LOCK = threading.Lock()


def engines_built() -> int:
    """How many face engines this process built (one per worker thread is the contract)."""
    return _BUILT["engines"]


def worker_engine(config: VisionConfig) -> FaceEngine:
    """This thread's engine for ``config``, built on first use. A cache folder the client
    named that does not exist on this machine is replaced by the worker's own cache."""
    engines: dict[tuple, FaceEngine] = getattr(_LOCAL, "engines", None) or {}
    _LOCAL.engines = engines
    # the cache folder only says where the ONNX graph is kept, not what it computes
    key = astuple(replace(config, cache_dir=None))
    engine = engines.get(key)
    if engine is None:
        local = config
        if config.cache_dir is not None and not Path(config.cache_dir).is_dir():
            local = replace(config, cache_dir=None)
        # a Dask worker thread stands for one core (dask worker --nthreads N), as a local pool
        # process does: one ONNX thread each, not one per core of the machine per thread
        os.environ.setdefault("FACEFLEET_ONNX_THREADS", "1")
        engine = FaceEngine(local)
        _ = engine.embedder  # convert/load the ONNX graph now, once, not inside the first image
        engines[key] = engine
        with _BUILT_LOCK:
            _BUILT["engines"] += 1
    return engine


def _analyse_one(engine: FaceEngine, path: str, fallback: bool, keep_chips: bool) -> ImageAnalysis:
    return analyse_file(engine, path, fallback=fallback, keep_chips=keep_chips)


def run_chunk(chunk: list[tuple[str, bytes | None, tuple]], fn, config: VisionConfig, *args):
    """The task: ``fn(engine, local_path, *item_args, *args)`` per file of ``chunk`` with this
    worker's engine; a file sent as bytes is read from a temporary copy. Returns (embedder
    id, results)."""
    engine = worker_engine(config)
    out = []
    for path, data, item_args in chunk:
        if data is None:
            out.append(fn(engine, path, *item_args, *args))
            continue
        fd, tmp = tempfile.mkstemp(prefix="facefleet-", suffix=Path(path).suffix.lower())
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            got = fn(engine, tmp, *item_args, *args)
        finally:
            os.unlink(tmp)
        out.append(_renamed(got, tmp, path))
    return engine.embedder.id, out


def _renamed(result, tmp: str, path: str):
    """Results name the original file, not the worker's temporary copy."""
    if isinstance(result, ImageAnalysis):
        result.path = path
        if result.error:
            result.error = result.error.replace(tmp, path)
    elif isinstance(result, str):
        result = result.replace(tmp, path)
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
    in order; ``fn`` must be importable on the workers (a module-level function)."""
    ship = cfg.ships_bytes()
    chunks = [list(items[i : i + cfg.chunk]) for i in range(0, len(items), cfg.chunk)]

    def build(chunk):
        return [(*_payload(p, ship), tuple(a)) for p, a in chunk]

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
    ):
        _same_embedder(worker_id, embedder_id)
        yield from results


def _same_embedder(worker_id: str, embedder_id: str | None) -> None:
    if embedder_id is not None and worker_id != embedder_id:
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
    yield from map_files(
        _analyse_one,
        [(str(p), ()) for p in paths],
        config,
        cfg,
        fallback,
        keep_chips,
        embedder_id=embedder_id,
        desc=desc,
    )


class _Lazy(Sequence):
    """A sequence whose items are built when read (file bytes only for tasks in flight)."""

    def __init__(self, base: list, build) -> None:
        self._base, self._build = base, build

    def __len__(self) -> int:
        return len(self._base)

    def __getitem__(self, i):
        return self._build(self._base[i])
