"""Frame sources for the device: Jetson CSI (GStreamer), USB cameras, RTSP/HTTP streams,
video files and folders of images, behind one small interface.

Live sources (cameras, streams) are read on their own thread that keeps only the newest frame,
so a slow consumer never builds a backlog; frames it never took are counted as dropped. Files
are read frame by frame, none skipped. Opening a source that fails falls back to the next
candidate (a CSI camera that cannot open falls back to USB), and says so.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facefleet.errors import FacefleetError

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".ts"}


class SourceError(FacefleetError):
    """A frame source could not be opened (or stopped for good)."""


@dataclass
class Frame:
    index: int  # position in the source (files) or count of frames grabbed (live)
    bgr: np.ndarray
    ts: float  # wall-clock time the frame was read


@dataclass(frozen=True)
class CameraOptions:
    """What the camera should deliver; CSI also needs the sensor mode it captures in."""

    width: int = 1280
    height: int = 720
    fps: int = 30
    flip: int = 0  # nvvidconv flip-method 0..7
    capture_width: int | None = None  # sensor mode; defaults to width/height
    capture_height: int | None = None


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # csi | usb | stream | file | folder
    target: str  # sensor id, device index or path, URL, file or folder path
    label: str = field(default="", compare=False)

    def __str__(self) -> str:
        return self.label or f"{self.kind}:{self.target}"


# -- pure helpers -------------------------------------------------------------------------------
def csi_pipeline(sensor_id: int, opts: CameraOptions) -> str:
    """The GStreamer pipeline that reads a Jetson CSI camera into BGR frames for OpenCV."""
    cw = opts.capture_width or opts.width
    ch = opts.capture_height or opts.height
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM),width={cw},height={ch},framerate={opts.fps}/1 ! "
        f"nvvidconv flip-method={opts.flip} ! "
        f"video/x-raw,width={opts.width},height={opts.height},format=BGRx ! "
        "videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1"
    )


def opencv_has_gstreamer(build_info: str) -> bool:
    """Whether ``cv2.getBuildInformation()`` reports GStreamer support."""
    match = re.search(r"GStreamer:\s*(\S+)", build_info)
    return bool(match) and match.group(1).upper() not in ("NO", "OFF")


def opencv_has_gui(build_info: str) -> bool:
    """Whether this OpenCV can open windows (opencv-python-headless cannot)."""
    match = re.search(r"GUI:\s*(\S+)", build_info)
    return bool(match) and match.group(1).upper() not in ("NONE", "NO", "OFF")


def parse_source(text: str) -> SourceSpec:
    """``csi[:N]``, ``usb[:N]``, ``/dev/videoN``, ``N``, ``rtsp://``/``http(s)://`` URL,
    a video file or a folder of images."""
    text = text.strip()
    if not text:
        raise SourceError("empty source")
    low = text.lower()
    if low == "csi" or low.startswith("csi:"):
        sensor = low.partition(":")[2] or "0"
        if not sensor.isdigit():
            raise SourceError(f"bad CSI sensor id in {text!r}: use csi or csi:N")
        return SourceSpec("csi", sensor, f"csi:{sensor}")
    if low == "usb" or low.startswith("usb:"):
        dev = low.partition(":")[2] or "0"
        if not dev.isdigit():
            raise SourceError(f"bad USB camera index in {text!r}: use usb or usb:N")
        return SourceSpec("usb", dev, f"usb:{dev}")
    if text.isdigit():
        return SourceSpec("usb", text, f"usb:{text}")
    if re.fullmatch(r"/dev/video\d+", text):
        return SourceSpec("usb", text, text)
    if re.match(r"^(rtsp|rtsps|http|https|rtmp)://", low):
        return SourceSpec("stream", text, _redact(text))
    path = Path(text).expanduser()
    if path.is_dir():
        return SourceSpec("folder", str(path), str(path))
    if path.is_file():
        return SourceSpec("file", str(path), str(path))
    raise SourceError(
        f"source {text!r}: no such file or folder (use csi[:N], usb[:N], /dev/videoN, "
        "an rtsp:// or http:// URL, a video file or a folder of images)"
    )


def _redact(url: str) -> str:
    """A URL without its password, for logs and events."""
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", url)


def fallback_chain(spec: SourceSpec) -> list[SourceSpec]:
    """The sources to try in order: a CSI camera falls back to the first USB camera."""
    if spec.kind == "csi":
        return [spec, SourceSpec("usb", "0", "usb:0")]
    return [spec]


def backoff_delays(initial: float, maximum: float, attempts: int) -> list[float]:
    """Doubling waits between reconnection attempts, capped at ``maximum``."""
    return [min(initial * (2**i), maximum) for i in range(max(attempts, 0))]


# -- sources --------------------------------------------------------------------------------------
class Source:
    """Base: ``read()`` returns the next Frame, or None when the source has ended."""

    spec: SourceSpec
    live: bool = False
    independent: bool = False  # frames are unrelated photos: nothing is tracked across them
    seekable: bool = False  # ``seek`` can resume at a given frame (files and folders)
    fps: float = 0.0
    dropped: int = 0

    def read(self, timeout: float = 5.0) -> Frame | None:  # pragma: no cover - interface
        raise NotImplementedError

    def seek(self, index: int) -> None:
        """Make the next ``read`` return frame ``index`` (only where ``seekable``)."""
        raise SourceError(f"{self.spec}: a live source cannot resume at a given frame")

    def close(self) -> None:
        pass

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame


class VideoFileSource(Source):
    """Every frame of a video file, in order."""

    seekable = True

    def __init__(self, spec: SourceSpec) -> None:
        import cv2

        self.spec = spec
        self._cap = cv2.VideoCapture(spec.target)
        if not self._cap.isOpened():
            raise SourceError(f"{spec.target}: cannot be opened as a video")
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._index = 0

    def read(self, timeout: float = 5.0) -> Frame | None:
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            return None
        frame = Frame(self._index, bgr, time.time())
        self._index += 1
        return frame

    def seek(self, index: int) -> None:
        """Resume at frame ``index``: OpenCV's seek when it lands exactly there, else decode
        from the start up to it (a file whose timestamps do not allow an exact seek)."""
        import cv2

        index = max(0, int(index))
        if index == self._index:
            return
        if (
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, index)
            and int(self._cap.get(cv2.CAP_PROP_POS_FRAMES)) == index
        ):
            self._index = index
            return
        self._cap.release()
        self._cap = cv2.VideoCapture(self.spec.target)
        self._index = 0
        while self._index < index and self._cap.grab():
            self._index += 1

    def close(self) -> None:
        self._cap.release()


class ImageFolderSource(Source):
    """The images of a folder (sorted by name) as frames; unreadable files are skipped.
    Each photo stands alone (``independent``): a face is never tracked from one to the next."""

    independent = True
    seekable = True

    def __init__(self, spec: SourceSpec) -> None:
        from facefleet.vision.image import iter_image_files

        self.spec = spec
        self._files = list(iter_image_files([spec.target], recursive=False))
        if not self._files:
            raise SourceError(f"{spec.target}: no images in this folder")
        self._index = 0
        self.skipped: list[str] = []

    def read(self, timeout: float = 5.0) -> Frame | None:
        import cv2

        from facefleet.errors import ImageError
        from facefleet.vision.image import load_image

        while self._index < len(self._files):
            path = self._files[self._index]
            self._index += 1
            try:
                rgb = load_image(path)
            except ImageError as exc:
                log.warning("skipping %s", exc)
                self.skipped.append(str(path))
                continue
            return Frame(self._index - 1, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), time.time())
        return None

    def seek(self, index: int) -> None:
        self._index = max(0, int(index))


Opener = Callable[[], "object"]  # returns an opened cv2.VideoCapture-like object or raises


class LiveSource(Source):
    """A camera or stream read on its own thread, keeping only the newest frame.

    A stream that drops is reopened with doubling waits, at most ``reconnect_attempts`` times
    in a row without a frame in between; after that the source ends. Frames replaced before
    the consumer took them are counted in ``dropped``.
    """

    live = True

    def __init__(
        self,
        spec: SourceSpec,
        opener: Opener,
        *,
        reconnect: bool = False,
        reconnect_attempts: int = 5,
        backoff_initial: float = 0.5,
        backoff_max: float = 8.0,
    ) -> None:
        self.spec = spec
        self._opener = opener
        self._reconnect = reconnect
        self._delays = backoff_delays(backoff_initial, backoff_max, reconnect_attempts)
        self._cap = opener()  # raises SourceError when it cannot open
        self.fps = float(_cap_fps(self._cap))
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._count = 0
        self._ended = False
        self._stop = threading.Event()
        self.dropped = 0
        self.reconnects = 0
        self._thread = threading.Thread(target=self._run, name=f"source-{spec}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        failures = 0  # consecutive reconnections without a frame since
        try:
            while not self._stop.is_set():
                ok, bgr = self._cap.read()
                if ok and bgr is not None:
                    self._publish(bgr)
                    failures = 0
                    continue
                if not self._reconnect or failures >= len(self._delays):
                    if self._reconnect:
                        log.error("%s: gave up after %d reconnection attempts", self.spec, failures)
                    break
                failures += 1
                self._reopen(failures)
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _publish(self, bgr: np.ndarray) -> None:
        with self._cond:
            if self._latest is not None:
                self.dropped += 1
            self._latest = Frame(self._count, bgr, time.time())
            self._count += 1
            self._cond.notify_all()

    def _reopen(self, attempt: int) -> None:
        """One reconnection try after the ``attempt``-th wait; on failure the next read fails
        and the caller tries again until the attempts are used up."""
        _release(self._cap)
        delay = self._delays[attempt - 1]
        log.warning(
            "%s: stream lost; reconnecting in %.1f s (try %d/%d)",
            self.spec,
            delay,
            attempt,
            len(self._delays),
        )
        if self._stop.wait(delay):
            return
        try:
            self._cap = self._opener()
        except SourceError as exc:
            log.warning("%s", exc)
            self._cap = _Closed()
            return
        self.reconnects += 1
        log.warning("%s: reconnected", self.spec)

    def read(self, timeout: float = 5.0) -> Frame | None:
        """The newest frame not yet returned; None once the source ended or nothing arrived
        within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._latest is None and not self._ended:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.error("%s: no frame for %.0f s", self.spec, timeout)
                    return None
                self._cond.wait(left)
            frame, self._latest = self._latest, None
            return frame

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        _release(self._cap)


class _Closed:
    """Stands in for a capture that could not be reopened: every read fails."""

    def read(self):
        return False, None

    def release(self) -> None:
        pass


def _cap_fps(cap) -> float:
    try:
        import cv2

        return float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    except Exception:  # noqa: BLE001 - a capture without properties
        return 0.0


def _release(cap) -> None:
    with contextlib.suppress(Exception):  # already gone
        cap.release()


def _open_capture(target, api: int | None, what: str, timeout_ms: int = 10_000):
    import cv2

    if api is None:
        cap = cv2.VideoCapture(target)
    else:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
        cap = cv2.VideoCapture(target, api, params)
    if not cap.isOpened():
        _release(cap)
        raise SourceError(f"{what}: cannot open")
    return cap


def _opener_for(spec: SourceSpec, opts: CameraOptions) -> tuple[Opener, bool]:
    """The function that opens ``spec`` and whether to reconnect when it drops."""
    import cv2

    if spec.kind == "csi":
        if not opencv_has_gstreamer(cv2.getBuildInformation()):
            raise SourceError(
                f"{spec}: this OpenCV was built without GStreamer, so it cannot read a CSI "
                "camera (on a Jetson use the system OpenCV from JetPack)"
            )
        pipeline = csi_pipeline(int(spec.target), opts)
        return (lambda: _open_capture(pipeline, cv2.CAP_GSTREAMER, str(spec))), False
    if spec.kind == "usb":
        target = int(spec.target) if spec.target.isdigit() else spec.target

        def open_usb():
            cap = _open_capture(target, None, str(spec))
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, opts.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, opts.height)
            cap.set(cv2.CAP_PROP_FPS, opts.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            return cap

        return open_usb, False
    if spec.kind == "stream":
        return (lambda: _open_capture(spec.target, cv2.CAP_FFMPEG, str(spec))), True
    raise SourceError(f"{spec}: not a live source")


def open_source(
    spec: SourceSpec | str,
    opts: CameraOptions | None = None,
    *,
    reconnect_attempts: int = 5,
    backoff_initial: float = 0.5,
    openers: dict[str, Callable[[SourceSpec, CameraOptions], tuple[Opener, bool]]] | None = None,
) -> Source:
    """Open ``spec``, falling back along :func:`fallback_chain` (with a warning) on failure.

    ``openers`` replaces the opener of a kind (``csi``, ``usb``, ``stream``): used to plug
    in other capture back-ends.
    """
    if isinstance(spec, str):
        spec = parse_source(spec)
    opts = opts or CameraOptions()
    if spec.kind == "file":
        return VideoFileSource(spec)
    if spec.kind == "folder":
        return ImageFolderSource(spec)
    errors: list[str] = []
    chain = fallback_chain(spec)
    for i, candidate in enumerate(chain):
        make = (openers or {}).get(candidate.kind, _opener_for)
        try:
            opener, reconnect = make(candidate, opts)
            source = LiveSource(
                candidate,
                opener,
                reconnect=reconnect,
                reconnect_attempts=reconnect_attempts,
                backoff_initial=backoff_initial,
            )
        except SourceError as exc:
            errors.append(str(exc))
            if i + 1 < len(chain):
                log.warning("%s; falling back to %s", exc, chain[i + 1])
            continue
        if i > 0:
            log.warning("using %s instead of %s", candidate, spec)
        return source
    raise SourceError("; ".join(errors))
