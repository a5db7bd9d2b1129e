"""Edge fixtures: a workspace with Lin-Manuel Miranda and the knn_examples people enrolled,
a signing key, and bundles trained through facefleet.train (built once per session); a real
MJPEG stream over HTTP on the loopback."""

from __future__ import annotations

import http.server
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import pytest


def _train(ws, name: str):
    from facefleet.train.config import load_config
    from facefleet.train.pipeline import train

    config = load_config(workspace_train=ws.settings.train or None)
    config.name = name
    return train(ws, config)


@pytest.fixture(scope="session")
def edge_ws(tmp_path_factory, shared_data: Path):
    """(workspace, first TrainResult): version 1 installed as models/<model>/current."""
    from facefleet.enrol import enroll, plan_folder
    from facefleet.layout import switch
    from facefleet.registry.keys import generate_keypair
    from facefleet.workspace import Workspace

    ws = Workspace.init(tmp_path_factory.mktemp("edge"))
    items = [("lin_manuel_miranda", shared_data / "faces/examples/lin-manuel-miranda.png")]
    items += plan_folder(shared_data / "faces/examples/knn_examples/train")
    report = enroll(ws, items)
    assert all(o.accepted for o in report.outcomes), report.outcomes
    generate_keypair(ws.keys_dir)
    first = _train(ws, "edge-one")
    switch(first.bundle_dir.parent, first.bundle_dir.name)
    return ws, first


@pytest.fixture(scope="session")
def second_bundle(edge_ws):
    """A second trained version of the same model (not installed as current)."""
    ws, _ = edge_ws
    return _train(ws, "edge-two")


@pytest.fixture
def device_models(edge_ws, tmp_path):
    """A device-style models folder (copy): <tmp>/models/<model>/{1, current -> 1}."""
    ws, first = edge_ws
    from facefleet.layout import switch

    model_dir = tmp_path / "models" / first.model
    model_dir.mkdir(parents=True)
    shutil.copytree(first.bundle_dir, model_dir / str(first.version))
    switch(model_dir, str(first.version))
    return model_dir


@pytest.fixture(scope="session")
def hamilton(shared_data: Path) -> Path:
    return shared_data / "video" / "short_hamilton_clip.mp4"


@pytest.fixture(scope="session")
def pbs(shared_data: Path) -> Path:
    return shared_data / "video" / "pbs_whitehouse_meeting_17s.mp4"


def _jpeg_frames(clip: Path, count: int) -> list[bytes]:
    cap = cv2.VideoCapture(str(clip))
    out = []
    while len(out) < count:
        ok, img = cap.read()
        if not ok:
            break
        out.append(cv2.imencode(".jpg", img)[1].tobytes())
    cap.release()
    return out


class _MjpegHandler(http.server.BaseHTTPRequestHandler):
    """An IP camera's MJPEG stream that drops (closes) after ``frames`` are sent, one every
    ``delay`` seconds."""

    frames: list[bytes] = []
    delay = 0.005

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        try:
            for jpg in self.frames:
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n")
                self.wfile.write(f"Content-Length: {len(jpg)}\r\n\r\n".encode())
                self.wfile.write(jpg + b"\r\n")
                time.sleep(self.delay)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def log_message(self, *args):
        pass


@contextmanager
def _mjpeg_server(frames: list[bytes], delay: float) -> Iterator[tuple[str, http.server.HTTPServer]]:
    handler = type("H", (_MjpegHandler,), {"frames": frames, "delay": delay})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/stream.mjpg", server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def http_clip(shared_data):
    """A real MJPEG-over-HTTP server on 127.0.0.1 sending 60 frames per connection, faster
    than a reader takes them."""
    with _mjpeg_server(_jpeg_frames(shared_data / "video" / "short_hamilton_clip.mp4", 60), 0.005) as url:
        yield url


@pytest.fixture
def camera_paced_clip(shared_data):
    """The same at 10 frames per second, slower than the pipeline: no frame is dropped."""
    with _mjpeg_server(_jpeg_frames(shared_data / "video" / "short_hamilton_clip.mp4", 60), 0.1) as url:
        yield url
