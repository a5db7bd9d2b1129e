"""The int8 embedder against the fp32 ONNX one: ms per face on one thread and vector distance.

    taskset -c 0 .venv/bin/python bench/bench_int8.py [--faces 40] [--reps 5] [--json FILE]
        [--cache DIR] [--chips FILE.npy] [--vectors FILE.npz]

Chips: five_celebrity val photos (HOG + 5 landmarks). The int8 model is calibrated on
lfw_dev strangers (people in none of the test photos), or taken from ``--cache`` when an int8
model is already there (as a device gets it from the server). The two embedders run in turn
on each chip (interleaved, so a loaded machine slows both alike); p50 and min per face are printed.
``--chips`` reuses the chips of another run (another machine: the same faces, bit for bit),
``--vectors`` keeps both embedders' vectors.
Verification accuracy is measured by ``bench/bench_blazeface.py verify --int8``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACEFLEET_SHARED_DATA", ROOT.parent / "shared" / "data"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=40)
    parser.add_argument("--reps", type=int, default=5, help="timed passes (0: distances only)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--chips", type=Path, help="aligned chips (.npy): read if it exists, else written")
    parser.add_argument("--vectors", type=Path, help="write the fp32 and int8 vectors here (.npz)")
    parser.add_argument("--cache", type=Path, help="the models' folder (default: a temporary one)")
    args = parser.parse_args()

    from facefleet.vision.engine import FaceEngine, VisionConfig
    from facefleet.vision.image import load_image
    from facefleet.vision.int8_embedder import create_int8_embedder
    from facefleet.vision.onnx_embedder import OnnxEmbedder

    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        cache = args.cache or Path(tmp)
        from_cache = any((cache / "onnx").glob("*-int8-*.onnx"))  # then it is used, not made
        t0 = time.perf_counter()
        int8 = create_int8_embedder(cache, calibration_dir=DATA / "faces/lfw_dev/strangers", threads=1)
        quantise_s = time.perf_counter() - t0
        fp32 = OnnxEmbedder.create(cache_dir=cache, threads=1)
        if args.chips and args.chips.is_file():
            chips = np.load(args.chips, allow_pickle=False)[: args.faces]
        else:
            engine = FaceEngine(VisionConfig(fallback_detector=None, cache_dir=cache))
            found = []
            for path in sorted((DATA / "faces/five_celebrity/val").glob("*/*")):
                faces = engine.analyse(load_image(path), fallback=False, embed=False)
                found.extend(f.chip for f in faces[:1])
                if len(found) == args.faces:
                    break
            chips = np.stack(found)
            if args.chips:
                np.save(args.chips, chips)
        times: dict[str, list[float]] = {"onnx": [], "onnx-int8": []}
        for _ in range(args.reps):
            for chip in chips:
                for name, emb in (("onnx", fp32), ("onnx-int8", int8)):
                    t = time.perf_counter()
                    emb.embed(chip[None])
                    times[name].append(time.perf_counter() - t)
        vectors = {"fp32": fp32.embed(chips), "int8": int8.embed(chips)}
        l2 = np.linalg.norm(vectors["int8"] - vectors["fp32"], axis=1)
        if args.vectors:
            np.savez(args.vectors, **vectors)
    result = {
        "faces": len(chips),
        "reps": args.reps,
        "quantise_s": round(quantise_s, 1),
        "int8_from_cache": from_cache,
        "l2_to_fp32": {"median": round(float(np.median(l2)), 4), "max": round(float(l2.max()), 4)},
        "ms_per_face": {
            k: {"p50": round(float(np.median(v)) * 1000, 2), "min": round(float(np.min(v)) * 1000, 2)}
            for k, v in times.items()
            if v  # --reps 0: distances only (as under emulation, where timings mean nothing)
        },
    }
    for name, row in result["ms_per_face"].items():
        print(f"{name:10} p50 {row['p50']:6.2f} ms/face  min {row['min']:6.2f} ms/face  (1 thread)")
    print(f"int8 vs fp32 L2: median {result['l2_to_fp32']['median']}, max {result['l2_to_fp32']['max']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
