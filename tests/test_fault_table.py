"""The fault and bad-input table: every command that reads user files, fed every awkward
input we know of. Each run must give a clear one-line message, the documented exit status,
a store whose counts are unchanged (or grew by exactly the accepted photo) and consistent,
and no traceback.

Exit statuses (README "Exit status"): ``enroll`` 0 when a photo was accepted, 1 when none
was; ``identify`` 0 when an input was read, 1 when none was; ``collect`` 0 when it ran
through (skipped files listed); 2 for a usage or input error the command cannot start with
(bad config, bad bundle, nothing to read).

Set ``FACEFLEET_FAULT_TABLE=docs/fault-table.md`` to write the table from a run of this module.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from testkit import consistent, store_counts

from facefleet.cli.main import main

REPO = Path(__file__).resolve().parents[1]
ROWS: list[dict] = []  # the table, filled as the tests run
# rows of a deliberate crash (test hook FACEFLEET_FAULT_INJECT), not counted as crashes
DELIBERATE = {"abort": "good photo, worker aborts on it", "kill": "good photo, worker is killed on it"}


# -- inputs -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bad:
    name: str  # the table's "input" column
    make: Callable[[Path, Path], Path]  # (folder, examples) -> the file to feed
    expect: str  # "accepted", or a phrase the rejection must contain


def _copy(src: str, dest: str):
    def make(d: Path, ex: Path) -> Path:
        shutil.copyfile(ex / src, d / dest)
        return d / dest

    return make


def _write(dest: str, data: bytes):
    def make(d: Path, ex: Path) -> Path:
        (d / dest).write_bytes(data)
        return d / dest

    return make


def _cut(src: str, dest: str):
    def make(d: Path, ex: Path) -> Path:
        data = (ex / src).read_bytes()
        (d / dest).write_bytes(data[: len(data) // 2])
        return d / dest

    return make


def _pil(dest: str, build: Callable[[Path], Image.Image], **save):
    def make(d: Path, ex: Path) -> Path:
        build(ex).save(d / dest, **save)
        return d / dest

    return make


def _face(ex: Path, name: str = "obama_small.jpg") -> Image.Image:
    return Image.open(ex / name).convert("RGB")


def _sixteen_bit(ex: Path) -> Image.Image:
    grey = np.asarray(_face(ex, "obama-240p.jpg").convert("L"), dtype=np.uint16) * 257
    return Image.fromarray(grey)


def _exif_rotated(d: Path, ex: Path) -> Path:
    # pixels stored lying on their side, EXIF orientation 8 says "rotate to display": HOG
    # finds no sideways face, so a face found proves the rotation was applied
    exif = Image.Exif()
    exif[0x0112] = 8
    _face(ex, "obama-480p.jpg").rotate(-90, expand=True).save(d / "exif-rotated.jpg", exif=exif)
    return d / "exif-rotated.jpg"


def _animated(d: Path, ex: Path) -> Path:
    first = _face(ex, "obama.jpg")
    second = Image.new("RGB", first.size, (0, 0, 0))
    first.save(d / "animated.gif", save_all=True, append_images=[second], duration=100, loop=0)
    return d / "animated.gif"


def _huge_header(d: Path, ex: Path) -> Path:
    Image.new("1", (20000, 20000)).save(d / "huge-header.png")  # 400 Mpixel, ~50 KB on disk
    return d / "huge-header.png"


def _symlink_loop(d: Path, ex: Path) -> Path:
    (d / "loop-b.jpg").symlink_to(d / "loop-a.jpg")
    (d / "loop-a.jpg").symlink_to(d / "loop-b.jpg")
    return d / "loop-a.jpg"


def _directory(d: Path, ex: Path) -> Path:
    (d / "folder.jpg").mkdir()
    return d / "folder.jpg"


def _fifo(d: Path, ex: Path) -> Path:
    os.mkfifo(d / "fifo.jpg")
    return d / "fifo.jpg"


def _dev_zero(d: Path, ex: Path) -> Path:
    (d / "zero.jpg").symlink_to("/dev/zero")
    return d / "zero.jpg"


INPUTS = [
    Bad("empty file", _write("empty.jpg", b""), "empty file"),
    Bad("truncated JPEG", _cut("obama.jpg", "cut.jpg"), "truncated"),
    Bad("truncated PNG", _cut("lin-manuel-miranda.png", "cut.png"), "truncated"),
    Bad("text named .jpg", _write("notes.jpg", b"this is not an image\n"), "not an image"),
    Bad("1x1 image", _pil("one.png", lambda ex: Image.new("RGB", (1, 1))), "image too small"),
    Bad("8x8 image", _pil("eight.png", lambda ex: Image.new("RGB", (8, 8))), "image too small"),
    Bad("2x300 strip", _pil("strip.png", lambda ex: Image.new("RGB", (300, 2))), "image too small"),
    Bad("20000x20000 header", _huge_header, "image too large"),
    Bad("16-bit greyscale PNG", _pil("deep.png", _sixteen_bit), "accepted"),
    Bad("CMYK JPEG", _pil("cmyk.jpg", lambda ex: _face(ex, "obama2.jpg").convert("CMYK")), "accepted"),
    Bad("RGBA PNG", _pil("rgba.png", lambda ex: _face(ex, "obama3.jpg").convert("RGBA")), "accepted"),
    Bad("greyscale JPEG", _pil("grey.jpg", lambda ex: _face(ex, "obama-720p.jpg").convert("L")), "accepted"),
    Bad("EXIF-rotated JPEG", _exif_rotated, "accepted"),
    Bad("animated GIF", _animated, "accepted"),
    Bad("symlink loop", _symlink_loop, "too many levels of symbolic links"),
    Bad("a directory", _directory, "a folder, not a regular file"),
    Bad("a FIFO", _fifo, "a FIFO, not a regular file"),
    Bad("/dev/zero", _dev_zero, "a character device, not a regular file"),
    Bad("missing file", lambda d, ex: d / "missing.jpg", "no such file"),
    Bad("name with spaces", _copy("obama-1080p.jpg", "with some spaces.jpg"), "accepted"),
    Bad("name with a newline", _copy("obama_partial_face.jpg", "new\nline.jpg"), "accepted"),
    Bad("unicode name", _copy("biden.jpg", "bïdèn 拜登.jpg"), "accepted"),
]

# identify expands folders: a folder of no images is "nothing to identify" (exit 2)
IDENTIFY_OVERRIDES = {"a directory": ("no images to identify", 2)}


# -- running commands -------------------------------------------------------------------------
def run_cli(*argv: str) -> tuple[int, str, str]:
    """``facefleet ARGV`` in this process; an uncaught exception fails the test (a traceback)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as exc:
            rc = int(exc.code or 0)
    return rc, out.getvalue(), err.getvalue()


def one_line_error(err: str) -> bool:
    lines = [ln for ln in err.splitlines() if ln.startswith("facefleet: error:")]
    return len(lines) == 1 and "Traceback" not in err


def record(input_: str, command: str, outcome: str, rc: int) -> None:
    """One row of the table (this run's temporary folders and names left out)."""
    outcome = re.sub(r"(?:/[^/\s:'\"]+)+/", "", " ".join(outcome.split()))
    outcome = re.sub(r"\.incoming-[\w-]+", ".incoming-*", outcome)  # a random staging folder name
    ROWS.append({"input": input_, "command": command, "outcome": outcome, "exit": rc})


@pytest.fixture(scope="module")
def examples(faces_dir) -> Path:
    return faces_dir / "examples"


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory, examples) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    return {bad.name: bad.make(folder, examples) for bad in INPUTS}


@pytest.fixture(scope="module")
def table_ws(tmp_path_factory, examples):
    """A workspace with one person enrolled (identify needs someone to compare with)."""
    from facefleet.enrol import enroll
    from facefleet.workspace import Workspace

    ws = Workspace.init(tmp_path_factory.mktemp("table") / "ws")
    report = enroll(ws, [("seed person", examples / "obama-240p.jpg")])
    assert len(report.accepted) == 1
    yield ws
    target = os.environ.get("FACEFLEET_FAULT_TABLE")
    if target:
        write_table(REPO / target)


# -- the table: bad files x commands ----------------------------------------------------------
@pytest.mark.parametrize("bad", INPUTS, ids=[b.name for b in INPUTS])
def test_enroll_one_bad_file(table_ws, bad_dir, bad):
    path = bad_dir[bad.name]
    before = store_counts(table_ws)
    rc, out, err = run_cli("-w", table_ws.root, "enroll", "--json", "probe", path)
    assert "Traceback" not in err
    (photo,) = json.loads(out)["photos"]
    after = store_counts(table_ws)
    record(bad.name, "enroll NAME FILE", "accepted" if photo["accepted"] else photo["reason"], rc)
    assert consistent(after), after
    if bad.expect == "accepted":
        assert photo["accepted"], photo["reason"]
        assert rc == 0
        assert after["faces"] == before["faces"] + (0 if photo["cached"] else 1)
    else:
        assert not photo["accepted"] and bad.expect in photo["reason"], photo["reason"]
        assert "\n" not in photo["reason"]
        assert rc == 1
        assert after == before


@pytest.mark.parametrize("bad", INPUTS, ids=[b.name for b in INPUTS])
def test_identify_one_bad_file(table_ws, bad_dir, bad):
    path = bad_dir[bad.name]
    before = store_counts(table_ws)
    rc, out, err = run_cli("-w", table_ws.root, "identify", "--json", path)
    assert "Traceback" not in err
    assert store_counts(table_ws) == before
    if bad.name in IDENTIFY_OVERRIDES:
        phrase, status = IDENTIFY_OVERRIDES[bad.name]
        line = next((ln for ln in err.splitlines() if ln.startswith("facefleet: error:")), err.strip())
        record(bad.name, "identify FILE", line.removeprefix("facefleet: error: "), rc)
        assert rc == status and phrase in err and one_line_error(err)
        return
    (result,) = json.loads(out)
    faces = len(result["faces"])
    record(bad.name, "identify FILE", result["error"] or f"{faces} face(s) found", rc)
    if bad.expect == "accepted":
        assert result["error"] is None and faces >= 1, result
        assert rc == 0
    else:
        assert bad.expect in result["error"] and "\n" not in result["error"], result
        assert rc == 1


def test_unreadable_file_without_root_privileges(table_ws, tmp_path, examples):
    """Tests run as root, which reads a mode-000 file: the CLI runs here without the
    capabilities that let root bypass file permissions (setpriv), like any other user."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) not installed: cannot drop root's read-anything capability")
    secret = tmp_path / "unreadable.jpg"
    shutil.copyfile(examples / "obama2.jpg", secret)
    secret.chmod(0)
    drop = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps=-all"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "FACEFLEET_NO_PROGRESS": "1"}
    before = store_counts(table_ws)
    for command, args in [
        ("enroll NAME FILE", ["enroll", "--json", "probe"]),
        ("identify FILE", ["identify", "--json"]),
    ]:
        proc = subprocess.run(
            [*drop, sys.executable, "-m", "facefleet.cli.main", "-w", str(table_ws.root), *args, str(secret)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        data = json.loads(proc.stdout)
        message = data["photos"][0]["reason"] if "photos" in data else data[0]["error"]
        record("unreadable (mode 000, no root privileges)", command, message, proc.returncode)
        assert "permission denied" in message and proc.returncode == 1, message
    assert store_counts(table_ws) == before


BAD_NAMES = {
    "name with '/'": "a/b",
    "name '..'": "..",
    "name '.'": ".",
    "empty name": "",
    "blank name": "   ",
    "name with a newline": "first\nsecond",
    "name with a tab": "first\tsecond",
    "101-character name": "x" * 101,
}


@pytest.mark.parametrize("label", list(BAD_NAMES))
def test_enroll_bad_person_name(table_ws, examples, label):
    before = store_counts(table_ws)
    rc, out, err = run_cli("-w", table_ws.root, "enroll", "--json", BAD_NAMES[label], examples / "obama3.jpg")
    (photo,) = json.loads(out)["photos"]
    record(f"person {label}", "enroll NAME FILE", photo["reason"], rc)
    assert not photo["accepted"] and "invalid person name" in photo["reason"] and "Traceback" not in err
    assert "1-100 characters" in photo["reason"]  # the rule is said
    assert rc == 1 and store_counts(table_ws) == before


@pytest.mark.parametrize("label", ["name '..'", "name with '/'", "name with a newline", "empty name"])
def test_rename_to_bad_person_name(table_ws, label):
    rc, _, err = run_cli("-w", table_ws.root, "people", "rename", "seed person", BAD_NAMES[label])
    record(f"person {label}", "people rename", err.strip().removeprefix("facefleet: error: "), rc)
    assert rc == 2 and one_line_error(err) and "invalid person name" in err


@pytest.mark.parametrize("into", ["seed person", "nobody enrolled"])
def test_merge_into_itself_or_nobody(table_ws, into):
    before = store_counts(table_ws)
    rc, _, err = run_cli("-w", table_ws.root, "people", "merge", "seed person", into)
    what = "a person into itself" if into == "seed person" else "into a name nobody has"
    record(f"merge {what}", "people merge", err.strip().removeprefix("facefleet: error: "), rc)
    assert rc == 2 and one_line_error(err) and store_counts(table_ws) == before
    assert ("same person" if into == "seed person" else "no person 'nobody enrolled'") in err


@pytest.mark.parametrize("other", ["seed person", "nobody enrolled"])
def test_accept_a_look_alike_of_oneself_or_nobody(table_ws, other):
    before = store_counts(table_ws)
    rc, _, err = run_cli("-w", table_ws.root, "people", "accept-alike", "seed person", other)
    what = "with oneself" if other == "seed person" else "with a name nobody has"
    record(
        f"accept a look-alike pair {what}",
        "people accept-alike",
        err.strip().removeprefix("facefleet: error: "),
        rc,
    )
    assert rc == 2 and one_line_error(err) and store_counts(table_ws) == before
    assert ("same person" if other == "seed person" else "no person 'nobody enrolled'") in err


@pytest.mark.parametrize("ref", ["nobody merged", "99"])
def test_unmerge_what_was_never_merged(table_ws, ref):
    before = store_counts(table_ws)
    rc, _, err = run_cli("-w", table_ws.root, "people", "unmerge", ref)
    what = "a name never merged" if ref == "nobody merged" else "a merge number that does not exist"
    record(f"undo the merge of {what}", "people unmerge", err.strip().removeprefix("facefleet: error: "), rc)
    assert rc == 2 and one_line_error(err) and store_counts(table_ws) == before
    assert f"no merge {ref!r} to undo" in err


def test_one_batch_of_every_bad_file(table_ws, bad_dir, examples, tmp_path):
    """All the files in one ``enroll --folder`` over the worker pool, with one worker made to
    really crash (SIGABRT) on a good photo: every file gets its outcome, nothing else is lost."""
    person = tmp_path / "batch" / "probe"  # the same person: photos enrolled above come back cached
    person.mkdir(parents=True)
    for bad in INPUTS:
        src = bad_dir[bad.name]
        if os.path.lexists(src):
            (person / src.name).symlink_to(src)
    shutil.copyfile(examples / "obama_small.jpg", person / "crash-here.jpg")
    # photos new to the store, so the pool has work beside the crash (known files are cached)
    _face(examples, "obama_small.jpg").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(person / "fresh-1.jpg")
    _face(examples, "obama-480p.jpg").reduce(2).save(person / "fresh-2.jpg")
    planned = sorted(p.name for p in person.iterdir() if p.is_file())  # what --folder picks up
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "FACEFLEET_NO_PROGRESS": "1",
        "FACEFLEET_FAULT_INJECT": "abort:crash-here.jpg",
    }
    before = store_counts(table_ws)
    proc = subprocess.run(
        [sys.executable, "-m", "facefleet.cli.main", "-w", str(table_ws.root), "enroll", "--json"]
        + ["--workers", "2", "--folder", str(tmp_path / "batch")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    photos = {Path(p["path"]).name: p for p in json.loads(proc.stdout)["photos"]}
    lost = len(set(planned) - set(photos))
    crashed = sum("crashed the face engine" in (p["reason"] or "") for p in photos.values())
    for name in planned:
        bad = next((b for b in INPUTS if bad_dir[b.name].name == name), None)
        label = bad.name if bad else (DELIBERATE["abort"] if "crash" in name else "good photo")
        p = photos.get(name)
        outcome = "LOST" if p is None else ("accepted" if p["accepted"] else p["reason"])
        record(label, "enroll --folder (2 workers, one batch)", outcome, proc.returncode)
    assert lost == 0 and proc.returncode == 0
    assert photos["crash-here.jpg"]["reason"] == "crashed the face engine (signal 6)" and crashed == 1
    assert photos["fresh-1.jpg"]["accepted"] and photos["fresh-2.jpg"]["accepted"]
    for bad in INPUTS:
        p = photos.get(bad_dir[bad.name].name)
        if p is not None:
            assert p["accepted"] == (bad.expect == "accepted"), (bad.name, p)
    after = store_counts(table_ws)
    assert consistent(after) and after["faces"] >= before["faces"]


COLLECT_FILES = ("biden.jpg", "obama.jpg", "obama2.jpg", "obama3.jpg", "alex-lacamoire.png")


@pytest.mark.parametrize("kind, signum", [("abort", 6), ("kill", 9)])
def test_collect_batch_with_a_crashing_file(examples, tmp_path, kind, signum):
    """``facefleet collect FOLDER`` (a folder of crops, 2 workers) with the worker holding one
    file really dying on it (SIGABRT, or SIGKILL as the OOM killer would): that file is
    skipped as crashed, every other face is collected and written; a re-run adds nothing
    twice, and one without the fault collects the file that crashed."""
    from facefleet.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws", config={"vision": {"embedder": "dlib", "workers": 2}})
    crops = tmp_path / "crops"
    crops.mkdir()
    for name in COLLECT_FILES:
        shutil.copyfile(examples / name, crops / name)
    _face(examples, "obama_small.jpg").save(crops / "crash-here.jpg", quality=90)
    env = {**os.environ, "PYTHONPATH": str(REPO), "FACEFLEET_NO_PROGRESS": "1"}

    def collect(fault: bool) -> subprocess.CompletedProcess:
        run_env = {**env, "FACEFLEET_FAULT_INJECT": f"{kind}:crash-here.jpg"} if fault else env
        return subprocess.run(
            [sys.executable, "-m", "facefleet.cli.main", "-w", str(ws.root), "collect", str(crops)],
            capture_output=True,
            text=True,
            env=run_env,
            timeout=120,
        )

    proc = collect(fault=True)
    assert "Traceback" not in proc.stderr, proc.stderr
    crashed = f"skipped {crops / 'crash-here.jpg'}: crashed the face engine (signal {signum})"
    head = proc.stdout.splitlines()[0]
    added = int(head.split()[0])
    record(
        DELIBERATE[kind], "collect FOLDER (2 workers, one batch)", crashed.split(": ", 1)[1], proc.returncode
    )
    record(
        f"{len(COLLECT_FILES)} good photos beside it",
        "collect FOLDER (2 workers, one batch)",
        f"{added} of {len(COLLECT_FILES)} collected",
        proc.returncode,
    )
    assert proc.returncode == 0, proc.stderr
    assert head == f"{len(COLLECT_FILES)} candidate faces added, 0 already in the store, 1 skipped", (
        proc.stdout
    )
    assert f"  {crashed}" in proc.stdout.splitlines()
    counts = store_counts(ws)
    assert consistent(counts) and counts["faces"] == counts["images"] == len(COLLECT_FILES), counts

    again = collect(fault=True)  # the same crash again: nothing new, nothing twice
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    assert (
        again.stdout.splitlines()[0]
        == f"0 candidate faces added, {len(COLLECT_FILES)} already in the store, 1 skipped"
    )
    assert store_counts(ws) == counts

    fixed = collect(fault=False)  # the file that crashed is collected once the engine takes it
    assert fixed.returncode == 0 and "Traceback" not in fixed.stderr, fixed.stderr
    assert (
        fixed.stdout.splitlines()[0]
        == f"1 candidate faces added, {len(COLLECT_FILES)} already in the store, 0 skipped"
    )
    after = store_counts(ws)
    assert consistent(after) and after["faces"] == after["images"] == len(COLLECT_FILES) + 1, after
    with ws.open_store() as store:
        assert {f.status for f in store.faces()} == {"candidate"}


# -- recognize: a frame that kills the face engine ---------------------------------------------
RECOGNIZE_FRAMES = 30


def _recognize_with_fault(
    base_ws, shared_data, tmp_path, monkeypatch, spec: str, frames: int = RECOGNIZE_FRAMES, *extra: str
) -> tuple[int, str, str]:
    """``facefleet recognize`` on ``frames`` frames of the hamilton clip on a fresh device
    workspace (``edge.max_restarts: 2``), the engine's process dying as ``spec`` says."""
    from facefleet.vision.batch import FAULT_ENV
    from facefleet.workspace import Workspace

    ws, first = base_ws
    device = Workspace.init(tmp_path / "device", config={"edge": {"max_restarts": 2}})
    shutil.copytree(ws.cache_dir, device.cache_dir, dirs_exist_ok=True)  # converted ONNX models
    monkeypatch.setenv(FAULT_ENV, spec)
    rc, out, err = run_cli(
        "-w", device.root, "recognize", shared_data / "video" / "short_hamilton_clip.mp4",
        "--no-display", "--max-frames", frames,
        "--model", first.bundle_dir, "--public-key", ws.keys_dir / "signing_key.pub.pem",
        "--output-dir", tmp_path / "out", "--benchmark", "--json", tmp_path / "bench.json", *extra,
    )  # fmt: skip
    assert "Traceback" not in err, err
    return rc, out, err


@pytest.mark.parametrize("spec, signum", [("abort:frame:10", 6), ("kill:frame:10", 9)])
def test_recognize_with_a_frame_that_kills_the_engine(
    base_ws, shared_data, tmp_path, monkeypatch, spec, signum
):
    """``facefleet recognize CLIP`` whose engine process really dies on frame 10 (SIGABRT, or
    SIGKILL as the OOM killer sends): that frame only is lost and the run goes on."""
    rc, out, err = _recognize_with_fault(base_ws, shared_data, tmp_path, monkeypatch, spec)
    assert rc == 0, err
    figures = json.loads((tmp_path / "bench.json").read_text())
    assert figures["engine_restarts"] == 1 and figures["crashed_frames"] == [10], figures
    assert figures["frames"] == RECOGNIZE_FRAMES - 1  # every frame but the one that crashed
    assert "engine restarts: 1 (frames that crashed it: 10)" in out
    events = (tmp_path / "out" / "events.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in events)  # no torn line
    outcome = (
        f"engine restarted after frame 10 (signal {signum}); "
        f"{figures['frames']} of {RECOGNIZE_FRAMES} frames recognised, {len(events)} events written"
    )
    kind = "aborts" if spec.startswith("abort") else "is killed"
    record(f"video frame 10, engine {kind} on it", "recognize CLIP", outcome, rc)


def test_recognize_keeps_the_video_the_engine_was_saving(base_ws, shared_data, tmp_path, monkeypatch):
    """``recognize --save`` whose engine is killed on frame 150: the MP4 it was writing (no
    index, unplayable as left) is repaired with the frames it had flushed, and the next engine
    process saves the rest in a second file."""
    import cv2

    spec = "kill:frame:150"
    rc, _, err = _recognize_with_fault(base_ws, shared_data, tmp_path, monkeypatch, spec, 200, "--save")
    assert rc == 0, err
    out = tmp_path / "out"
    videos = sorted(out.glob("output_*.mp4"))
    assert len(videos) == 2, videos
    counts = []
    for path in videos:
        cap = cv2.VideoCapture(str(path))
        assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (640, 360)
        n = 0
        while cap.read()[0]:
            n += 1
        counts.append(n)
    # the first file: what was flushed before the kill (the writer buffers a few frames)
    assert 100 <= counts[0] < 150 and counts[1] == 49, counts  # frames 151-199
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no marker, no staging folder
    outcome = (
        f"the video being written repaired: {counts[0]} of the 150 frames before the kill kept "
        f"(the rest not yet flushed); frames 151-199 in a second video ({counts[1]} frames)"
    )
    record("video frame 150 while saving, engine is killed on it", "recognize CLIP --save", outcome, rc)


def test_recognize_gives_up_when_the_engine_keeps_crashing(base_ws, shared_data, tmp_path, monkeypatch):
    """An engine that dies on every frame ends the run with one clear error (exit 2)."""
    rc, _, err = _recognize_with_fault(base_ws, shared_data, tmp_path, monkeypatch, "abort:frame:*")
    assert rc == 2 and one_line_error(err), err
    error = err.split("facefleet: error: ", 1)[1].strip()
    assert error == (
        "the face engine crashed on frame 2 (signal 6); it crashed 3 times within 60 s "
        "(more than edge.max_restarts = 2): giving up"
    )
    record("every video frame, engine aborts on it", "recognize CLIP", error, rc)


# -- settings and version YAMLs --------------------------------------------------------------
BAD_WORKSPACE_YAML = {
    "facefleet.yaml: not UTF-8": b"vision:\n  detector: \xff\xfehog\n",
    "facefleet.yaml: not YAML": b"vision: [unclosed\n",
    "facefleet.yaml: a list, not a mapping": b"- vision\n- quality\n",
    "facefleet.yaml: 'vision: hog'": b"vision: hog\n",
    "facefleet.yaml: 'quality.min_face_px: abc'": b"quality:\n  min_face_px: abc\n",
    "facefleet.yaml: 'identify.distance_threshold: x'": b"identify:\n  distance_threshold: x\n",
}


@pytest.mark.parametrize("label", list(BAD_WORKSPACE_YAML))
@pytest.mark.parametrize("command", ["people list", "enroll NAME FILE"])
def test_garbled_workspace_config(table_ws, copy_workspace, examples, label, command):
    ws = copy_workspace(table_ws)
    before = store_counts(ws)
    (ws.root / "facefleet.yaml").write_bytes(BAD_WORKSPACE_YAML[label])
    args = ["people", "list"] if command == "people list" else ["enroll", "probe", examples / "obama.jpg"]
    rc, _, err = run_cli("-w", ws.root, *args)
    record(label, command, err.strip().removeprefix("facefleet: error: "), rc)
    assert rc == 2 and one_line_error(err) and "facefleet.yaml" in err, err
    assert store_counts(ws) == before


BAD_TRAIN_CONFIG = {
    "train --config: not UTF-8": b"outputs:\n  name: \xff\xfe\n",
    "train --config: not YAML": b"parameters: {C: [1,\n",
    "train --config: a list, not a mapping": b"- C\n- gamma\n",
    "train --config: 'C: [1, oops]'": b"parameters:\n  C: [1, oops]\n",
    "train --config: 'gamma: [.nan]'": b"parameters:\n  gamma: [.nan]\n",
    "train --config: 'n_jobs: 100000'": b"parameters:\n  n_jobs: 100000\n",
    "train --config: 'model_name: ..'": b"outputs:\n  model_name: '..'\n",
}


@pytest.mark.parametrize("label", list(BAD_TRAIN_CONFIG))
def test_bad_train_config(table_ws, copy_workspace, tmp_path, label):
    ws = copy_workspace(table_ws)
    config = tmp_path / "version.yaml"
    config.write_bytes(BAD_TRAIN_CONFIG[label])
    rc, _, err = run_cli("-w", ws.root, "train", "--config", config)
    record(label, "train --config FILE", err.strip().removeprefix("facefleet: error: "), rc)
    assert rc == 2 and one_line_error(err), err
    assert not (ws.models_dir / "face_model").exists()  # nothing trained or registered


# -- bundles: every load path refuses a bundle that does not verify --------------------------
def _flip(name: str):
    def change(b: Path, ws) -> None:
        data = bytearray((b / name).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (b / name).write_bytes(bytes(data))

    return change


def _resign(b: Path, key, edit=None) -> None:
    from facefleet.registry.format import manifest_bytes

    manifest = json.loads((b / "manifest.json").read_text())
    if edit:
        edit(manifest)
    data = manifest_bytes(manifest)
    (b / "manifest.json").write_bytes(data)
    (b / "manifest.sig").write_bytes(key.sign(data))


def _raise_threshold(b: Path, ws) -> None:
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["thresholds"]["alice"] = 0.99  # valid JSON, not what was signed
    (b / "manifest.json").write_text(json.dumps(manifest))


def _other_key(b: Path, ws) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    _resign(b, Ed25519PrivateKey.generate())


def _outside_path(b: Path, ws) -> None:
    from facefleet.registry.keys import load_private_key, private_key_path

    (b.parent / "outside.bin").write_bytes(b"outside")
    digest = hashlib.sha256(b"outside").hexdigest()
    _resign(
        b,
        load_private_key(private_key_path(ws.keys_dir)),
        lambda m: m["files"].update({"../outside.bin": digest}),
    )


def _symlinked_model(b: Path, ws) -> None:
    real = b.parent / "model-elsewhere.npz"
    (b / "model.npz").rename(real)
    (b / "model.npz").symlink_to(real)


def _foreign_embedder(b: Path, ws) -> None:
    from facefleet.registry.keys import load_private_key, private_key_path

    key = load_private_key(private_key_path(ws.keys_dir))
    _resign(b, key, lambda m: m.update({"embedder_id": "dlib-resnet-v1:ffffffffffffffff"}))


def _object_array(b: Path, ws) -> None:
    from facefleet.registry.keys import load_private_key, private_key_path

    with np.load(b / "model.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["gallery"] = np.array([[1.0, "x"]], dtype=object)  # needs pickle to load
    np.savez(b / "model.npz", **arrays)
    digest = hashlib.sha256((b / "model.npz").read_bytes()).hexdigest()
    key = load_private_key(private_key_path(ws.keys_dir))
    _resign(b, key, lambda m: m["files"].update({"model.npz": digest}))


BUNDLE_FAULTS = {
    "bundle: model.npz altered": (_flip("model.npz"), "checksum"),
    "bundle: manifest.json altered (a threshold raised)": (_raise_threshold, "signature"),
    "bundle: manifest.json garbled": (_flip("manifest.json"), "manifest"),
    "bundle: manifest.sig altered": (_flip("manifest.sig"), "signature"),
    "bundle: model.npz missing": (lambda b, ws: (b / "model.npz").unlink(), "missing"),
    "bundle: manifest.json missing": (lambda b, ws: (b / "manifest.json").unlink(), "manifest"),
    "bundle: manifest.sig missing": (lambda b, ws: (b / "manifest.sig").unlink(), "manifest.sig"),
    "bundle: a file the manifest does not list": (
        lambda b, ws: (b / "notes.txt").write_text("x"),
        "not listed",
    ),
    "bundle: signed by another key": (_other_key, "signature"),
    "bundle: manifest names a path outside the bundle": (_outside_path, ".."),
    "bundle: model.npz is a symlink": (_symlinked_model, "model.npz"),
    "bundle (signed): made for an embedder this device lacks": (_foreign_embedder, "embedder"),
    "bundle (signed): an object array in model.npz": (_object_array, "model arrays unreadable"),
}


@pytest.mark.parametrize("label", list(BUNDLE_FAULTS))
def test_bad_bundle_is_refused_by_every_load_path(table_ws, tmp_path, label):
    from testkit import signed_bundle

    from facefleet.errors import BundleError
    from facefleet.registry.inference import load_bundle
    from facefleet.registry.install import install
    from facefleet.registry.keys import load_public_key, public_key_path
    from facefleet.vision.embed import dlib_embedder_id

    change, phrase = BUNDLE_FAULTS[label]
    bundle = signed_bundle(table_ws, 7, tmp_path / "bundles" / "7")
    change(bundle, table_ws)
    out = tmp_path / "package"
    rc, _, err = run_cli("-w", table_ws.root, "package", bundle, "--out", out)
    record(label, "package BUNDLE", err.strip().removeprefix("facefleet: error: "), rc)
    assert rc == 2 and one_line_error(err), err
    assert phrase in err, err
    assert not out.exists() and not list(tmp_path.glob(".package.*"))  # nothing half-written
    key = load_public_key(public_key_path(table_ws.keys_dir))
    device = tmp_path / "device-models"
    with pytest.raises(BundleError) as caught:  # the device installer: install.sh, sync, deploy
        install(device, bundle, key)
    record(label, "device install (sync, push, install.sh)", str(caught.value), 2)
    assert not (device / "face_model").exists() or not list((device / "face_model").iterdir())
    with pytest.raises(BundleError) as caught:  # recognize's loader
        load_bundle(bundle, key, expected_embedder_id=dlib_embedder_id())
    record(label, "load_bundle (recognize)", str(caught.value), 2)


# -- the table file ---------------------------------------------------------------------------
def write_table(path: Path) -> None:
    runs = len(ROWS)
    inputs = len({r["input"] for r in ROWS})
    commands = sorted({r["command"] for r in ROWS})
    crashed = sum(r["outcome"].startswith("crashed") for r in ROWS if r["input"] not in DELIBERATE.values())
    lost = sum(r["outcome"] == "LOST" for r in ROWS)
    lines = [
        "# Fault and bad-input table",
        "",
        "Generated by `FACEFLEET_FAULT_TABLE=docs/fault-table.md pytest tests/test_fault_table.py`",
        "(do not edit by hand). Each row is one real run of the command on one input; the test",
        "asserts the message, the exit status, that the store counts are unchanged (or grew by",
        "the accepted photo) and consistent, and that no traceback was printed.",
        "",
        f"- inputs tried: **{inputs}** over {len(commands)} commands ({runs} runs)",
        f"- crashes (process or batch ended by a bad input): **{crashed}**",
        f"- results lost (a file of a batch with no outcome): **{lost}**",
        "- the batch rows `good photo, worker aborts on it` / `worker is killed on it` are",
        "  deliberate crashes (SIGABRT, SIGKILL as the OOM killer sends; test hook",
        "  `FACEFLEET_FAULT_INJECT`): each costs that file only, which is what the rows show;",
        "  the `recognize` rows kill the face engine's process on a video frame: that frame is",
        "  lost, the supervisor restarts the engine at the next one.",
        "",
        "Exit status: `enroll` 0 when a photo was accepted, 1 when none was; `identify` 0 when",
        "an input was read, 1 when none was; `collect` 0 when it ran through (every skipped",
        "file is listed with its reason); `recognize` 0 when it ran through, 2 when the face",
        "engine kept crashing; 2 for an error the command cannot start with.",
        "",
        "| input | command | outcome | exit |",
        "| --- | --- | --- | --- |",
    ]
    for r in ROWS:
        outcome = r["outcome"].replace("|", "\\|")
        lines.append(f"| {r['input']} | `{r['command']}` | {outcome} | {r['exit']} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
