"""Benchmark: dlib-bin vs the ONNX Runtime embedder on the same face chips, in one run.

Prints ms per face and faces/s at batch 1, 8 and 32 (ONNX with 1 and 2 intra-op threads;
dlib-bin has no thread setting and runs on one core), the speed-up over dlib, the largest
L2 distance between the two embedders' vectors, and the cold conversion time.

    .venv/bin/python bench/bench_embedder.py [--faces 32] [--passes 3] [--spin]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "faces"
PHOTO_DIRS = [SHARED / "five_celebrity" / "val", SHARED / "examples" / "knn_examples" / "train"]
BATCHES = (1, 8, 32)


def face_chips(limit: int) -> np.ndarray:
    """Up to ``limit`` real aligned chips (HOG + 5 landmarks + get_face_chip), else patterns."""
    import cv2
    import dlib

    from facefleet.vision.models import model_path
    from facefleet.vision.onnx_embedder import reference_chips

    detector = dlib.get_frontal_face_detector()
    shaper = dlib.shape_predictor(str(model_path("landmarks5")))
    chips: list[np.ndarray] = []
    photos = sorted(p for d in PHOTO_DIRS if d.is_dir() for p in d.rglob("*") if p.suffix.lower() == ".jpg")
    for path in photos:
        img = dlib.load_rgb_image(str(path))
        side = max(img.shape[:2])
        if side > 640:
            img = cv2.resize(img, None, fx=640 / side, fy=640 / side, interpolation=cv2.INTER_AREA)
        for box in detector(img, 1 if side < 400 else 0):
            chips.append(dlib.get_face_chip(img, shaper(img, box), size=150, padding=0.25))
        if len(chips) >= limit:
            break
    if not chips:
        print(f"(no photos under {SHARED}: using synthetic chips)")
        return reference_chips(limit)
    while len(chips) < limit:
        chips += chips[: limit - len(chips)]
    return np.stack(chips[:limit])


def one_pass(run: Callable[[np.ndarray], object], chips: np.ndarray, batch: int) -> tuple:
    """(wall, CPU) seconds per face to embed ``chips`` in batches of ``batch``."""
    w0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, len(chips), batch):
        run(chips[start : start + batch])
    n = len(chips)
    return (time.perf_counter() - w0) / n, (time.process_time() - c0) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=32, help="chips per pass (default 32)")
    parser.add_argument("--passes", type=int, default=3, help="timed passes per cell")
    parser.add_argument("--spin", action="store_true", help="let ORT threads busy-wait")
    args = parser.parse_args()

    import dlib
    import onnxruntime as ort

    from facefleet.vision.embed import DlibEmbedder
    from facefleet.vision.onnx_embedder import OnnxEmbedder, convert, source_path

    print(
        f"cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}, "
        f"dlib {dlib.__version__}, onnxruntime {ort.__version__}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        convert(source_path())
        t_convert = time.perf_counter() - t0
        t0 = time.perf_counter()
        OnnxEmbedder.create(Path(tmp), threads=1)
        t_create_cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        OnnxEmbedder.create(Path(tmp), threads=1)
        t_create_warm = time.perf_counter() - t0
        print(
            f"conversion (parse .dat + build + check ONNX): {t_convert:.2f} s; "
            f"first create (convert, cache, verify vs dlib): {t_create_cold:.2f} s; "
            f"cached create: {t_create_warm:.2f} s"
        )

        chips = face_chips(args.faces)
        print(f"{len(chips)} chips, {args.passes} passes per cell, spin={args.spin}\n")

        dlib_emb = DlibEmbedder()
        net = dlib.face_recognition_model_v1(str(source_path()))

        def dlib_run(batch: np.ndarray) -> object:
            if len(batch) == 1:
                return dlib_emb.embed(batch)
            return net.compute_face_descriptor([np.ascontiguousarray(c) for c in batch])

        cells: list[tuple[str, int, int, Callable]] = [("dlib-bin", 1, b, dlib_run) for b in BATCHES]
        ref = dlib_emb.embed(chips)
        max_l2 = 0.0
        for threads in (1, 2):
            emb = OnnxEmbedder.create(Path(tmp), threads=threads, spin=args.spin)
            max_l2 = max(max_l2, float(np.linalg.norm(emb.embed(chips) - ref, axis=1).max()))
            cells += [("onnx", threads, b, emb.embed) for b in BATCHES]
        for _, _, b, run in cells:  # warm-up
            run(chips[:b])
        # passes interleave the cells so a change in the machine's load hits all of them
        timings: list[list[tuple[float, float]]] = [[] for _ in cells]
        for _ in range(args.passes):
            for i, (_, _, b, run) in enumerate(cells):
                timings[i].append(one_pass(run, chips, b))
        rows = [
            (name, threads, b, statistics.median(w for w, _ in t), statistics.median(c for _, c in t))
            for (name, threads, b, _), t in zip(cells, timings, strict=True)
        ]

    base = {b: wall for name, _, b, wall, _ in rows if name == "dlib-bin"}
    print(
        f"{'embedder':<10}{'threads':>8}{'batch':>7}{'ms/face':>10}{'faces/s':>10}"
        f"{'x dlib':>9}{'cpu ms/face':>13}"
    )
    for name, threads, b, wall, cpu in rows:
        print(
            f"{name:<10}{threads:>8}{b:>7}{wall * 1e3:>10.1f}{1 / wall:>10.1f}"
            f"{base[b] / wall:>9.1f}{cpu * 1e3:>13.1f}"
        )
    print("(x dlib: dlib-bin's wall time per face at the same batch size / this row's)")
    print(f"\nmax L2 between ONNX and dlib vectors on these chips: {max_l2:.2e}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
