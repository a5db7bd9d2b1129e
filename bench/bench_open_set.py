"""Open set: how many strangers get a name, with dlib's global 0.6 vs the trained per-person thresholds.

    .venv/bin/python bench/bench_open_set.py [--data ../shared/data/faces]

Enrols five_celebrity/train + ORL subjects s1-s20 (photos 1-7), trains a model, then scores
known test faces (five_celebrity/val + ORL s1-s20 photos 8-10) and strangers (ORL s21-s40, all
200 photos, plus the single portraits in faces/examples) with both deciders on the same
embeddings.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def link_tree(root: Path, people: dict[str, list[Path]]) -> Path:
    for name, photos in people.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for photo in photos:
            (root / name / photo.name).symlink_to(photo)
    return root


def rates(decided: list[str | None], truth: list[str]) -> tuple[float, float]:
    """(accuracy on known faces, false-reject rate)."""
    right = sum(d == t for d, t in zip(decided, truth))
    rejected = sum(d is None for d in decided)
    return right / len(truth), rejected / len(truth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "faces")
    args = parser.parse_args()
    os.environ.setdefault("FACEFLEET_NO_PROGRESS", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from facefleet.enrol import enroll, plan_folder
    from facefleet.identify import GalleryMatcher
    from facefleet.registry.catalog import bundle_path
    from facefleet.registry.inference import load_bundle
    from facefleet.registry.keys import load_public_key, public_key_path
    from facefleet.train.evaluate import embed_folder
    from facefleet.train.pipeline import current_embedder_id, train
    from facefleet.workspace import Workspace

    data = args.data
    orl = {f"orl_{d.name}": sorted(d.glob("*.pgm"), key=lambda p: int(p.stem)) for d in data.glob("orl/s*")}
    known_orl = {k: v for k, v in orl.items() if int(k[5:]) <= 20}
    stranger_orl = {k: v for k, v in orl.items() if int(k[5:]) > 20}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ws = Workspace.init(tmp / "ws")
        items = plan_folder(data / "five_celebrity" / "train")
        items += [(k, p) for k, photos in known_orl.items() for p in photos[:7]]
        start = time.perf_counter()
        report = enroll(ws, items)
        took = time.perf_counter() - start
        print(f"enrolled {len(report.accepted)} of {len(items)} photos in {took:.1f} s")
        start = time.perf_counter()
        trained = train(ws)
        took = time.perf_counter() - start
        print(f"trained v{trained.version} ({trained.method}: {trained.reason}) in {took:.1f} s")
        known = {p.name: sorted(p.iterdir()) for p in (data / "five_celebrity" / "val").iterdir()}
        known.update({k: v[7:] for k, v in known_orl.items()})
        test_dir = link_tree(tmp / "test", known)
        strangers = dict(stranger_orl)
        strangers["examples"] = [p for p in (data / "examples").iterdir() if p.suffix in (".jpg", ".png")]
        unknown_dir = link_tree(tmp / "strangers", strangers)
        X, truth, _ = embed_folder(ws, test_dir, labelled=True)
        Xu, _, _ = embed_folder(ws, unknown_dir, labelled=False)
        embedder = current_embedder_id(ws)
        bundle = load_bundle(
            bundle_path(ws), load_public_key(public_key_path(ws.keys_dir)), expected_embedder_id=embedder
        )
        with ws.open_store() as store:
            gallery = store.training_set(embedder)
        print(f"\n{len(truth)} known test faces of {len(set(truth))} people, {len(Xu)} stranger faces\n")
        print(f"{'decider':34} {'known acc':>9} {'false rej':>9} {'stranger FAR':>12}")
        deciders = [
            ("gallery, global distance 0.6", GalleryMatcher(gallery.X, gallery.names, 0.6).classify),
            ("gallery, global distance 0.5", GalleryMatcher(gallery.X, gallery.names, 0.5).classify),
            ("trained model, per-person thresholds", bundle.classify),
        ]
        for label, decide in deciders:
            acc, frr = rates([d.name for d in decide(X)], truth)
            far = float(np.mean([d.name is not None for d in decide(Xu)]))
            print(f"{label:34} {100 * acc:8.1f}% {100 * frr:8.1f}% {100 * far:11.1f}%")
        thr = np.array(list(bundle.thresholds.values()))
        print(f"\nper-person thresholds: min {thr.min():.3f} mean {thr.mean():.3f} max {thr.max():.3f}")


if __name__ == "__main__":
    main()
