"""Edge throughput on short_hamilton_clip.mp4: facefleet's pipeline (detect every N frames,
track, embed per track) against the naive loop of the face_recognition examples (detect and
embed every face on every frame), same machine, same engine, one run each.

    .venv/bin/python bench/bench_edge.py [--workspace WS] [--json FILE]

Needs a workspace with a trained bundle (``facefleet train``); without one it builds a
throwaway workspace (Lin-Manuel Miranda + knn_examples enrolled, one training run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACEFLEET_SHARED_DATA", ROOT.parent / "shared" / "data"))
CLIP = DATA / "video" / "short_hamilton_clip.mp4"


def throwaway_workspace(root: Path):
    from facefleet.enrol import enroll, plan_folder
    from facefleet.registry.keys import generate_keypair
    from facefleet.train.pipeline import train
    from facefleet.workspace import Workspace

    ws = Workspace.init(root)
    items = [("lin_manuel_miranda", DATA / "faces/examples/lin-manuel-miranda.png")]
    items += plan_folder(DATA / "faces/examples/knn_examples/train")
    enroll(ws, items)
    generate_keypair(ws.keys_dir)
    train(ws)
    return ws


def naive(engine, bundle) -> dict:
    """Every frame: detect (HOG upsample 0, full frame), landmarks, chip, embed, classify."""
    cap = cv2.VideoCapture(str(CLIP))
    frames = named = embeds = 0
    t0 = time.perf_counter()
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        faces = engine.analyse(rgb, fallback=False, embed=True, upsample=0)
        if faces:
            decisions = bundle.classify([f.embedding for f in faces])
            embeds += len(faces)
            named += any(d.name for d in decisions)
        frames += 1
    secs = time.perf_counter() - t0
    return {
        "frames": frames,
        "seconds": round(secs, 2),
        "fps": round(frames / secs, 2),
        "embeddings": embeds,
        "named_frames": named,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--embedder",
        choices=["auto", "onnx", "dlib"],
        default="auto",
        help="dlib = before the ONNX embedder, onnx/auto = after",
    )
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("FACEFLEET_NO_PROGRESS", "1")

    from facefleet.edge.model import resolve_model
    from facefleet.edge.recognize import RecognizeOptions, make_engine, recognize
    from facefleet.registry.inference import load_bundle
    from facefleet.registry.keys import load_public_key
    from facefleet.workspace import Workspace

    tmp = None
    if args.workspace:
        ws = Workspace.open(args.workspace)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench-edge-")
        ws = throwaway_workspace(Path(tmp.name))
    model = ws.models_dir / ws.model_name
    pub = ws.keys_dir / "signing_key.pub.pem"
    with tempfile.TemporaryDirectory(prefix="bench-edge-out-") as out:
        opts = RecognizeOptions(
            source=str(CLIP),
            model=model,
            public_key=pub,
            output_dir=Path(out),
            unknown_dir=None,
            display=False,
            events=False,
            cache_dir=ws.cache_dir,
            embedder=args.embedder,
        )
        engine = make_engine(opts)
        engine.embed_chips(
            [cv2.resize(cv2.imread(str(DATA / "faces/examples/obama-240p.jpg")), (150, 150))]
        )  # load the embedder outside the timing
        summary = recognize(opts, engine=engine)
    bundle = load_bundle(resolve_model(model), load_public_key(pub), engine.embedder.id)
    base = naive(engine, bundle)
    ff = summary.stats
    result = {
        "clip": CLIP.name,
        "embedder": f"{type(engine.embedder).__name__} ({engine.embedder.id})",
        "cores": os.cpu_count(),
        "facefleet": {
            "frames": summary.frames,
            "seconds": ff["seconds"],
            "fps": ff["fps"],
            "embeddings": ff["embeddings"],
            "face_frames": summary.face_frames,
            "named_frames": summary.name_frames.get("lin_manuel_miranda", 0),
            "stages": ff["stages"],
        },
        "naive": base,
        "speedup": round(ff["fps"] / base["fps"], 2),
    }
    print(f"facefleet  {ff['fps']:7.1f} FPS  ({ff['embeddings']} embeddings)")
    print(f"naive loop {base['fps']:7.1f} FPS  ({base['embeddings']} embeddings)")
    print(f"ratio      {result['speedup']:7.2f}x   embedder {result['embedder']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
