"""BlazeFace against dlib's detectors: recall, latency, and the recognition accuracy of its boxes.

    .venv/bin/python bench/bench_blazeface.py recall  [--every 10] [--json FILE]
    .venv/bin/python bench/bench_blazeface.py verify  [--pairs 3000] [--json FILE]
    .venv/bin/python bench/bench_blazeface.py fit
    taskset -c 0 .venv/bin/python bench/bench_blazeface.py latency [--frames 60] [--reps 5]

- ``recall``: on every ``--every``-th frame of both clips (640x360) and on every
  ``five_celebrity`` photo, the faces found by HOG (upsample 1) or dlib's CNN are the truth;
  each detector's recall is the share of them it finds (IoU >= 0.3), plus its extra boxes and
  its latency per 640x360 frame (one thread; pin with ``taskset -c 0``). The truth is cached
  in ``--cache`` (the CNN takes seconds a frame).
- ``verify``: ``--pairs`` same/different-person pairs from ``faces/lfw_dev/people`` (half
  each, fixed seed); each photo is embedded from the HOG box and from the BlazeFace box
  (same landmarks model, chip and ONNX ResNet) and, for ``--int8``, by the int8 embedder; the
  accuracy at the best distance threshold of each (10-fold: threshold chosen on 9 folds,
  scored on the 10th) is printed side by side.
- ``latency``: per 640x360 frame of both clips, each detector in turn on the same frame
  (interleaved, so a loaded machine slows all alike), ``--reps`` times: p50 and min
  (the min is the closest to an idle core) and each one's speed-up over HOG upsample 0.
- ``fit``: the BlazeFace box -> dlib box transform (``BOX_TO_DLIB``) from lfw_dev photos where
  both find exactly one face: medians of the centre shift and side ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACEFLEET_SHARED_DATA", ROOT.parent / "shared" / "data"))
CLIPS = [DATA / "video/short_hamilton_clip.mp4", DATA / "video/pbs_whitehouse_meeting_17s.mp4"]
LFW = DATA / "faces/lfw_dev/people"


def box_iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def union_boxes(*lists, thr: float = 0.3) -> list:
    out: list = []
    for boxes in lists:
        for b in boxes:
            if all(box_iou(b, o) < thr for o in out):
                out.append(list(b))
    return out


def frames(every: int):
    """(name, RGB image) for every ``every``-th frame of both clips, then five_celebrity."""
    for clip in CLIPS:
        cap = cv2.VideoCapture(str(clip))
        i = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if i % every == 0:
                yield f"{clip.stem}#{i}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            i += 1
        cap.release()
    from facefleet.vision.image import load_image

    for path in sorted((DATA / "faces/five_celebrity").glob("*/*/*")):
        if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
            yield f"five_celebrity/{path.parent.parent.name}/{path.parent.name}/{path.name}", load_image(path)


def truth(every: int, cache: Path) -> dict:
    """HOG (upsample 1) + CNN boxes per image, cached."""
    if cache.is_file():
        data = json.loads(cache.read_text())
        if data.get("every") == every:
            return data
    from facefleet.vision import detect as det

    hog, cnn = det.HogDetector(), det.CnnDetector()
    images = {}
    for name, rgb in frames(every):
        h = [list(d.box) for d in det.detect(hog, rgb, upsample=1, max_side=1024)]
        c = [list(d.box) for d in det.detect(cnn, rgb, upsample=1, max_side=640)]
        images[name] = {"hog1": h, "cnn": c, "truth": union_boxes(h, c)}
        print(f"  truth {name}: hog {len(h)} cnn {len(c)}", file=sys.stderr)
    data = {"every": every, "images": images}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(data))
    return data


def score(found: list, gt: list) -> tuple[int, int]:
    """(truth faces found, extra boxes matching no truth face)."""
    hit = sum(any(box_iou(g, f) >= 0.3 for f in found) for g in gt)
    extra = sum(all(box_iou(g, f) < 0.3 for g in gt) for f in found)
    return hit, extra


def cmd_recall(args) -> dict:
    from facefleet.vision import detect as det

    gt = truth(args.every, args.cache)["images"]
    detectors = {
        "hog (upsample 0)": (det.HogDetector(), 0),
        "hog (upsample 1)": (det.HogDetector(), 1),
    }
    for name in args.detectors:
        detectors[name] = (det.make_detector(name, cache_dir=args.cache.parent), 0)
    result: dict = {"every": args.every, "groups": {}, "latency_ms": {}}
    groups = {"hamilton": "short_hamilton", "pbs": "pbs_whitehouse", "five_celebrity": "five_celebrity"}
    counts = {d: {g: [0, 0, 0] for g in groups} for d in detectors}  # hit, truth, extra
    times: dict[str, list[float]] = {d: [] for d in detectors}
    for name, rgb in frames(args.every):
        group = next(g for g, prefix in groups.items() if name.startswith(prefix))
        for dname, (d, up) in detectors.items():
            t0 = time.perf_counter()
            found = [list(x.box) for x in det.detect(d, rgb, upsample=up, max_side=640)]
            if rgb.shape[:2] == (360, 640):
                times[dname].append(time.perf_counter() - t0)
            hit, extra = score(found, gt[name]["truth"])
            c = counts[dname][group]
            c[0], c[1], c[2] = c[0] + hit, c[1] + len(gt[name]["truth"]), c[2] + extra
    for dname in detectors:
        result["groups"][dname] = {
            g: {"recall": round(c[0] / max(c[1], 1), 4), "found": c[0], "truth": c[1], "extra": c[2]}
            for g, c in counts[dname].items()
        }
        ts = np.asarray(times[dname]) * 1000
        result["latency_ms"][dname] = {
            "p50": round(float(np.median(ts)), 2),
            "p95": round(float(np.percentile(ts, 95)), 2),
        }
    print(f"{'detector':22} " + " ".join(f"{g:>22}" for g in groups) + "   ms p50 (640x360)")
    for dname in detectors:
        cells = [
            f"{v['recall'] * 100:6.1f}% ({v['found']}/{v['truth']}, +{v['extra']})"
            for v in result["groups"][dname].values()
        ]
        print(
            f"{dname:22} "
            + " ".join(f"{c:>22}" for c in cells)
            + f"   {result['latency_ms'][dname]['p50']:6.2f}"
        )
    return result


# ---------------------------------------------------------------------------------------
# verification on lfw_dev pairs


def make_pairs(n: int, seed: int = 14) -> list[tuple[Path, Path, bool]]:
    rng = random.Random(seed)
    people = sorted(p for p in LFW.iterdir() if p.is_dir())
    photos = {p.name: sorted(p.glob("*.jpg")) for p in people}
    names = [p.name for p in people if len(photos[p.name]) >= 2]
    pairs: set = set()
    while len(pairs) < n // 2:
        who = rng.choice(names)
        a, b = rng.sample(photos[who], 2)
        pairs.add((min(a, b), max(a, b), True))
    while len(pairs) < n:
        p, q = rng.sample(names, 2)
        a, b = rng.choice(photos[p]), rng.choice(photos[q])
        pairs.add((min(a, b), max(a, b), False))
    return sorted(pairs)


def central(boxes: list, shape) -> tuple | None:
    """The box nearest the image centre (lfw_dev photos are centred on their person)."""
    if not boxes:
        return None
    cy, cx = shape[0] / 2, shape[1] / 2
    return min(boxes, key=lambda b: ((b[0] + b[2]) / 2 - cx) ** 2 + ((b[1] + b[3]) / 2 - cy) ** 2)


def verification_accuracy(dist: np.ndarray, same: np.ndarray, folds: int = 10, seed: int = 0) -> float:
    """10-fold accuracy: threshold fitted on 9 folds, scored on the 10th."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(dist))
    parts = np.array_split(order, folds)
    correct = 0
    for k in range(folds):
        test = parts[k]
        train = np.concatenate([parts[j] for j in range(folds) if j != k])
        cands = np.unique(dist[train])
        accs = [((dist[train] < t) == same[train]).mean() for t in cands[:: max(1, len(cands) // 400)]]
        thr = cands[:: max(1, len(cands) // 400)][int(np.argmax(accs))]
        correct += int(((dist[test] < thr) == same[test]).sum())
    return correct / len(dist)


def cmd_verify(args) -> dict:
    from facefleet.vision import detect as det
    from facefleet.vision.embed import make_embedder
    from facefleet.vision.engine import FaceEngine, VisionConfig
    from facefleet.vision.image import load_image

    pairs = make_pairs(args.pairs)
    paths = sorted({p for a, b, _ in pairs for p in (a, b)})
    engine = FaceEngine(VisionConfig(detector="hog", fallback_detector=None, cache_dir=args.cache.parent))
    hog = det.HogDetector()
    blazes = {name: det.make_detector(name, cache_dir=args.cache.parent) for name in args.detectors}
    embedders = {"onnx": engine.embedder}
    if args.int8:
        # calibrated on lfw_dev strangers: people in none of the pairs
        embedders["onnx-int8"] = make_embedder(
            "onnx-int8", cache_dir=args.cache.parent, calibration_dir=DATA / "faces/lfw_dev/strangers"
        )
    vecs: dict[str, dict[Path, np.ndarray]] = {}
    missing = {"hog": 0, **{name: 0 for name in blazes}}
    t0 = time.perf_counter()
    for i, path in enumerate(paths):
        rgb = load_image(path)
        for dname, d in (("hog", hog), *blazes.items()):
            box = central([x.box for x in det.detect(d, rgb, upsample=1, max_side=1024)], rgb.shape)
            if box is None:
                missing[dname] += 1
                continue
            chip = engine.chip(rgb, engine.landmarks(rgb, box), box)
            for ename, emb in embedders.items():
                if ename != "onnx" and dname != "hog":
                    continue
                vecs.setdefault(f"{dname}/{ename}", {})[path] = emb.embed(chip[None])[0]
        if i % 500 == 0:
            print(f"  {i}/{len(paths)} photos, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    # pairs where every detector found the face: the same pairs for every column
    keys = list(vecs)
    usable = [(a, b, s) for a, b, s in pairs if all(a in vecs[k] and b in vecs[k] for k in keys)]
    same = np.array([s for _, _, s in usable])
    result: dict = {
        "pairs": len(pairs),
        "usable_pairs": len(usable),
        "photos": len(paths),
        "missing": missing,
    }
    for k in keys:
        dist = np.array([np.linalg.norm(vecs[k][a] - vecs[k][b]) for a, b, _ in usable])
        result[k] = round(verification_accuracy(dist, same) * 100, 2)
    print(json.dumps(result, indent=1))
    return result


def cmd_latency(args) -> dict:
    from facefleet.vision import detect as det

    detectors = {"hog (upsample 0)": (det.HogDetector(), 0)}
    for name in args.detectors:
        detectors[name] = (det.make_detector(name, cache_dir=args.cache.parent), 0)
    every = max(1, (275 + 510) // max(1, args.frames))
    images = [rgb for name, rgb in frames(every) if not name.startswith("five_celebrity")]
    times: dict[str, list[float]] = {d: [] for d in detectors}
    for _ in range(args.reps):
        for rgb in images:
            for dname, (d, up) in detectors.items():
                t0 = time.perf_counter()
                det.detect(d, rgb, upsample=up, max_side=640)
                times[dname].append(time.perf_counter() - t0)
    result = {"frames": len(images), "reps": args.reps, "cpus": len(os.sched_getaffinity(0)), "ms": {}}
    hog = None
    for dname, ts in times.items():
        arr = np.asarray(ts) * 1000
        row = {"p50": round(float(np.median(arr)), 2), "min": round(float(arr.min()), 2)}
        hog = hog or row
        row["speedup_p50"] = round(hog["p50"] / row["p50"], 1)
        row["speedup_min"] = round(hog["min"] / row["min"], 1)
        result["ms"][dname] = row
        print(
            f"{dname:18} p50 {row['p50']:7.2f} ms  min {row['min']:7.2f} ms   "
            f"x{row['speedup_p50']} (p50) x{row['speedup_min']} (min) vs hog"
        )
    return result


def cmd_fit(args) -> dict:
    from facefleet.vision import detect as det
    from facefleet.vision.image import load_image

    hog = det.HogDetector()
    blaze = det.make_detector(args.detector, cache_dir=args.cache.parent)
    rows = []
    paths = sorted(LFW.glob("*/*.jpg"))[:: max(1, args.step)]
    for path in paths:
        rgb = load_image(path)
        h = central([d.box for d in det.detect(hog, rgb, upsample=1, max_side=1024)], rgb.shape)
        raw = blaze.detect_faces(rgb)
        if h is None or not raw:
            continue
        b = central([tuple(r[0]) for r in raw], rgb.shape)
        if box_iou(h, b) < 0.3:
            continue
        side = max(b[2] - b[0], b[3] - b[1])
        rows.append(
            (
                ((h[0] + h[2]) / 2 - (b[0] + b[2]) / 2) / side,
                ((h[1] + h[3]) / 2 - (b[1] + b[3]) / 2) / side,
                ((h[2] - h[0] + h[3] - h[1]) / 2) / side,
            )
        )
    arr = np.asarray(rows)
    fit = tuple(round(float(v), 3) for v in np.median(arr, axis=0))
    print(f"{len(rows)} faces: BOX_TO_DLIB[{blaze.variant.name!r}] = {fit}  (dx, dy, scale)")
    return {"faces": len(rows), "transform": fit}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("recall", "verify", "fit", "latency"))
    parser.add_argument("--frames", type=int, default=60, help="latency: frames from both clips")
    parser.add_argument("--reps", type=int, default=5, help="latency: passes over the frames")
    parser.add_argument("--every", type=int, default=10, help="recall: every Nth video frame")
    parser.add_argument("--pairs", type=int, default=3000)
    parser.add_argument("--int8", action="store_true", help="verify: also the int8 embedder")
    parser.add_argument("--step", type=int, default=3, help="fit: every Nth lfw_dev photo")
    parser.add_argument("--detector", default="blazeface")
    parser.add_argument("--detectors", nargs="*", default=["blazeface", "blazeface-short"])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/facefleet-bench/truth.json"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("FACEFLEET_NO_PROGRESS", "1")
    commands = {"recall": cmd_recall, "verify": cmd_verify, "fit": cmd_fit, "latency": cmd_latency}
    result = commands[args.command](args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
