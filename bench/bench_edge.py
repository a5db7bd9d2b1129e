"""Edge throughput on both clips: facefleet's pipeline (detect every N frames, track, embed per
track) with dlib's HOG and with BlazeFace, against the naive loop of the face_recognition
examples (detect and embed every face on every frame), same machine, one run each.

    taskset -c 0 .venv/bin/python bench/bench_edge.py [--workspace WS] [--json FILE]
        [--detectors hog blazeface blazeface-short] [--clips hamilton pbs] [--detect-every N]

Prints FPS (and frames per CPU-second, which a loaded machine inflates less) and per-stage
p50 latency per clip and detector, and for the hamilton clip how many
frames Lin-Manuel Miranda's track went unnamed after it entered (sum over his tracks of the
frames between a track's first frame and the first frame it showed his name, plus the frames
of tracks of him that never got named) and on how many frames his name was shown.

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
CLIPS = {
    "hamilton": DATA / "video" / "short_hamilton_clip.mp4",
    "pbs": DATA / "video" / "pbs_whitehouse_meeting_17s.mp4",
}
LIN = "lin_manuel_miranda"


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


def naive(engine, bundle, clip: Path) -> dict:
    """Every frame: detect (HOG upsample 0, full frame), landmarks, chip, embed, classify."""
    cap = cv2.VideoCapture(str(clip))
    frames = named = embeds = 0
    t0, c0 = time.perf_counter(), time.process_time()
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
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "frames": frames,
        "seconds": round(secs, 2),
        "fps": round(frames / secs, 2),
        "cpu_fps": round(frames / max(cpu, 1e-9), 1),
        "embeddings": embeds,
        "named_frames": named,
    }


class NamingWatch:
    """Per track: first frame seen, first frame shown with ``name``; from ``on_frame``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.first: dict[int, int] = {}
        self.named_at: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self.shown = 0

    def __call__(self, frame, result) -> None:
        shown = False
        for t in result.tracks:
            self.first.setdefault(t.id, frame.index)
            self.last[t.id] = frame.index
            if t.name == self.name:
                self.named_at.setdefault(t.id, frame.index)
                shown = True
        self.shown += shown

    def unnamed_after_entering(self) -> dict:
        """Frames before naming on the tracks that got named, and the frames of short tracks
        that never were (tracks of at least 5 frames: shorter ones are detector flicker)."""
        delays = {t: self.named_at[t] - self.first[t] for t in self.named_at}
        never = {
            t: self.last[t] - self.first[t] + 1
            for t in self.first
            if t not in self.named_at and self.last[t] - self.first[t] + 1 >= 5
        }
        return {
            "named_tracks": len(delays),
            "frames_before_named": sum(delays.values()),
            "max_delay": max(delays.values(), default=0),
            "unnamed_tracks": len(never),
            "unnamed_track_frames": sum(never.values()),
        }


def run_pipeline(opts, engine, watch=None) -> dict:
    from facefleet.edge.pipeline import default_detect_every
    from facefleet.edge.recognize import recognize

    summary = recognize(opts, engine=engine, on_frame=watch)
    ff = summary.stats
    out = {
        "frames": summary.frames,
        "seconds": ff["seconds"],
        "fps": ff["fps"],
        # frames per CPU-second of this process: on a loaded machine, closer to an idle core
        "cpu_fps": round(summary.frames / max(ff["seconds"] * ff["cpu_percent"] / 100, 1e-9), 1),
        "embeddings": ff["embeddings"],
        "face_frames": summary.face_frames,
        "stages_p50_ms": {k: v["p50_ms"] for k, v in ff["stages"].items()},
        "detect_every": opts.pipeline.detect_every or default_detect_every(engine._detector.name),
    }
    if watch is not None:
        out["named_frames"] = watch.shown
        out["naming"] = watch.unnamed_after_entering()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--embedder", choices=["auto", "onnx", "dlib", "onnx-int8"], default="auto")
    parser.add_argument("--detectors", nargs="+", default=["hog", "blazeface", "blazeface-short"])
    parser.add_argument("--detect-every", type=int, help="default: 2 with BlazeFace, 3 with HOG")
    parser.add_argument(
        "--also-every", type=int, nargs="*", default=[1], help="BlazeFace again, detecting every N frames"
    )
    parser.add_argument("--clips", nargs="+", choices=list(CLIPS), default=list(CLIPS))
    parser.add_argument("--no-naive", action="store_true", help="skip the naive loop")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("FACEFLEET_NO_PROGRESS", "1")

    from facefleet.edge.model import resolve_model
    from facefleet.edge.pipeline import PipelineConfig
    from facefleet.edge.recognize import RecognizeOptions, make_engine
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
    warm = [cv2.resize(cv2.imread(str(DATA / "faces/examples/obama-240p.jpg")), (150, 150))]
    result: dict = {"embedder": args.embedder, "cpus": len(os.sched_getaffinity(0)), "clips": {}}
    for clip_name in args.clips:
        clip = CLIPS[clip_name]
        rows: dict = {}
        engine = None
        runs = [(d, args.detect_every) for d in args.detectors]
        runs += [(d, n) for d in args.detectors if d.startswith("blazeface") for n in args.also_every]
        for detector, every in runs:
            with tempfile.TemporaryDirectory(prefix="bench-edge-out-") as out:
                opts = RecognizeOptions(
                    source=str(clip),
                    model=model,
                    public_key=pub,
                    output_dir=Path(out),
                    unknown_dir=None,
                    display=False,
                    events=False,
                    cache_dir=ws.cache_dir,
                    embedder=args.embedder,
                    detector=detector,
                    pipeline=PipelineConfig(detect_every=every),
                )
                engine = make_engine(opts)
                engine.embed_chips(warm)  # load the embedder outside the timing
                engine.detect(cv2.cvtColor(warm[0], cv2.COLOR_BGR2RGB))
                watch = NamingWatch(LIN) if clip_name == "hamilton" else None
                rows[detector if every is None else f"{detector} (every {every})"] = run_pipeline(
                    opts, engine, watch
                )
        if not args.no_naive:
            hog_engine = make_engine(
                RecognizeOptions(
                    source=str(clip),
                    model=model,
                    public_key=pub,
                    output_dir=Path("."),
                    cache_dir=ws.cache_dir,
                    embedder=args.embedder,
                )
            )
            hog_engine.embed_chips(warm)
            bundle = load_bundle(resolve_model(model), load_public_key(pub), hog_engine.embedder.id)
            rows["naive (hog, every frame)"] = naive(hog_engine, bundle, clip)
        result["clips"][clip.name] = rows
        if engine is not None:
            result["embedder_id"] = engine.embedder.id
        print(f"\n{clip.name}")
        print(f"  {'pipeline':26} {'FPS':>7} {'CPU-FPS':>7} {'detect':>7} {'align':>7} {'embed':>7}  naming")
        for name, row in rows.items():
            st = row.get("stages_p50_ms", {})
            naming = row.get("naming")
            extra = ""
            if naming is not None:
                extra = (
                    f"  {row['named_frames']} frames named; {naming['frames_before_named']} frames before "
                    f"naming over {naming['named_tracks']} tracks (max {naming['max_delay']}), "
                    f"{naming['unnamed_tracks']} tracks never named ({naming['unnamed_track_frames']} frames)"
                )
            cells = " ".join(f"{st.get(k, float('nan')):7.2f}" for k in ("detect", "align", "embed"))
            print(f"  {name:26} {row['fps']:7.1f} {row['cpu_fps']:7.1f} {cells}{extra}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
