"""``facefleet recognize``: the loop a camera device runs all day. Reads a source, runs the
pipeline, draws the overlay, shows/saves/screenshots, writes events and unknown captures,
reloads the model when a new one is installed, and reports benchmark figures.

Imports nothing from the server side (no scikit-learn, MLflow or pandas): a device only needs
numpy, OpenCV, dlib and the bundle reader.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facefleet.clock import file_stamp
from facefleet.edge import overlay
from facefleet.edge.events import EventLog, event_record
from facefleet.edge.model import ModelWatcher
from facefleet.edge.pipeline import FrameResult, Pipeline, PipelineConfig
from facefleet.edge.recording import Recording, open_recording, repair_left
from facefleet.edge.sources import (
    CameraOptions,
    Frame,
    Source,
    SourceError,
    open_source,
    opencv_has_gui,
)
from facefleet.edge.stats import RunStats
from facefleet.edge.unknowns import UnknownCollector, UnknownConfig, named_sample_config

log = logging.getLogger(__name__)


@dataclass
class RecognizeOptions:
    source: str
    model: Path  # bundle folder, .tar.gz, or <models_dir>/<model>
    public_key: Path
    output_dir: Path
    unknown_dir: Path | None = None  # None: do not keep unknown faces
    save: bool = False  # annotated video output_<timestamp>.mp4
    display: bool = True  # a window, when this OpenCV and machine can show one
    screenshot_every: int = 0  # frames; 0 = only on 's' or SIGUSR1
    anonymize: str = "none"  # none | unknown | all
    duration: float | None = None  # seconds, then stop
    max_frames: int | None = None
    events: bool = True
    device: str = field(default_factory=socket.gethostname)
    embedder: str = "auto"
    detector: str = "blazeface"  # the workspace's edge.detector (the CLI passes it)
    camera: CameraOptions = field(default_factory=CameraOptions)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    unknowns: UnknownConfig = field(default_factory=UnknownConfig)
    named_dir: Path | None = None  # None: keep no sample of named faces
    named: UnknownConfig = field(default_factory=named_sample_config)
    reload_interval: float = 1.0
    cache_dir: Path | None = None
    # the face engine in a child process restarted after a native crash (edge.supervisor);
    # more than max_restarts crashes within restart_window seconds end the run
    isolate: bool = True
    max_restarts: int = 5
    restart_window: float = 60.0


@dataclass
class RunSummary:
    frames: int
    face_frames: int  # frames with at least one face on screen
    name_frames: dict[str | None, int]  # frames on which each name (None = unknown) was shown
    events: int
    unknown_saved: int
    model_versions: list[Any]  # in the order they were used
    reloads: int
    refused: int
    video: Path | None
    screenshots: list[Path]
    stats: dict[str, Any]
    display: bool
    named_saved: int = 0  # crops kept as the sample of named faces
    engine_restarts: int = 0  # times the engine's process died on a frame and was restarted
    crashed_frames: list[int] = field(default_factory=list)  # the frames it died on
    videos: list[Path] = field(default_factory=list)  # every annotated video (one per engine start)


def display_problem(build_info: str, env: dict[str, str] | None = None) -> str | None:
    """Why no window can be shown (None when one can)."""
    env = os.environ if env is None else env
    if not opencv_has_gui(build_info):
        return "this OpenCV has no GUI support (opencv-python-headless)"
    if os.name == "posix" and not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY is not set)"
    return None


def model_label(bundle) -> str:
    return f"v{bundle.version}" + (f" {bundle.name}" if bundle.name else "")


class _Screenshots:
    """Screenshot requests from the keyboard, SIGUSR1 or a frame interval."""

    def __init__(self, folder: Path, every: int) -> None:
        self.folder = folder
        self.every = every
        self.requested = threading.Event()
        self.saved: list[Path] = []

    def due(self, n: int) -> bool:
        if self.every and n % self.every == 0:
            return True
        if self.requested.is_set():
            self.requested.clear()
            return True
        return False

    def save(self, bgr) -> Path:
        import cv2

        from facefleet.fileio import atomic_write_bytes

        name = f"screenshot_{file_stamp()}"
        path = self.folder / f"{name}.jpg"
        i = 1
        while path.exists() or path in self.saved:
            path = self.folder / f"{name}_{i}.jpg"
            i += 1
        ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
        if ok:
            atomic_write_bytes(path, jpeg.tobytes())
            self.saved.append(path)
            log.info("screenshot saved: %s", path)
        return path


def new_run_id() -> str:
    """The ``run`` of a run's events (kept across engine restarts)."""
    return uuid.uuid4().hex[:8]


def make_engine(opts: RecognizeOptions):
    from facefleet.vision.engine import FaceEngine, VisionConfig

    return FaceEngine(
        VisionConfig(
            detector=opts.detector,
            upsample=opts.pipeline.upsample,
            max_side=opts.pipeline.detect_width,
            fallback_detector=None,
            embedder=opts.embedder,
            cache_dir=opts.cache_dir,
        )
    )


class Outputs:
    """Everything a run writes: ``events.jsonl``/``facelist.csv``, unknown-face captures, the
    annotated video, screenshots and the window."""

    def __init__(self, opts: RecognizeOptions, display: bool, source: str, run_id: str | None = None) -> None:
        self.opts = opts
        self.display = display
        self.source = source
        self.run_id = run_id or new_run_id()
        opts.output_dir.mkdir(parents=True, exist_ok=True)
        self.events = EventLog(opts.output_dir) if opts.events else None
        self.collector = None
        if opts.unknown_dir is not None:
            if opts.anonymize in ("unknown", "all"):
                log.warning("--anonymize %s: unknown faces are not kept", opts.anonymize)
            else:
                self.collector = UnknownCollector(opts.unknown_dir, opts.unknowns, device=opts.device)
        self.named = None  # the sample of named faces (a false match can then be corrected)
        if opts.named_dir is not None and opts.anonymize == "none":
            self.named = UnknownCollector(opts.named_dir, opts.named, device=opts.device, kind="named")
        self.shots = _Screenshots(opts.output_dir, opts.screenshot_every)
        self.recording: Recording | None = None

    def decision(self, track, frame_index: int, ts: float, model) -> None:
        """A track got (or changed) its name: an event, and its face if it is unknown (or
        sampled among the named ones)."""
        thr = model.thresholds.get(track.candidate) if track.candidate else None
        crop = self._offer(track, thr)
        if self.events is not None:
            self.events.write(
                event_record(
                    ts=ts,
                    device=self.opts.device,
                    source=self.source,
                    run=self.run_id,
                    frame=frame_index,
                    track=track,
                    view=track.view,
                    model_version=model.version,
                    threshold=thr,
                    crop_path=None if crop is None else str(crop),
                    crop_kind="unknown" if track.name is None else "named",
                )
            )

    def _offer(self, track, threshold: float | None) -> Path | None:
        if track.name is None and self.collector is not None:
            return _offer_unknown(self.collector, self.run_id, track, self.source)
        if track.name is not None and self.named is not None:
            return _offer_unknown(self.named, self.run_id, track, self.source, threshold=threshold)
        return None

    def ended(self, track, model) -> None:
        """A track left the picture: its best view replaces the crop kept for it."""
        if track.decided:
            self._offer(track, model.thresholds.get(track.candidate) if track.candidate else None)

    def picture(self, frame: Frame, result: FrameResult, *, n: int, fps, model, fps_in, stats, stop) -> None:
        """Draw the overlay when anything shows or keeps it: window, video, screenshot."""
        want_shot = self.shots.due(n)
        if not (self.display or self.opts.save or want_shot):
            return
        t1 = time.perf_counter()
        out = overlay.draw(
            frame.bgr, result.tracks, fps=fps, model_version=model_label(model), anonymize=self.opts.anonymize
        )
        stats.add("draw", time.perf_counter() - t1)
        if self.opts.save:
            t2 = time.perf_counter()
            if self.recording is None:
                self.recording = open_recording(self.opts.output_dir, out, fps_in)
            self.recording.write(out)
            stats.add("write", time.perf_counter() - t2)
        if self.display:
            want_shot = _show(out, stop) or want_shot
        if want_shot:
            self.shots.save(out)

    @property
    def video_path(self) -> Path | None:
        return None if self.recording is None else self.recording.path

    @property
    def event_count(self) -> int:
        return 0 if self.events is None else self.events.count

    @property
    def unknown_saved(self) -> int:
        return 0 if self.collector is None else self.collector.saved

    @property
    def named_saved(self) -> int:
        return 0 if self.named is None else self.named.saved

    def close(self) -> None:
        if self.recording is not None:
            self.recording.close()
        if self.events is not None:
            self.events.close()
        if self.display:
            import cv2

            cv2.destroyAllWindows()


def _usable_display(wanted: bool) -> bool:
    if not wanted:
        return False
    import cv2

    problem = display_problem(cv2.getBuildInformation())
    if problem:
        log.warning("%s: running headless", problem)
        return False
    return True


def recognize(
    opts: RecognizeOptions,
    *,
    engine=None,
    source: Source | None = None,
    on_frame: Callable[[Frame, FrameResult], None] | None = None,
) -> RunSummary:
    """Run recognition on ``opts.source`` until it ends, ``duration`` passes, the window is
    closed with ``q``, or SIGINT/SIGTERM; returns what happened.

    With ``opts.isolate`` (the default) and none of ``engine``, ``source`` or ``on_frame``
    given, the loop runs in a child process that is restarted when native code kills it on
    a frame (:mod:`facefleet.edge.supervisor`); otherwise in this process.
    """
    if opts.isolate and engine is None and source is None and on_frame is None:
        from facefleet.edge.supervisor import supervise

        return supervise(opts)
    if opts.output_dir.is_dir():
        repair_left(opts.output_dir)  # videos of a run killed while saving
    return run_loop(opts, engine=engine, source=source, on_frame=on_frame)


class LoopHooks:
    """Where a supervised child reports its progress (``edge.supervisor``); in-process runs
    use these no-ops. Called once per frame at most twice, so they must stay cheap."""

    def model(self, version: Any) -> None:
        """The bundle ``version`` was loaded at the start."""

    def opened(self, src: Source, pipeline: Pipeline) -> None:
        """The source is open and the pipeline built, before the first read."""

    def started(self, duration: float | None, outputs: Outputs) -> float | None:
        """The loop starts; returns its deadline (``time.monotonic()``), None for none."""
        return None if duration is None else time.monotonic() + duration

    def begin(self, frame: Frame) -> None:
        """``frame`` was read; the engine works on it next."""

    def done(self, frame: Frame, outputs: Outputs) -> None:
        """``frame`` went through (or was skipped with a frame error)."""

    def watched(self, watcher: ModelWatcher, bundle) -> None:
        """The model watcher reloaded ``bundle`` (or refused one when None)."""

    def ended(self) -> None:
        """The source ended or the run was stopped: the loop is finishing."""

    def finished(self, outputs: Outputs) -> None:
        """Everything is written and closed."""


def run_loop(
    opts: RecognizeOptions,
    *,
    engine=None,
    source: Source | None = None,
    on_frame: Callable[[Frame, FrameResult], None] | None = None,
    stats: RunStats | None = None,
    stop: threading.Event | None = None,
    hooks: LoopHooks | None = None,
    run_id: str | None = None,
) -> RunSummary:
    """The recognition loop in this process (``recognize`` without isolation, and the
    supervised child with its shared ``stats``, ``stop`` event and ``hooks``)."""
    from facefleet.registry.keys import load_public_key

    hooks = hooks or LoopHooks()
    public_key = load_public_key(Path(opts.public_key))
    engine = engine or make_engine(opts)
    watcher = ModelWatcher(
        opts.model, public_key, expected_embedder_id=engine.embedder.id, interval=opts.reload_interval
    )
    bundle = watcher.load()
    hooks.model(bundle.version)
    log.info("model %s from %s", model_label(bundle), opts.model)
    pipeline = Pipeline(engine, bundle, opts.pipeline)
    display = _usable_display(opts.display)
    src = source or open_source(opts.source, opts.camera)
    try:
        hooks.opened(src, pipeline)
        outputs = Outputs(opts, display, str(src.spec), run_id=run_id)
    except BaseException:
        if source is None:
            src.close()
        raise
    stats = RunStats() if stats is None else stats
    stop = threading.Event() if stop is None else stop
    restore = _install_signals(outputs.shots, stop)
    versions = [bundle.version]
    fps_avg = None
    last_t = time.perf_counter()
    deadline = hooks.started(opts.duration, outputs)
    never_read = False  # the source ended before giving a single frame
    refused = watcher.refused
    try:
        while not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            if opts.max_frames is not None and stats.consumed >= opts.max_frames:
                break
            t0 = time.perf_counter()
            frame = src.read()
            if frame is None:
                never_read = stats.consumed == 0
                break
            stats.add("decode", time.perf_counter() - t0)
            hooks.begin(frame)

            new_bundle = watcher.poll()
            if new_bundle is not None:
                pipeline.set_model(new_bundle)
                versions.append(new_bundle.version)
            if new_bundle is not None or watcher.refused != refused:
                refused = watcher.refused
                hooks.watched(watcher, new_bundle)

            try:
                result = pipeline.process(
                    frame.bgr, frame.index, independent=getattr(src, "independent", False)
                )
            except Exception as exc:  # one bad frame (engine error) must not end the run
                stats.frame_errors += 1
                log.warning("frame %s skipped: %s", frame.index, exc)
                stats.frames += 1
                hooks.done(frame, outputs)
                continue
            for stage, secs in result.timings.items():
                stats.add(stage, secs)
            stats.embeddings += result.embedded
            for track in result.decisions:
                outputs.decision(track, frame.index, frame.ts, pipeline.model)
            for track in result.ended:
                outputs.ended(track, pipeline.model)
            if result.tracks:
                stats.face_frames += 1
                stats.count_names({t.name for t in result.tracks if t.decided})

            now = time.perf_counter()
            inst = 1.0 / max(now - last_t, 1e-6)
            fps_avg = inst if fps_avg is None else 0.9 * fps_avg + 0.1 * inst
            last_t = now

            outputs.picture(
                frame,
                result,
                n=stats.frames + 1,
                fps=fps_avg,
                model=pipeline.model,
                fps_in=getattr(src, "fps", 0.0),
                stats=stats,
                stop=stop,
            )
            stats.frames += 1
            hooks.done(frame, outputs)
            if on_frame is not None:
                on_frame(frame, result)
        hooks.ended()
        for track in pipeline.finish():
            outputs.ended(track, pipeline.model)
    finally:
        stats.dropped = getattr(src, "dropped", 0)
        stats.stop()
        if source is None:
            src.close()
        outputs.close()
        restore()
        hooks.finished(outputs)
    if never_read:
        what = "the stream sent none or stopped" if getattr(src, "live", False) else "it has none"
        raise SourceError(f"{src.spec}: no frame to recognise ({what}); nothing was recorded")
    return RunSummary(
        frames=stats.frames,
        face_frames=stats.face_frames,
        name_frames=dict(stats.name_frames),
        events=outputs.event_count,
        unknown_saved=outputs.unknown_saved,
        named_saved=outputs.named_saved,
        model_versions=versions,
        reloads=watcher.reloads,
        refused=watcher.refused,
        video=outputs.video_path,
        videos=[] if outputs.video_path is None else [outputs.video_path],
        screenshots=outputs.shots.saved,
        stats=stats.summary(),
        display=display,
    )


def _offer_unknown(
    collector: UnknownCollector, run_id: str, track, source: str, threshold: float | None = None
):
    """Offer a track's best crop to ``collector`` (unknown faces, or the named sample)."""
    view = track.best_view
    if view is None or view.embedding is None or view.crop is None:
        return None
    extra: dict[str, Any] = {}
    if track.name is not None:
        margin = None
        if threshold is not None and track.distance == track.distance:
            margin = round(float(threshold) - float(track.distance), 4)
        score = None if track.score != track.score else round(float(track.score), 4)
        extra = {"name": track.name, "score": score, "threshold": threshold, "margin": margin}
    return collector.offer(
        run=run_id,
        track_id=track.id,
        crop=view.crop,
        embedding=view.embedding,
        quality=view.score,
        info={
            "source": source,
            "run": run_id,
            "track_id": track.id,
            "frame": view.frame,
            "box": [int(v) for v in view.box],
            "quality": view.quality.as_dict(),
            "distance": None if track.distance != track.distance else round(track.distance, 4),
            "candidate": track.candidate,
            **extra,
        },
    )


def _show(bgr, stop: threading.Event) -> bool:
    """Show a frame; returns True when 's' asks for a screenshot (sets ``stop`` on q/Esc)."""
    import cv2

    cv2.imshow("facefleet", bgr)
    key = cv2.waitKey(1) & 0xFF
    if key in (ord("q"), 27):
        stop.set()
    return key == ord("s")


def _install_signals(shots: _Screenshots, stop: threading.Event) -> Callable[[], None]:
    """SIGUSR1 takes a screenshot, SIGTERM stops cleanly; only from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {}
    handlers = {signal.SIGTERM: lambda *_: stop.set()}
    if hasattr(signal, "SIGUSR1"):
        handlers[signal.SIGUSR1] = lambda *_: shots.requested.set()
    for sig, handler in handlers.items():
        previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
