"""The annotated video: a file cut off before its index (as a killed process leaves it) is
made playable again with the frames it holds, found by the marker its dead writer left."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from facefleet.edge import recording
from facefleet.edge.recording import (
    is_complete,
    marker_for,
    open_recording,
    repair,
    repair_left,
    top_level_boxes,
)

W, H, FPS = 160, 120, 30.0
REPO = Path(__file__).resolve().parents[2]


def _frames(path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            return out
        out.append(frame)


def _picture(i: int, rng) -> np.ndarray:
    frame = cv2.GaussianBlur(rng.integers(0, 255, (H, W, 3), dtype=np.uint8), (9, 9), 0)
    cv2.putText(frame, str(i), (20, 80), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
    return frame


def _record(tmp_path, n: int):
    rng = np.random.default_rng(3)
    rec = open_recording(tmp_path, np.zeros((H, W, 3), np.uint8), FPS)
    assert json.loads(rec.marker.read_text())["width"] == W  # open: the marker says so
    shown = [_picture(i, rng) for i in range(n)]
    for frame in shown:
        rec.write(frame)
    rec.close()
    assert not rec.marker.exists()  # a clean close removes it
    return rec, shown


def _boxes(data: bytes):
    return top_level_boxes(io.BytesIO(data))


def test_a_video_cut_before_its_index_is_repaired_with_all_its_frames(tmp_path):
    rec, shown = _record(tmp_path, 24)
    data = rec.path.read_bytes()
    assert is_complete(rec.path) and repair(rec.path, W, H, FPS) is None
    kinds = [kind for kind, *_ in _boxes(data)]
    assert kinds[-1] == b"moov" and b"mdat" in kinds
    moov = _boxes(data)[-1][1]
    rec.path.write_bytes(data[:moov])  # what a process killed before release() leaves
    assert not is_complete(rec.path) and _frames(rec.path) == []  # no player opens it
    assert repair(rec.path, W, H, FPS) == 24
    assert is_complete(rec.path)
    back = _frames(rec.path)
    assert len(back) == 24
    # the same pictures in the same order (re-encoded once: close, not equal)
    err = [float(np.abs(a.astype(int) - b.astype(int)).mean()) for a, b in zip(back, shown)]
    assert max(err) < 12, err
    assert [p.name for p in tmp_path.iterdir()] == [rec.path.name]  # no staging file left


@pytest.mark.parametrize("window", [None, (1000, 4096)])  # (copy chunk, tail) bytes: many of each
def test_a_video_cut_inside_a_frame_keeps_the_frames_before_it(tmp_path, monkeypatch, window):
    if window:
        monkeypatch.setattr(recording, "CHUNK", window[0])
        monkeypatch.setattr(recording, "TAIL", window[1])
    rec, _ = _record(tmp_path, 24)
    data = rec.path.read_bytes()
    _, at, head, size, _ = next(b for b in _boxes(data) if b[0] == b"mdat")
    rec.path.write_bytes(data[: at + head + size // 2])  # half the frames, the last one torn
    kept = repair(rec.path, W, H, FPS)
    assert 8 <= kept <= 16
    assert len(_frames(rec.path)) == kept


def test_a_video_with_no_frame_is_removed(tmp_path):
    rec, _ = _record(tmp_path, 3)
    data = rec.path.read_bytes()
    _, at, head, *_ = next(b for b in _boxes(data) if b[0] == b"mdat")
    rec.path.write_bytes(data[: at + head])  # the header flushed, no frame yet
    assert repair(rec.path, W, H, FPS) == 0
    assert not rec.path.exists()


KILLED_WRITER = f"""
import os, signal, sys
import numpy as np
from pathlib import Path
sys.path.insert(0, {str(REPO)!r})
from facefleet.edge.recording import open_recording
rng = np.random.default_rng(1)
rec = open_recording(Path(sys.argv[1]), np.zeros(({H}, {W}, 3), np.uint8), {FPS})
for i in range(400):
    rec.write(rng.integers(0, 255, ({H}, {W}, 3), dtype=np.uint8))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_video_of_a_killed_process_is_found_and_repaired(tmp_path):
    """A process SIGKILLed while saving (the whole ``recognize``, or a power cut): the next
    run finds its marker, sees its process gone and repairs the video."""
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], check=False)
    assert proc.returncode == -signal.SIGKILL
    (video,) = tmp_path.glob("output_*.mp4")
    assert marker_for(video).exists() and not is_complete(video)
    # a video another live process is writing is left alone
    live = tmp_path / "output_20990101_000000.mp4"
    live.write_bytes(b"")
    marker_for(live).write_text(json.dumps({"pid": 1, "width": W, "height": H, "fps": FPS}))
    (tmp_path / ".output_bad.mp4.open").write_text("{not json")
    # staging folders: of a repair killed midway (its process gone), and of one running now
    dead = json.loads(marker_for(video).read_text())["pid"]
    (tmp_path / f".repair-{dead}-x1").mkdir()
    (tmp_path / f".repair-{dead}-x1" / "frames.m4v").write_bytes(b"\0" * 100)
    (tmp_path / f".repair-{os.getpid()}-x2").mkdir()
    ((done_video, kept),) = repair_left(tmp_path)
    assert done_video == video and 300 <= kept < 400  # the frames the buffer had not flushed are lost
    assert is_complete(video) and len(_frames(video)) == kept
    assert not marker_for(video).exists() and marker_for(live).exists()
    assert not (tmp_path / ".output_bad.mp4.open").exists()
    assert sorted(p.name for p in tmp_path.glob(".repair-*")) == [f".repair-{os.getpid()}-x2"]
    assert repair_left(tmp_path) == []


def test_boxes_of_a_truncated_file_run_to_its_end():
    data = b"\x00\x00\x00\x10ftypisom\x00\x00\x02\x00" + b"\x00\x00\x00\x00mdat" + b"x" * 5
    assert _boxes(data) == [(b"ftyp", 0, 8, 16, False), (b"mdat", 16, 8, 13, True)]
    big = b"\x00\x00\x00\x01mdat" + (1000).to_bytes(8, "big") + b"y" * 4
    assert _boxes(big) == [(b"mdat", 0, 16, 20, True)]
    whole = b"\x00\x00\x00\x0cmdat" + b"z" * 4 + b"\x00\x00\x00\x08moov"
    assert _boxes(whole) == [(b"mdat", 0, 8, 12, False), (b"moov", 12, 8, 8, False)]
