"""The annotated video: a file cut off before its index (as a killed engine leaves it) is
made playable again with every frame it holds."""

from __future__ import annotations

import cv2
import numpy as np

from facefleet.edge.recording import is_complete, open_recording, repair, top_level_boxes


def _frames(path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            return out
        out.append(frame)


def _record(tmp_path, n: int, fps: float = 30.0):
    rng = np.random.default_rng(3)
    first = np.zeros((120, 160, 3), np.uint8)
    rec = open_recording(tmp_path, first, fps)
    shown = []
    for i in range(n):
        frame = cv2.GaussianBlur(rng.integers(0, 255, first.shape, dtype=np.uint8), (9, 9), 0)
        cv2.putText(frame, str(i), (20, 80), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
        rec.writer.write(frame)
        shown.append(frame)
    rec.writer.release()
    return rec, shown


def test_a_video_cut_before_its_index_is_repaired_with_all_its_frames(tmp_path):
    rec, shown = _record(tmp_path, 24)
    data = rec.path.read_bytes()
    assert is_complete(rec.path) and repair(rec.path, rec.width, rec.height, rec.fps) is None
    kinds = [kind for kind, *_ in top_level_boxes(data)]
    assert kinds[-1] == b"moov" and b"mdat" in kinds
    moov = top_level_boxes(data)[-1][1]
    rec.path.write_bytes(data[:moov])  # what a process killed before release() leaves
    assert not is_complete(rec.path) and _frames(rec.path) == []  # no player opens it
    assert repair(rec.path, rec.width, rec.height, rec.fps) == 24
    assert is_complete(rec.path)
    back = _frames(rec.path)
    assert len(back) == 24
    # the same pictures in the same order (re-encoded once: close, not equal)
    err = [float(np.abs(a.astype(int) - b.astype(int)).mean()) for a, b in zip(back, shown)]
    assert max(err) < 12, err
    assert [p.name for p in tmp_path.iterdir()] == [rec.path.name]  # no staging file left


def test_a_video_cut_inside_a_frame_keeps_the_frames_before_it(tmp_path):
    rec, _ = _record(tmp_path, 24)
    data = rec.path.read_bytes()
    _, at, head, size = next(b for b in top_level_boxes(data) if b[0] == b"mdat")
    rec.path.write_bytes(data[: at + head + size // 2])  # half the frames, the last one torn
    kept = repair(rec.path, rec.width, rec.height, rec.fps)
    assert 8 <= kept <= 16
    assert len(_frames(rec.path)) == kept


def test_a_video_with_no_frame_is_removed(tmp_path):
    rec, _ = _record(tmp_path, 3)
    data = rec.path.read_bytes()
    _, at, head, _ = next(b for b in top_level_boxes(data) if b[0] == b"mdat")
    rec.path.write_bytes(data[: at + head])  # the header flushed, no frame yet
    assert repair(rec.path, rec.width, rec.height, rec.fps) == 0
    assert not rec.path.exists()


def test_boxes_of_a_truncated_file_run_to_its_end():
    data = b"\x00\x00\x00\x10ftypisom\x00\x00\x02\x00" + b"\x00\x00\x00\x00mdat" + b"x" * 5
    assert top_level_boxes(data) == [(b"ftyp", 0, 8, 16), (b"mdat", 16, 8, 13)]
    big = b"\x00\x00\x00\x01mdat" + (1000).to_bytes(8, "big") + b"y" * 4
    assert top_level_boxes(big) == [(b"mdat", 0, 16, 20)]
