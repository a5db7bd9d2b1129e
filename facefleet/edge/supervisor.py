"""The supervised ``recognize``: the recognition loop runs in a child process, and a frame
whose native code (dlib, ONNX Runtime, a decoder) kills that process costs that frame only.

The parent starts the child (spawn, dies with its parent), waits, and when it dies by a
signal logs one line, starts a new one and resumes after the frame that crashed (files,
folders, video files) or reopens the live source. More than ``max_restarts`` crashes within
``restart_window`` seconds end the run with an error.

Nothing crosses the process boundary per frame but a few integers in shared memory
(:class:`SharedStats`): the frame the child is working on, the counters and the stage
timings of :class:`~facefleet.edge.stats.RunStats`, written in place. Rare things (a name
or stage seen for the first time, a model reload, a screenshot, the saved video) go over a
pipe. So the counters of every engine process survive it and add up in one ``RunSummary``.
"""

from __future__ import annotations

import fnmatch
import logging
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import pickle
import signal
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

from facefleet.edge.recognize import LoopHooks, RecognizeOptions, RunSummary, new_run_id, run_loop
from facefleet.edge.recording import repair_left
from facefleet.edge.stats import MAX_SAMPLES, RunStats, peak_rss_bytes
from facefleet.errors import FacefleetError

log = logging.getLogger(__name__)

MAX_STAGES = 16  # distinct stage names
MAX_NAMES = 4096  # distinct names counted in ``name_frames`` (beyond: not counted)
STOP_GRACE = 10.0  # seconds a stopped child has to close its outputs before it is killed

# shared integers
(
    I_FRAMES,
    I_EMBEDDINGS,
    I_ERRORS,
    I_FACE_FRAMES,
    I_CRASHES,
    I_CURRENT,  # the frame the child read and works on
    I_DONE,  # the last frame it finished
    I_STATE,  # STARTING, LOOPING, FINISHING
    I_EVENTS,  # this engine process's outputs (folded into the totals when it ends)
    I_UNKNOWN,
    I_NAMED,
    I_DROPPED,
    I_RELOADS,
    I_REFUSED,
    I_NEXT_TRACK,  # the track id a new engine process starts at
    I_PEAK_RSS,  # bytes, of the current engine process
) = range(16)
N_INTS = 16
# shared floats (time.monotonic / time.process_time of the current engine process)
F_DEADLINE, F_WALL0, F_WALL1, F_CPU0, F_CPU1 = range(5)
N_FLOATS = 8
STARTING, LOOPING, FINISHING = 0, 1, 2
_SEGMENT_INTS = (I_EVENTS, I_UNKNOWN, I_NAMED, I_DROPPED, I_RELOADS, I_REFUSED)


def _counter(i: int) -> property:
    def get(self: SharedStats) -> int:
        return self.ints[i]

    def put(self: SharedStats, value: int) -> None:
        self.ints[i] = value

    return property(get, put)


class SharedStats(RunStats):
    """RunStats in a shared memory block: the child writes it in place as frames go, the
    parent reads whatever the child got to, and keeps the totals of earlier engine processes.

    Name and stage labels take slots; a new label is announced (``announce``) before its slot
    is first written, so the parent knows every slot even of a child that died.
    """

    frames = _counter(I_FRAMES)
    embeddings = _counter(I_EMBEDDINGS)
    frame_errors = _counter(I_ERRORS)
    face_frames = _counter(I_FACE_FRAMES)

    def __init__(
        self,
        shm: shared_memory.SharedMemory,
        *,
        labels: dict[str, dict[Any, int]] | None = None,
        announce: Callable[[tuple], None] | None = None,
    ) -> None:
        self.shm = shm
        buf = shm.buf
        self._views = []
        offset = 0

        def view(fmt: str, count: int, size: int) -> memoryview:
            nonlocal offset
            mv = buf[offset : offset + count * size].cast(fmt)
            offset += count * size
            self._views.append(mv)
            return mv

        self.ints = view("q", N_INTS, 8)
        self.floats = view("d", N_FLOATS, 8)
        self.stage_counts = view("q", MAX_STAGES, 8)
        self.name_counts = view("q", MAX_NAMES, 8)
        self.sample_data = view("d", MAX_STAGES * MAX_SAMPLES, 8)
        labels = labels or {}
        self.stage_slots: dict[str, int] = dict(labels.get("stage", {}))
        self.name_slots: dict[str | None, int] = dict(labels.get("name", {}))
        self._announce = announce
        self._full_warned = False
        # the parent's totals of the engine processes that ended
        self.crashed_frames: list[int] = []
        self.engine_restarts = 0
        self.restart_seconds = 0.0
        self.wall = self.cpu = 0.0
        self.peak = 0
        self.totals: Counter = Counter()

    @classmethod
    def create(cls) -> SharedStats:
        size = 8 * (N_INTS + N_FLOATS + MAX_STAGES + MAX_NAMES + MAX_STAGES * MAX_SAMPLES)
        return cls(shared_memory.SharedMemory(create=True, size=size))  # zero-filled, lazily

    @classmethod
    def attach(cls, name: str, labels: dict[str, dict[Any, int]], announce) -> SharedStats:
        return cls(shared_memory.SharedMemory(name=name), labels=labels, announce=announce)

    def labels(self) -> dict[str, dict[Any, int]]:
        return {"stage": dict(self.stage_slots), "name": dict(self.name_slots)}

    def _slot(self, kind: str, slots: dict, label, capacity: int) -> int | None:
        if len(slots) >= capacity:
            if not self._full_warned:
                log.warning("more than %d distinct %ss: the others are not counted", capacity, kind)
                self._full_warned = True
            return None
        slot = len(slots)
        if self._announce is not None:
            self._announce(("label", kind, slot, label))
        slots[label] = slot
        return slot

    # -- the child writes ------------------------------------------------------------------
    def add(self, stage: str, seconds: float) -> None:
        slot = self.stage_slots.get(stage)
        if slot is None and (slot := self._slot("stage", self.stage_slots, stage, MAX_STAGES)) is None:
            return
        n = self.stage_counts[slot]
        if n < MAX_SAMPLES:
            self.sample_data[slot * MAX_SAMPLES + n] = seconds
            self.stage_counts[slot] = n + 1

    def count_names(self, names) -> None:
        for name in names:
            slot = self.name_slots.get(name)
            if slot is None and (slot := self._slot("name", self.name_slots, name, MAX_NAMES)) is None:
                continue
            self.name_counts[slot] += 1

    @property
    def consumed(self) -> int:
        return self.ints[I_FRAMES] + self.ints[I_CRASHES]

    @property
    def dropped(self) -> int:
        return self.totals["dropped"] + self.ints[I_DROPPED]

    @dropped.setter
    def dropped(self, value: int) -> None:
        self.ints[I_DROPPED] = value

    def stop(self) -> None:
        self.floats[F_WALL1] = time.monotonic()
        self.floats[F_CPU1] = time.process_time()

    # -- the parent reads ------------------------------------------------------------------
    def fold(self) -> None:
        """Add the outputs and times of the engine process that ended to the totals and
        clear its slots for the next one."""
        if self.ints[I_STATE] != STARTING:
            self.wall += max(0.0, self.floats[F_WALL1] - self.floats[F_WALL0])
            self.cpu += max(0.0, self.floats[F_CPU1] - self.floats[F_CPU0])
        self.peak = max(self.peak, self.ints[I_PEAK_RSS])
        for key, i in zip(("events", "unknown", "named", "dropped", "reloads", "refused"), _SEGMENT_INTS):
            self.totals[key] += self.ints[i]
            self.ints[i] = 0
        for i in (F_WALL0, F_WALL1, F_CPU0, F_CPU1):
            self.floats[i] = 0.0
        self.ints[I_STATE] = STARTING

    @property
    def samples(self) -> dict[str, list[float]]:  # type: ignore[override]
        return {
            stage: self.sample_data[
                slot * MAX_SAMPLES : slot * MAX_SAMPLES + self.stage_counts[slot]
            ].tolist()
            for stage, slot in sorted(self.stage_slots.items(), key=lambda kv: kv[1])
        }

    @property
    def name_frames(self) -> Counter:  # type: ignore[override]
        return Counter({name: self.name_counts[slot] for name, slot in self.name_slots.items()})

    def elapsed(self) -> tuple[float, float]:
        return self.wall, self.cpu

    def peak_rss(self) -> int:
        return max(self.peak, peak_rss_bytes())

    def close(self, unlink: bool = False) -> None:
        for mv in self._views:
            mv.release()
        self._views = []
        self.shm.close()
        if unlink:
            with suppress(FileNotFoundError):
                self.shm.unlink()


# -- the child ------------------------------------------------------------------------------
def engine_fault(spec: str | None) -> Callable[[int], None] | None:
    """The test-only crash of ``FACEFLEET_FAULT_INJECT`` (``vision.batch.FAULT_ENV``) for the
    edge: ``abort:frame:GLOB`` or ``kill:frame:GLOB`` makes the engine's process abort
    (SIGABRT) or SIGKILL itself on each frame whose index matches GLOB (``12``, ``1?``, ``*``),
    as a native crash or the OOM killer would. None when the spec is not one of these."""
    if not spec:
        return None
    kind, _, rest = spec.partition(":")
    what, _, pattern = rest.partition(":")
    if kind not in ("abort", "kill") or what != "frame" or not pattern:
        return None

    def crash(index: int) -> None:
        if fnmatch.fnmatchcase(str(index), pattern):
            if kind == "abort":
                os.abort()
            os.kill(os.getpid(), signal.SIGKILL)

    return crash


class _ChildHooks(LoopHooks):
    """Reports the loop of one engine process into the shared block and the pipe."""

    def __init__(self, stats: SharedStats, conn, start: int, fault) -> None:
        self.stats = stats
        self.ints, self.floats = stats.ints, stats.floats
        self.conn = conn
        self.start = start
        self.fault = fault
        self.base = 0  # live sources restart their count: frame indexes go on from here
        self.live = False
        self.src = self.pipeline = None
        self.sent_shots = 0
        self.sent_video = False

    def model(self, version: Any) -> None:
        self.conn.send(("model", version))

    def opened(self, src, pipeline) -> None:
        self.src, self.pipeline = src, pipeline
        self.live = not src.seekable
        if self.start:
            if src.seekable:
                src.seek(self.start)
            else:
                self.base = self.start
        pipeline.tracker.start_ids_at(self.ints[I_NEXT_TRACK])

    def started(self, duration: float | None, outputs) -> float | None:
        now = time.monotonic()
        self.floats[F_WALL0] = self.floats[F_WALL1] = now
        self.floats[F_CPU0] = self.floats[F_CPU1] = time.process_time()
        if duration is not None and not self.floats[F_DEADLINE]:
            self.floats[F_DEADLINE] = now + duration  # one deadline for the whole run
        self.ints[I_STATE] = LOOPING
        self.ints[I_PEAK_RSS] = peak_rss_bytes()
        self.conn.send(("looping", outputs.display))
        return self.floats[F_DEADLINE] or None

    def begin(self, frame) -> None:
        if self.base:
            frame.index += self.base
        self.ints[I_CURRENT] = frame.index
        if self.fault is not None:
            self.fault(frame.index)

    def done(self, frame, outputs) -> None:
        ints = self.ints
        ints[I_DONE] = frame.index
        self.floats[F_WALL1] = time.monotonic()
        if not frame.index % 32:  # a system call of a few microseconds: not on every frame
            self.floats[F_CPU1] = time.process_time()
            if not frame.index % 256:
                ints[I_PEAK_RSS] = peak_rss_bytes()
        ints[I_EVENTS] = outputs.event_count
        ints[I_UNKNOWN] = outputs.unknown_saved
        ints[I_NAMED] = outputs.named_saved
        ints[I_NEXT_TRACK] = self.pipeline.tracker.next_id
        if self.live:
            ints[I_DROPPED] = self.src.dropped
        new_video = outputs.recording is not None and not self.sent_video
        if len(outputs.shots.saved) != self.sent_shots or new_video:
            self._send_files(outputs)

    def watched(self, watcher, bundle) -> None:
        self.ints[I_RELOADS] = watcher.reloads
        self.ints[I_REFUSED] = watcher.refused
        if bundle is not None:
            self.conn.send(("model", bundle.version))

    def ended(self) -> None:
        self.ints[I_STATE] = FINISHING

    def finished(self, outputs) -> None:
        self.ints[I_PEAK_RSS] = peak_rss_bytes()
        self.ints[I_EVENTS] = outputs.event_count
        self.ints[I_UNKNOWN] = outputs.unknown_saved
        self.ints[I_NAMED] = outputs.named_saved
        self._send_files(outputs)

    def _send_files(self, outputs) -> None:
        for path in outputs.shots.saved[self.sent_shots :]:
            self.conn.send(("screenshot", path))
        self.sent_shots = len(outputs.shots.saved)
        if outputs.recording is not None and not self.sent_video:
            self.conn.send(("video", outputs.recording.path))
            self.sent_video = True


@dataclass
class _Start:
    """What one engine process is started with."""

    opts: RecognizeOptions
    shm_name: str
    start: int  # the frame to resume at
    parent_pid: int
    run_id: str
    labels: dict[str, dict[Any, int]]
    log_level: int
    log_format: str | None


def _child_main(conn, job: _Start) -> None:
    """One engine process: the recognition loop over the shared block, then ``done``."""
    from facefleet.lifetime import die_with_parent
    from facefleet.vision.batch import FAULT_ENV

    die_with_parent(job.parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if job.log_format is not None:
        logging.basicConfig(level=job.log_level, format=job.log_format)
    else:
        logging.getLogger().setLevel(job.log_level)
    stats = SharedStats.attach(job.shm_name, job.labels, conn.send)
    hooks = _ChildHooks(stats, conn, job.start, engine_fault(os.environ.get(FAULT_ENV)))
    try:
        run_loop(job.opts, stats=stats, stop=stop, hooks=hooks, run_id=job.run_id)
        conn.send(("done", None))
    except BaseException as exc:  # noqa: BLE001 - every failure goes to the parent
        if not isinstance(exc, FacefleetError | KeyboardInterrupt):
            log.error("the face engine process failed:\n%s", traceback.format_exc())
        conn.send(("error", _portable(exc)))
    finally:
        stats.close()
        conn.close()


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a FacefleetError with its message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any unpicklable exception
        return FacefleetError(f"the face engine process failed: {exc}")


# -- the parent -------------------------------------------------------------------------------
def crash_line(exitcode: int | None, frame: int | None, *, finishing: bool = False) -> str:
    """How one crash is said: ``the face engine crashed on frame N (signal S)``."""
    how = f"signal {-exitcode}" if exitcode is not None and exitcode < 0 else f"exit status {exitcode}"
    where = (
        "after the last frame" if finishing else "while starting" if frame is None else f"on frame {frame}"
    )
    return f"the face engine crashed {where} ({how})"


@dataclass
class _Run:
    """What the parent learns from its engine processes."""

    versions: list[Any] = field(default_factory=list)
    screenshots: list[Path] = field(default_factory=list)
    videos: list[Path] = field(default_factory=list)
    display: bool = False
    crashes: deque = field(default_factory=deque)  # time.monotonic() of the recent crashes


class Supervisor:
    """Runs ``opts`` in engine processes, one at a time, until the run ends."""

    def __init__(self, opts: RecognizeOptions) -> None:
        self.opts = opts
        self.ctx = mp.get_context("spawn")  # no fork: onnxruntime/dlib threads would deadlock it
        self.run_id = new_run_id()
        self.stats = SharedStats.create()
        self.state = _Run()
        self.proc = None
        self.stopping = False
        self.interrupted = False
        self.kill_at: float | None = None
        self.crashed_at: float | None = None  # time.monotonic() of the last crash
        self.repairs: list[threading.Thread] = []
        self.repair_lock = threading.Lock()  # one repair pass at a time: never a file twice

    def run(self) -> RunSummary:
        restore = self._install_signals()
        self._repair_videos()  # of a run killed while saving
        try:
            start: int | None = 0
            while start is not None and not self.stopping:
                outcome, payload = self._one_process(start)
                reached = self.stats.ints[I_STATE]
                self.stats.fold()
                if outcome == "died":
                    self._repair_videos()
                if outcome == "error":
                    raise payload
                if outcome == "done" or self.stopping:
                    break
                start = self._crashed(payload, start, reached)
        finally:
            restore()
            if self.proc is not None and self.proc.is_alive():
                self.proc.kill()
                self.proc.join(5)
            for t in self.repairs:
                t.join()
        if self.interrupted:
            raise KeyboardInterrupt
        return self._summary()

    def _one_process(self, start: int) -> tuple[str, Any]:
        """Start an engine process at frame ``start`` and wait until it ends: ("done", None),
        ("error", exception) or ("died", exit code)."""
        ints = self.stats.ints
        ints[I_CURRENT] = ints[I_DONE] = start - 1
        ints[I_STATE] = STARTING
        root = logging.getLogger()
        fmt = next((h.formatter._fmt for h in root.handlers if h.formatter is not None), None)
        job = _Start(
            self.opts,
            self.stats.shm.name,
            start,
            os.getpid(),
            self.run_id,
            self.stats.labels(),
            root.getEffectiveLevel(),
            fmt,
        )
        reader, writer = self.ctx.Pipe(duplex=False)
        from facefleet.lifetime import main_script_hidden

        self.proc = self.ctx.Process(
            target=_child_main, args=(writer, job), name="facefleet-engine", daemon=True
        )
        with main_script_hidden():
            self.proc.start()
        writer.close()
        outcome: tuple[str, Any] | None = None
        try:
            while True:
                try:
                    ready = mp_connection.wait([reader, self.proc.sentinel], 1.0)
                    if not ready and self.kill_at is not None and time.monotonic() > self.kill_at:
                        log.error("the face engine did not stop within %.0f s; killing it", STOP_GRACE)
                        self.proc.kill()
                        self.kill_at = float("inf")
                    if reader in ready:
                        outcome = self._drain(reader) or outcome
                    if self.proc.sentinel in ready:
                        outcome = self._drain(reader) or outcome
                        self.proc.join()
                        break
                except KeyboardInterrupt:
                    if self.interrupted:  # a second Ctrl-C: no more waiting
                        self.proc.kill()
                    self.interrupted = True
                    self._stop()
        finally:
            reader.close()
        return outcome or ("died", self.proc.exitcode)

    def _drain(self, reader) -> tuple[str, Any] | None:
        """Handle what the child sent; its final ("done"/"error") message, if it came."""
        final = None
        try:
            while reader.poll():
                kind, *rest = reader.recv()
                if kind == "label":
                    what, slot, label = rest
                    slots = self.stats.stage_slots if what == "stage" else self.stats.name_slots
                    slots[label] = slot
                elif kind == "model":
                    if not self.state.versions or self.state.versions[-1] != rest[0]:
                        self.state.versions.append(rest[0])
                elif kind == "screenshot":
                    self.state.screenshots.append(Path(rest[0]))
                elif kind == "video":
                    self.state.videos.append(Path(rest[0]))
                elif kind == "looping":
                    self.state.display = bool(rest[0])
                    if self.crashed_at is not None:
                        self.stats.restart_seconds += time.monotonic() - self.crashed_at
                        self.crashed_at = None
                elif kind in ("done", "error"):
                    final = (kind, rest[0])
        except (EOFError, OSError):
            pass
        return final

    def _crashed(self, exitcode: int | None, start: int, state: int) -> int | None:
        """Count the crash of the engine process (which had reached ``state``); the frame to
        resume at, or None when the run was finishing anyway. Raises when the engine keeps
        crashing."""
        ints = self.stats.ints
        if state == FINISHING:
            log.warning("%s; the run is complete", crash_line(exitcode, None, finishing=True))
            return None
        frame = None
        if state == LOOPING:
            current, done = ints[I_CURRENT], ints[I_DONE]
            frame = current if current > done else done + 1  # else it died reading the next one
        now = time.monotonic()
        crashes = self.state.crashes
        crashes.append(now)
        while crashes and now - crashes[0] > self.opts.restart_window:
            crashes.popleft()
        line = crash_line(exitcode, frame)
        if len(crashes) > self.opts.max_restarts:
            raise FacefleetError(
                f"{line}; it crashed {len(crashes)} times within {self.opts.restart_window:g} s "
                f"(more than edge.max_restarts = {self.opts.max_restarts}): giving up"
            )
        log.warning("%s; restarting", line)
        self.crashed_at = now
        self.stats.engine_restarts += 1
        if frame is None:
            return start
        self.stats.crashed_frames.append(frame)
        ints[I_CRASHES] += 1
        return frame + 1

    def _repair_videos(self) -> None:
        """Repair the videos a dead engine process left open (``recording.repair_left``), in
        a thread (it reads and writes whole files) while the next process starts."""
        folder = self.opts.output_dir
        if not folder.is_dir():
            return

        def work() -> None:
            with self.repair_lock:
                repaired = repair_left(folder)
            for video, kept in repaired:
                if kept == 0:
                    with suppress(ValueError):
                        self.state.videos.remove(video)

        thread = threading.Thread(target=work, name="facefleet-video-repair", daemon=True)
        thread.start()
        self.repairs.append(thread)

    def _stop(self) -> None:
        """Ask the engine process to finish (it closes its outputs), within STOP_GRACE."""
        self.stopping = True
        if self.kill_at is None:
            self.kill_at = time.monotonic() + STOP_GRACE
        if self.proc is not None and self.proc.is_alive():
            with suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)

    def _install_signals(self) -> Callable[[], None]:
        """SIGTERM stops the run cleanly, SIGUSR1 asks the engine process for a screenshot."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def forward_usr1(*_) -> None:
            if self.proc is not None and self.proc.is_alive():
                with suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGUSR1)

        handlers: dict[int, Any] = {signal.SIGTERM: lambda *_: self._stop()}
        if hasattr(signal, "SIGUSR1"):
            handlers[signal.SIGUSR1] = forward_usr1
        previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def _summary(self) -> RunSummary:
        s, t = self.stats, self.stats.totals
        summary = RunSummary(
            frames=s.frames,
            face_frames=s.face_frames,
            name_frames=dict(s.name_frames),
            events=t["events"],
            unknown_saved=t["unknown"],
            named_saved=t["named"],
            model_versions=self.state.versions,
            reloads=t["reloads"],
            refused=t["refused"],
            video=self.state.videos[-1] if self.state.videos else None,
            videos=self.state.videos,
            screenshots=self.state.screenshots,
            stats=s.summary(),
            display=self.state.display,
            engine_restarts=s.engine_restarts,
            crashed_frames=list(s.crashed_frames),
        )
        return summary

    def close(self) -> None:
        self.stats.close(unlink=True)


def supervise(opts: RecognizeOptions) -> RunSummary:
    """``recognize`` with the loop in an engine process restarted after a crash."""
    sup = Supervisor(opts)
    try:
        return sup.run()
    finally:
        sup.close()
