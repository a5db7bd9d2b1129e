"""The supervised ``recognize``: a frame that really kills the face engine's process (the
``FACEFLEET_FAULT_INJECT`` hook aborts or SIGKILLs it) costs that frame only; an engine that
keeps crashing ends the run with a clear error; signals to the parent stop the child."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from testkit import alive, descendants, wait_for

from facefleet.cli.main import main
from facefleet.edge.events import end_torn_line, read_events
from facefleet.edge.recognize import RecognizeOptions, make_engine, recognize
from facefleet.edge.supervisor import crash_line, engine_fault
from facefleet.vision.batch import FAULT_ENV

REPO = Path(__file__).resolve().parents[2]


def _strict_events(path: Path) -> list[dict]:
    """Every line of an events.jsonl parses (no torn line)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_cli_a_frame_that_aborts_the_engine_costs_that_frame_only(
    edge_ws, hamilton, tmp_path, monkeypatch, capsys, caplog
):
    ws, _ = edge_ws
    out = tmp_path / "out"
    monkeypatch.setenv(FAULT_ENV, "abort:frame:17")  # the engine's process calls os.abort()
    args = ["-w", str(ws.root), "recognize", str(hamilton), "--no-display", "--max-frames", "40"]
    args += ["--output-dir", str(out), "--benchmark", "--json", str(tmp_path / "b.json")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "the face engine crashed on frame 17 (signal 6); restarting" in caplog.text
    assert "engine restarts: 1 (frames that crashed it: 17)" in printed
    assert "engine restarts 1 (crashed on frame 17;" in printed  # the benchmark table
    bench = json.loads((tmp_path / "b.json").read_text())
    assert bench["frames"] == 39  # every frame read but the one that crashed
    assert bench["engine_restarts"] == 1 and bench["crashed_frames"] == [17]
    assert bench["stages"]["decode"]["count"] == 40
    events = _strict_events(out / "events.jsonl")
    assert events == read_events(out / "events.jsonl")
    frames = [e["frame"] for e in events]
    assert 17 not in frames and any(f > 17 for f in frames)  # the run went on after it
    assert len({e["run"] for e in events}) == 1
    ids = [e["track_id"] for e in events]
    before = {e["track_id"] for e in events if e["frame"] < 17}
    after = {e["track_id"] for e in events if e["frame"] > 17}
    assert not before & after and ids == sorted(ids)  # a new engine never reuses a track id
    rows = (out / "facelist.csv").read_text().splitlines()
    assert len(rows) == len(events) + 1


def test_library_a_photo_that_kills_the_engine_costs_that_photo_only(
    edge_ws, shared_data, tmp_path, monkeypatch
):
    """A folder (seekable) resumes at the photo after the one that crashed: every other
    photo gives the same events as a run without the crash."""
    ws, first = edge_ws
    photos = shared_data / "faces" / "examples" / "knn_examples" / "test"
    n = len([p for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")])

    def opts(out: Path) -> RecognizeOptions:
        return RecognizeOptions(
            source=str(photos),
            model=ws.models_dir / first.model,
            public_key=ws.keys_dir / "signing_key.pub.pem",
            output_dir=out,
            unknown_dir=out / "unknown",
            display=False,
            cache_dir=ws.cache_dir,
        )

    plain = opts(tmp_path / "plain")
    baseline = recognize(plain, engine=make_engine(plain))  # in process
    monkeypatch.setenv(FAULT_ENV, "kill:frame:1")  # SIGKILL, as the OOM killer would
    summary = recognize(opts(tmp_path / "crash"))
    assert summary.frames == n - 1 and baseline.frames == n
    assert summary.engine_restarts == 1 and summary.crashed_frames == [1]
    assert summary.stats["crashed_frames"] == [1]

    def seen(folder: Path) -> set[tuple[int, str | None]]:
        return {(e["frame"], e["name"]) for e in _strict_events(folder / "events.jsonl")}

    expected = {(f, name) for f, name in seen(tmp_path / "plain") if f != 1}
    assert len({f for f, _ in expected}) >= 3
    assert seen(tmp_path / "crash") == expected
    assert summary.events == len(_strict_events(tmp_path / "crash" / "events.jsonl"))
    named = {k: v for k, v in baseline.name_frames.items() if k is not None}
    assert sum(summary.name_frames.values()) < sum(baseline.name_frames.values())
    assert set(summary.name_frames) <= set(baseline.name_frames) and named


def test_an_engine_that_keeps_crashing_gives_up_with_a_clear_error(
    edge_ws, hamilton, tmp_path, monkeypatch, capsys
):
    from facefleet.workspace import Workspace

    ws, first = edge_ws
    device = Workspace.init(tmp_path / "device", config={"edge": {"max_restarts": 1}})
    shutil.copytree(ws.cache_dir, device.cache_dir, dirs_exist_ok=True)  # converted ONNX models
    monkeypatch.setenv(FAULT_ENV, "abort:frame:*")  # every frame crashes it
    args = ["-w", str(device.root), "recognize", str(hamilton), "--no-display"]
    args += ["--model", str(ws.models_dir / first.model)]
    args += ["--public-key", str(ws.keys_dir / "signing_key.pub.pem"), "--output-dir", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("facefleet: error:")]
    assert errors == [
        "facefleet: error: the face engine crashed on frame 1 (signal 6); it crashed 2 times "
        "within 60 s (more than edge.max_restarts = 1): giving up"
    ]
    assert "Traceback" not in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_signal_to_recognize_ends_its_engine_process(edge_ws, pbs, tmp_path, sig):
    """SIGTERM stops the run cleanly (exit 0, outputs closed); after SIGKILL the engine
    process dies with its parent."""
    ws, _ = edge_ws
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "FACEFLEET_NO_PROGRESS": "1"}
    env.pop(FAULT_ENV, None)
    cmd = [sys.executable, "-m", "facefleet.cli.main", "-w", str(ws.root), "recognize", str(pbs)]
    cmd += ["--no-display", "--output-dir", str(out), "--no-unknowns", "--no-named-samples"]
    parent = subprocess.Popen(
        cmd, env=env, start_new_session=True, cwd=tmp_path, stdout=subprocess.PIPE, text=True
    )
    workers: set[int] = set()
    try:
        # events.jsonl is opened once the engine process's signal handling is in place
        assert wait_for(lambda: (out / "events.jsonl").exists(), 90), "the run never started"
        workers = descendants(parent.pid)
        assert workers
        parent.send_signal(sig)
        stdout, _ = parent.communicate(timeout=30)
        if sig == signal.SIGTERM:
            assert parent.returncode == 0
            assert " frames, " in stdout
            _strict_events(out / "events.jsonl")
        left = wait_for(lambda: not alive(workers), 15)
        assert left, f"processes still alive 15 s after the parent ended: {alive(workers)}"
    finally:
        parent.kill()
        parent.wait()
        for pid in alive(workers):
            os.kill(pid, signal.SIGKILL)


def test_fault_spec_and_crash_line():
    assert engine_fault(None) is None and engine_fault("") is None
    assert engine_fault("abort:*.jpg") is None  # the batch pool's file spec, not a frame
    assert engine_fault("explode:frame:3") is None
    check = engine_fault("abort:frame:1?")
    check(3)  # not matched: returns
    check(100)
    assert crash_line(-6, 17) == "the face engine crashed on frame 17 (signal 6)"
    assert crash_line(-9, None) == "the face engine crashed while starting (signal 9)"
    assert crash_line(3, 2) == "the face engine crashed on frame 2 (exit status 3)"
    assert crash_line(-11, None, finishing=True) == "the face engine crashed after the last frame (signal 11)"


def test_a_torn_last_line_is_ended_before_appending(tmp_path):
    from facefleet.edge.events import EventLog

    log = tmp_path / "events.jsonl"
    log.write_text('{"frame": 1}\n{"frame": 2, "na')
    assert end_torn_line(log) and not end_torn_line(log)
    assert not end_torn_line(tmp_path / "missing.jsonl")
    (tmp_path / "facelist.csv").write_text("date,event\n2026-01-01,ab")
    EventLog(tmp_path).close()
    assert (tmp_path / "facelist.csv").read_text().endswith("ab\n")
    assert [e["frame"] for e in read_events(log)] == [1]


def test_tracker_ids_go_on_after_a_restart():
    from facefleet.edge.tracker import Tracker

    tracker = Tracker()
    tracker.start_ids_at(41)
    _, new, _ = tracker.update([(0, 0, 50, 50)], 0)
    assert new[0].id == 41 and tracker.next_id == 42


def test_hot_reload_runs_in_the_engine_process(
    edge_ws, second_bundle, device_models, hamilton, tmp_path, monkeypatch
):
    """A new version installed while the engine process runs is loaded there; after a
    crash the next engine process starts on it, and the summary names each version once."""
    import threading

    from facefleet.layout import switch

    ws, first = edge_ws
    shutil.copytree(second_bundle.bundle_dir, device_models / str(second_bundle.version))
    out = tmp_path / "out"
    opts = RecognizeOptions(
        source=str(hamilton),
        model=device_models,
        public_key=ws.keys_dir / "signing_key.pub.pem",
        output_dir=out,
        display=False,
        cache_dir=ws.cache_dir,
        reload_interval=0.0,  # checked at every frame: loaded before frame 200 on any machine
    )
    got: dict = {}
    monkeypatch.setenv(FAULT_ENV, "abort:frame:200")
    runner = threading.Thread(target=lambda: got.setdefault("summary", recognize(opts)))
    runner.start()
    assert wait_for(lambda: (out / "events.jsonl").exists() or not runner.is_alive(), 90)
    switch(device_models, str(second_bundle.version))
    runner.join(120)
    summary = got["summary"]
    assert summary.model_versions == [first.version, second_bundle.version]
    assert summary.reloads == 1 and summary.crashed_frames == [200]
    assert summary.frames == 274
    late = [e for e in _strict_events(out / "events.jsonl") if e["frame"] > 200]
    assert late and {e["model_version"] for e in late} == {second_bundle.version}


def test_shared_stats_add_up_over_engine_processes():
    """Two engine processes' counters, names and stage timings in one summary; labels are
    announced before their slot is written, so a process that dies loses none."""
    from facefleet.edge.supervisor import I_EVENTS, I_STATE, LOOPING, SharedStats

    parent = SharedStats.create()
    try:
        for run in range(2):
            sent: list[tuple] = []
            child = SharedStats.attach(parent.shm.name, parent.labels(), sent.append)
            child.ints[I_STATE] = LOOPING
            for i in range(10):
                child.add("decode", 0.001 * (i + 1))
                child.count_names({"ann", None} if i % 2 else {"bob"})
                child.frames += 1
            child.add("detect" if run else "embed", 0.01)
            child.ints[I_EVENTS] = 3
            child.dropped = 2
            child.stop()
            child.close()
            for _, kind, slot, label in sent:  # what the parent reads off the pipe
                (parent.stage_slots if kind == "stage" else parent.name_slots)[label] = slot
            parent.fold()
        summary = parent.summary()
        assert summary["frames"] == parent.consumed == 20
        assert dict(parent.name_frames) == {"bob": 10, "ann": 10, None: 10}
        assert summary["stages"]["decode"]["count"] == 20
        assert summary["stages"]["decode"]["max_ms"] == 10.0
        assert summary["stages"]["embed"]["count"] == summary["stages"]["detect"]["count"] == 1
        assert parent.totals["events"] == 6 and summary["dropped_frames"] == 4
    finally:
        parent.close(unlink=True)


def test_a_live_stream_is_reopened_after_a_crash(edge_ws, camera_paced_clip, tmp_path, monkeypatch):
    """A stream cannot resume at a frame: the new engine process reopens it, and frame
    numbers go on after the one that crashed."""
    ws, first = edge_ws
    url, _ = camera_paced_clip
    out = tmp_path / "out"
    monkeypatch.setenv(FAULT_ENV, "abort:frame:15")  # paced: the engine sees every frame
    summary = recognize(
        RecognizeOptions(
            source=url,
            model=ws.models_dir / first.model,
            public_key=ws.keys_dir / "signing_key.pub.pem",
            output_dir=out,
            display=False,
            cache_dir=ws.cache_dir,
            max_frames=40,
        )
    )
    assert summary.frames == 39 and summary.crashed_frames == [15] and summary.engine_restarts == 1
    events = _strict_events(out / "events.jsonl")
    assert any(e["frame"] > 15 for e in events) and all(e["frame"] != 15 for e in events)
