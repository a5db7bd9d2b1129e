"""Sources: the CSI pipeline string, source parsing, fallback, a real HTTP stream that drops
and reconnects, files and image folders."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import pytest

from facefleet.edge.sources import (
    CameraOptions,
    LiveSource,
    SourceError,
    SourceSpec,
    backoff_delays,
    csi_pipeline,
    open_source,
    opencv_has_gstreamer,
    opencv_has_gui,
    parse_source,
)


def test_csi_pipeline_for_options():
    opts = CameraOptions(width=960, height=540, fps=21, flip=2, capture_width=1920, capture_height=1080)
    assert csi_pipeline(1, opts) == (
        "nvarguscamerasrc sensor-id=1 ! "
        "video/x-raw(memory:NVMM),width=1920,height=1080,framerate=21/1 ! "
        "nvvidconv flip-method=2 ! video/x-raw,width=960,height=540,format=BGRx ! "
        "videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1"
    )
    assert "width=1280,height=720,framerate=30/1" in csi_pipeline(0, CameraOptions())


def test_build_information_parsing():
    info = cv2.getBuildInformation()
    assert opencv_has_gstreamer("  Video I/O:\n    GStreamer:   YES (1.20.3)\n")
    assert not opencv_has_gstreamer("    GStreamer:                   NO\n")
    assert not opencv_has_gui("  GUI:                           NONE\n")
    assert opencv_has_gui("  GUI:                           GTK3\n")
    assert isinstance(opencv_has_gstreamer(info), bool)


def test_parse_source(tmp_path, shared_data):
    assert parse_source("csi") == SourceSpec("csi", "0")
    assert parse_source("csi:1") == SourceSpec("csi", "1")
    assert parse_source("usb:2") == SourceSpec("usb", "2")
    assert parse_source("0") == SourceSpec("usb", "0")
    assert parse_source("/dev/video3") == SourceSpec("usb", "/dev/video3")
    spec = parse_source("rtsp://cam:secret@10.0.0.5/stream")
    assert spec.kind == "stream" and "secret" not in str(spec)
    assert parse_source(str(tmp_path)).kind == "folder"
    clip = shared_data / "video" / "short_hamilton_clip.mp4"
    assert parse_source(str(clip)).kind == "file"
    for bad in ("csi:x", "nope/missing.mp4", ""):
        with pytest.raises(SourceError):
            parse_source(bad)


def test_csi_without_gstreamer_says_so_and_falls_back_to_usb(shared_data, caplog):
    clip = str(shared_data / "video" / "short_hamilton_clip.mp4")

    def usb_is_the_clip(spec, opts):  # the "USB camera" of this machine is a real capture
        return (lambda: cv2.VideoCapture(clip)), False

    if opencv_has_gstreamer(cv2.getBuildInformation()):
        pytest.skip("this OpenCV has GStreamer; the no-GStreamer path cannot be shown here")
    with caplog.at_level(logging.WARNING):
        src = open_source("csi:0", openers={"usb": usb_is_the_clip})
    try:
        assert src.spec.kind == "usb"
        assert src.read() is not None
    finally:
        src.close()
    text = caplog.text
    assert "without GStreamer" in text and "falling back to usb:0" in text


def test_every_source_failing_is_one_clear_error():
    def broken(spec, opts):
        def open_():
            raise SourceError(f"{spec}: cannot open")

        return open_, False

    with pytest.raises(SourceError, match="csi:0.*usb:0"):
        open_source("csi:0", openers={"csi": broken, "usb": broken})


def test_backoff_is_bounded():
    assert backoff_delays(0.5, 4.0, 5) == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert backoff_delays(1, 1, 0) == []


def test_http_stream_reconnects_then_gives_up(http_clip):
    url, server = http_clip
    src = open_source(url, reconnect_attempts=2, backoff_initial=0.05)
    assert isinstance(src, LiveSource)
    frames = 0
    try:
        while src.read(timeout=20) is not None:
            frames += 1
            if frames < 5:
                time.sleep(0.05)  # a slow reader: about 10 frames arrive meanwhile
            elif frames == 5:
                server.shutdown()  # no server any more: reconnection must fail, bounded
                server.server_close()
    finally:
        src.close()
    assert frames >= 5
    assert src.dropped > 0  # a slow reader only gets the newest frames


def test_http_stream_reconnects_after_drop(http_clip):
    url, _ = http_clip
    src = open_source(url, reconnect_attempts=1, backoff_initial=0.05)
    last = None
    try:
        for _ in range(10_000):  # bounded: each connection sends 60 frames
            frame = src.read(timeout=20)
            assert frame is not None
            last = frame
            if src.reconnects >= 2 and frame.index > 2 * 60:
                break
    finally:
        src.close()
    # the clip ended (a drop), the stream was reopened and frames kept coming, twice
    assert src.reconnects >= 2 and last.index > 2 * 60


def test_video_file_reads_every_frame(shared_data):
    with open_source(str(shared_data / "video" / "short_hamilton_clip.mp4")) as src:
        indices = [f.index for f in src]
    assert indices == list(range(275))
    assert src.fps == pytest.approx(29.97, abs=0.1)


def test_image_folder_skips_bad_files(tmp_path, shared_data):
    for name in ("obama-240p.jpg", "two_people.jpg"):
        (tmp_path / name).write_bytes((shared_data / "faces/examples" / name).read_bytes())
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with open_source(str(tmp_path)) as src:
        frames = list(src)
    assert len(frames) == 2 and all(f.bgr.ndim == 3 for f in frames)
    assert [Path(p).name for p in src.skipped] == ["broken.jpg"]


@pytest.mark.parametrize("clip", ["short_hamilton_clip.mp4", "pbs_whitehouse_meeting_17s.mp4"])
def test_video_file_resumes_at_the_exact_frame(shared_data, clip):
    """What a restarted engine relies on: after seek(n) the next frame is frame n, pixel for
    pixel, and seeking past the end gives no frame."""
    import numpy as np

    path = shared_data / "video" / clip
    with open_source(str(path)) as src:
        frames = [f.bgr for f in src]
    for n in (1, 13, 31, 200, len(frames) - 1):
        with open_source(str(path)) as src:
            assert src.seekable
            src.seek(n)
            frame = src.read()
            assert frame.index == n and np.array_equal(frame.bgr, frames[n]), n
            after = src.read()
            assert (after is None) if n + 1 == len(frames) else after.index == n + 1
    with open_source(str(path)) as src:
        src.seek(len(frames) + 3)
        assert src.read() is None


def test_image_folder_resumes_at_a_photo(shared_data):
    folder = shared_data / "faces" / "examples" / "knn_examples" / "test"
    with open_source(str(folder)) as src:
        indexes = [f.index for f in src]
    with open_source(str(folder)) as src:
        src.seek(2)
        assert [f.index for f in src] == indexes[2:]


def test_a_live_source_cannot_seek():
    src = LiveSource.__new__(LiveSource)
    src.spec = SourceSpec("usb", "0", "usb:0")
    assert not src.seekable
    with pytest.raises(SourceError, match="live source"):
        src.seek(3)
