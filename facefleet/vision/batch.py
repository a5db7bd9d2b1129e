"""Analyse many image files, spread over processes (dlib runs one core per process).

Each worker process holds its own FaceEngine; results come back as plain arrays and dicts.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facefleet.errors import ImageError
from facefleet.progress import progress
from facefleet.vision.engine import FaceEngine, VisionConfig


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
    except ImageError as exc:
        return ImageAnalysis(path=path, faces=[], error=str(exc))
    faces = engine.analyse(rgb, fallback=fallback, embed=True)
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


def _worker_task(args: tuple[str, bool, bool]) -> ImageAnalysis:
    path, fallback, keep_chips = args
    assert _ENGINE is not None
    return analyse_file(_ENGINE, path, fallback=fallback, keep_chips=keep_chips)


def worker_count(requested: int | None, jobs: int) -> int:
    cores = os.cpu_count() or 1
    wanted = requested or cores
    return max(1, min(wanted, jobs, cores * 2))


def analyse_files(
    paths: Sequence[Path | str],
    config: VisionConfig,
    *,
    workers: int | None = None,
    fallback: bool = True,
    keep_chips: bool = False,
    engine: FaceEngine | None = None,
    desc: str = "faces",
) -> Iterator[ImageAnalysis]:
    """Analyse ``paths`` in order, in this process for small batches, else over a process pool
    (or on the Dask cluster when the caller runs under ``facefleet.compute.using``)."""
    from facefleet import compute

    cluster = compute.current()
    if cluster is not None:
        from facefleet.vision import dask_backend

        known = engine.embedder.id if engine is not None else None
        yield from dask_backend.analyse_files(
            paths, config, cluster, fallback=fallback, keep_chips=keep_chips, embedder_id=known, desc=desc
        )
        return
    jobs = [(str(p), fallback, keep_chips) for p in paths]
    count = worker_count(workers, len(jobs))
    if count <= 1 or len(jobs) < 4:
        engine = engine or FaceEngine(config)
        for path, fb, keep in progress(jobs, total=len(jobs), desc=desc):
            yield analyse_file(engine, path, fallback=fb, keep_chips=keep)
        return
    # spawn, not fork: forking after onnxruntime or dlib started threads can deadlock the child.
    ctx = mp.get_context("spawn")
    with (
        _main_script_hidden(),
        ProcessPoolExecutor(count, mp_context=ctx, initializer=_init_worker, initargs=(config,)) as pool,
    ):
        results = pool.map(_worker_task, jobs, chunksize=1)
        yield from progress(results, total=len(jobs), desc=desc)


@contextmanager
def _main_script_hidden() -> Iterator[None]:
    """Keep spawned workers from re-running the caller's script (one without a ``__main__``
    guard would enrol again in every worker); the workers only need facefleet's functions."""
    main = sys.modules.get("__main__")
    saved = {k: getattr(main, k) for k in ("__file__", "__spec__") if main is not None and hasattr(main, k)}
    try:
        for key in saved:
            if key == "__file__":
                delattr(main, key)
            else:
                setattr(main, key, None)
        yield
    finally:
        for key, value in saved.items():
            setattr(main, key, value)
