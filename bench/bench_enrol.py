"""Enrolment throughput: facefleet vs the face_recognition package on the same files.

    .venv/bin/python bench/bench_enrol.py [--data ../shared/data/faces] [--limit N]

facefleet: a fresh workspace, `enroll` of five_celebrity/train + orl (detect with HOG and the
CNN fallback, align, quality, embed, store), with 1 worker and with one per core, then the
same enrolment again (all cached). The peer: `face_recognition.load_image_file` +
`face_encodings` per file in one process (install it with `pip install --no-deps
face_recognition`: it wraps the same dlib). Also ms per embedding of both embedders.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def plan(data: Path, limit: int | None) -> list[tuple[str, Path]]:
    from facefleet.enrol import plan_folder

    items = plan_folder(data / "five_celebrity" / "train") + [
        (f"orl_{name}", path) for name, path in plan_folder(data / "orl")
    ]
    return items[:limit] if limit else items


def bench_facefleet(items, workers: int, embedder: str) -> tuple[float, int, float]:
    from facefleet.enrol import enroll
    from facefleet.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.init(Path(tmp) / "ws", {"vision": {"embedder": embedder}})
        ws.engine().embedder  # noqa: B018 - load/convert the embedder outside the timing
        start = time.perf_counter()
        report = enroll(ws, items, workers=workers)
        first = time.perf_counter() - start
        start = time.perf_counter()
        enroll(ws, items, workers=workers)
        cached = time.perf_counter() - start
    return first, len(report.accepted), cached


def bench_face_recognition(items) -> tuple[float, int] | None:
    try:
        import face_recognition
    except ImportError:
        return None
    start = time.perf_counter()
    ok = 0
    for _, path in items:
        image = face_recognition.load_image_file(str(path))
        if len(face_recognition.face_encodings(image)) == 1:
            ok += 1
    return time.perf_counter() - start, ok


def ms_per_embedding(data: Path) -> dict[str, float]:
    from facefleet.vision.embed import DlibEmbedder, make_embedder
    from facefleet.vision.engine import FaceEngine, VisionConfig
    from facefleet.vision.image import load_image

    engine = FaceEngine(VisionConfig(embedder="dlib"))
    chips = []
    for path in sorted((data / "five_celebrity" / "val").glob("*/*.jpg"))[:20]:
        faces = engine.analyse(load_image(path), embed=False, fallback=False)
        chips += [f.chip for f in faces]
    chips = np.stack(chips)
    out = {}
    for name, emb in (("dlib", DlibEmbedder()), ("onnx (auto)", make_embedder("auto"))):
        emb.embed(chips[:2])
        start = time.perf_counter()
        for chip in chips:
            emb.embed(chip[None])
        out[name] = 1000 * (time.perf_counter() - start) / len(chips)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "faces")
    parser.add_argument("--limit", type=int, help="only the first N photos")
    parser.add_argument("--skip-peer", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("FACEFLEET_NO_PROGRESS", "1")
    items = plan(args.data, args.limit)
    cores = os.cpu_count() or 1
    print(f"{len(items)} photos (five_celebrity/train + orl), {cores} cores")
    rows = []
    for label, workers, embedder in (
        ("facefleet onnx, 1 worker", 1, "auto"),
        (f"facefleet onnx, {cores} workers", cores, "auto"),
        (f"facefleet dlib, {cores} workers", cores, "dlib"),
    ):
        secs, accepted, cached = bench_facefleet(items, workers, embedder)
        rows.append((label, secs, accepted, f"re-enrol (cached) {cached:.2f} s"))
    peer = None if args.skip_peer else bench_face_recognition(items)
    if peer:
        rows.append(("face_recognition 1.3 (1 process)", peer[0], peer[1], "one face per photo"))
    print(f"\n{'run':36} {'seconds':>8} {'images/s':>9} {'faces':>6}  note")
    for label, secs, faces, note in rows:
        print(f"{label:36} {secs:8.1f} {len(items) / secs:9.1f} {faces:6d}  {note}")
    if peer:
        best = min(r[1] for r in rows[:-1])
        print(f"\nratio facefleet (best) / face_recognition images/s: {peer[0] / best:.2f}x")
    print("\nms per embedding (one chip at a time):")
    for name, ms in ms_per_embedding(args.data).items():
        print(f"  {name:12} {ms:7.1f} ms")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak:.0f} MB")


if __name__ == "__main__":
    main()
