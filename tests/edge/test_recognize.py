"""End to end on the real clips: a trained bundle, headless recognition, saved video, events,
unknown captures, hot reload and a tampered bundle, and the CLI's import footprint."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from facefleet.edge.events import FACELIST_COLUMNS, read_events
from facefleet.edge.recognize import RecognizeOptions, recognize
from facefleet.layout import switch

LIN = "lin_manuel_miranda"


def _opts(ws, model: Path, source: Path, out: Path, **kw) -> RecognizeOptions:
    return RecognizeOptions(
        source=str(source),
        model=model,
        public_key=ws.keys_dir / "signing_key.pub.pem",
        output_dir=out,
        unknown_dir=out / "unknown",
        display=False,
        cache_dir=ws.cache_dir,
        **kw,
    )


def _oracle_is_lin(engine, lin_vec: np.ndarray, bgr: np.ndarray, box) -> bool:
    """Ground truth independent of the pipeline: this box's face embeds within dlib's classic
    0.6 of the enrolment photo."""
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    chip = engine.chip(rgb, engine.landmarks(rgb, box), box)
    vec = engine.embed_chips([chip])[0]
    return float(np.linalg.norm(vec - lin_vec)) <= 0.6


def test_hamilton_named_saved_and_logged(edge_ws, hamilton, tmp_path, shared_data):
    ws, first = edge_ws
    engine = ws.engine()
    lin_vec = engine.analyse(
        np.ascontiguousarray(
            cv2.cvtColor(
                cv2.imread(str(shared_data / "faces/examples/lin-manuel-miranda.png")), cv2.COLOR_BGR2RGB
            )
        ),
        fallback=False,
    )[0].embedding
    truth: list[tuple[bool, bool]] = []  # (oracle says Lin, pipeline showed Lin) per face frame
    sample: dict[int, tuple[np.ndarray, tuple]] = {}

    def on_frame(frame, result):
        for t in result.tracks:
            if result.detected:  # the box is exact on detection frames
                truth.append((_oracle_is_lin(engine, lin_vec, frame.bgr_source, t.box), t.name == LIN))
                if t.name == LIN and len(sample) < 3:
                    sample[frame.index] = (frame.bgr_source, t.box)

    out = tmp_path / "out"
    opts = _opts(ws, ws.models_dir / first.model, hamilton, out, save=True)
    summary = _run_keeping_source(opts, on_frame)

    assert summary.frames == 275
    lin_frames = [named for is_lin, named in truth if is_lin]
    assert len(lin_frames) >= 30
    assert sum(lin_frames) / len(lin_frames) >= 0.9, (sum(lin_frames), len(lin_frames))
    # embedding is per track, not per frame (BlazeFace also tracks the dim audience faces)
    assert summary.stats["embeddings"] < summary.face_frames / 4
    assert summary.model_versions == [first.version]

    # the saved video decodes, has every frame, and carries the overlay in the face box
    assert summary.video is not None and summary.video.name.startswith("output_")
    cap = cv2.VideoCapture(str(summary.video))
    decoded = {}
    n = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        if n in sample:
            decoded[n] = img
        n += 1
    assert n == 275
    for idx, (src, box) in sample.items():
        left, top, right, bottom = box
        edge = slice(top, top + 2), slice(left, right)  # the box's top border
        diff = np.abs(decoded[idx][edge].astype(int) - src[edge].astype(int)).mean()
        green = decoded[idx][top : top + 2, left + 5 : right - 5].mean(axis=(0, 1))
        assert diff > 30 and green[1] > green[2] + 40, (idx, diff, green)

    events = read_events(out / "events.jsonl")
    assert any(e["name"] == LIN and e["model_version"] == first.version for e in events)
    for e in events:
        assert {
            "ts",
            "device",
            "source",
            "frame",
            "track_id",
            "name",
            "distance",
            "score",
            "box",
            "quality",
            "model_version",
            "crop",
        } <= set(e)
    rows = (out / "facelist.csv").read_text().splitlines()
    assert rows[0].split(",") == FACELIST_COLUMNS
    assert len(rows) == len(events) + 1


def _run_keeping_source(opts, on_frame):
    """recognize() draws on the frame in place: keep an untouched copy for comparisons."""
    from facefleet.edge.sources import open_source

    src = open_source(opts.source)
    original_read = src.read

    def read(timeout: float = 5.0):
        frame = original_read(timeout)
        if frame is not None:
            frame.bgr_source = frame.bgr.copy()
        return frame

    src.read = read
    try:
        return recognize(opts, source=src, on_frame=on_frame)
    finally:
        src.close()


def test_pbs_nobody_named_unknowns_deduplicated(edge_ws, pbs, tmp_path):
    ws, first = edge_ws
    out = tmp_path / "out"
    summary = recognize(_opts(ws, ws.models_dir / first.model, pbs, out))
    assert summary.frames == 510
    assert summary.face_frames > 100
    assert [k for k in summary.name_frames if k is not None] == []
    jpgs = sorted((out / "unknown").glob("*.jpg"))
    assert 1 <= len(jpgs) <= summary.face_frames / 10
    side = json.loads(jpgs[0].with_suffix(".json").read_text())
    assert len(side["embedding"]) == 128 and side["quality"]["size_px"] > 0
    assert cv2.imread(str(jpgs[0])) is not None
    events = read_events(out / "events.jsonl")
    assert events and all(e["name"] is None for e in events)
    assert {e["crop"] for e in events if e["crop"]} <= {str(p) for p in jpgs}


def test_hot_reload_new_version_and_tampered_refused(
    edge_ws, second_bundle, device_models, hamilton, tmp_path
):
    ws, first = edge_ws
    v2 = device_models / str(second_bundle.version)
    shutil.copytree(second_bundle.bundle_dir, v2)
    bad = device_models / "99"
    shutil.copytree(second_bundle.bundle_dir, bad)
    with open(bad / "model.npz", "r+b") as fh:  # flip one byte
        fh.seek(200)
        byte = fh.read(1)
        fh.seek(200)
        fh.write(bytes([byte[0] ^ 0xFF]))
    switched = {}

    def on_frame(frame, result):
        if frame.index == 100:
            switch(device_models, v2.name)
            switched["v2"] = frame.index
        if frame.index == 190:
            switch(device_models, bad.name)
            switched["bad"] = frame.index

    out = tmp_path / "out"
    # checked at every frame: a fast machine runs the 90 frames between the switches in less
    # than any interval, and the test is about what is loaded, not about the clock
    opts = _opts(ws, device_models, hamilton, out, reload_interval=0.0, max_frames=275)
    summary = recognize(opts, on_frame=on_frame)
    assert summary.frames == 275  # the stream never stopped
    assert summary.model_versions == [first.version, second_bundle.version]
    assert summary.reloads == 1 and summary.refused == 1
    events = read_events(out / "events.jsonl")
    before = [e for e in events if e["frame"] <= switched["v2"]]
    after = [e for e in events if e["frame"] > switched["v2"]]
    assert {e["model_version"] for e in before} == {first.version}
    assert second_bundle.version in {e["model_version"] for e in after}
    assert all(e["model_version"] != 99 for e in events)


def test_cli_imports_no_server_side(edge_ws, hamilton, tmp_path):
    ws, first = edge_ws
    code = (
        "import sys\n"
        "from facefleet.cli.main import main\n"
        f"rc = main(['-w', {str(ws.root)!r}, 'recognize', {str(hamilton)!r}, '--no-display',"
        f" '--max-frames', '20', '--output-dir', {str(tmp_path / 'out')!r}, '--benchmark',"
        f" '--json', {str(tmp_path / 'b.json')!r}])\n"
        "heavy = sorted(m for m in ('mlflow', 'sklearn', 'pandas') if m in sys.modules)\n"
        "print('HEAVY', heavy, 'RC', rc)\n"
    )
    env = {**os.environ, "FACEFLEET_NO_PROGRESS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert "HEAVY [] RC 0" in proc.stdout, proc.stdout + proc.stderr
    bench = json.loads((tmp_path / "b.json").read_text())
    assert bench["frames"] == 20 and bench["fps"] > 0
    assert {"decode", "detect", "track"} <= set(bench["stages"])
    assert "p95_ms" in bench["stages"]["detect"]


def test_cli_missing_model_is_a_clear_error(tmp_path, hamilton):
    from facefleet.cli.main import main
    from facefleet.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws")
    from facefleet.registry.keys import generate_keypair

    generate_keypair(ws.keys_dir)
    rc = main(["-w", str(ws.root), "recognize", str(hamilton), "--no-display"])
    assert rc == 2


@pytest.mark.parametrize("mode", ["all"])
def test_anonymize_blurs_saved_faces(edge_ws, hamilton, tmp_path, mode):
    ws, first = edge_ws
    boxes: dict[int, tuple] = {}

    def on_frame(frame, result):
        if result.detected and result.tracks and len(boxes) < 2:
            boxes[frame.index] = (frame.bgr_source, result.tracks[0].box)

    out = tmp_path / "out"
    opts = _opts(
        ws, ws.models_dir / first.model, hamilton, out, save=True, anonymize=mode, screenshot_every=100
    )
    summary = _run_keeping_source(opts, on_frame)
    assert len(summary.screenshots) == 2 and all(p.is_file() for p in summary.screenshots)
    assert not list((out / "unknown").glob("*.jpg"))  # anonymised faces are not kept
    cap = cv2.VideoCapture(str(summary.video))
    n = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        if n in boxes:
            src, (left, top, right, bottom) = boxes[n]
            inner = (slice(top + 10, bottom - 10), slice(left + 10, right - 10))
            sharp_src = cv2.Laplacian(cv2.cvtColor(src[inner], cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
            sharp_out = cv2.Laplacian(cv2.cvtColor(img[inner], cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
            assert sharp_out < sharp_src / 5, (sharp_out, sharp_src)
        n += 1
    assert n == 275 and boxes


def test_blazeface_names_lin(edge_ws, device_models, hamilton, tmp_path):
    """The fast detector feeds the same alignment: Lin-Manuel Miranda is named on the clip
    with BlazeFace detecting every 2nd frame, and the run reports its detection stage."""
    from facefleet.edge.recognize import make_engine

    ws, _ = edge_ws
    opts = _opts(
        ws,
        device_models,
        hamilton,
        tmp_path / "out",
        detector="blazeface",
    )
    opts.unknown_dir = None
    engine = make_engine(opts)
    assert engine._detector.name == "blazeface"
    summary = recognize(opts, engine=engine)
    assert summary.frames == 275
    assert summary.stats["stages"]["detect"]["count"] == 138  # every 2nd frame
    assert summary.name_frames.get(LIN, 0) >= 40, summary.name_frames
    assert LIN in {e["name"] for e in read_events(tmp_path / "out" / "events.jsonl")}


def test_tiny_frames_never_end_recognize(edge_ws, tmp_path, shared_data):
    """Frames smaller than a detector can take (dlib's CNN aborts below ~10 px) are guarded,
    and a frame the engine fails on is skipped and counted, never the end of the run."""
    from PIL import Image

    ws, first = edge_ws
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, size in enumerate([(1, 1), (3, 3), (300, 2), (2, 300)]):
        Image.new("RGB", size, (90, 90, 90)).save(frames / f"{i}-tiny.png")
    shutil.copyfile(shared_data / "faces" / "examples" / "lin-manuel-miranda.png", frames / "9-face.png")
    summary = recognize(_opts(ws, ws.models_dir / first.model, frames, tmp_path / "out"))
    assert summary.frames == 5
    assert summary.stats["frame_errors"] == 0
