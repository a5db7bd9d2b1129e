"""Native code is guarded (tiny, mistyped images never reach dlib) and what cannot be guarded
is isolated: a pool worker that really dies costs only its file, and workers die with their
parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from testkit import alive, descendants, wait_for

from facefleet.errors import ImageError
from facefleet.vision import detect as det
from facefleet.vision.batch import FAULT_ENV, Failed, Pool, PoolStats, analyse_files, crash_message
from facefleet.vision.engine import FaceEngine, VisionConfig, check_image

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (3, 3), (1, 300), (300, 2), (8, 8), (15, 400)])
def test_tiny_images_are_refused_before_native_code(shape):
    rgb = np.zeros((*shape, 3), dtype=np.uint8)
    with pytest.raises(ImageError, match="image too small"):
        check_image(rgb)
    # dlib's CNN raises on these and corrupts its heap; the guard never calls it
    cnn = det.CnnDetector()
    for upsample in (0, 1):
        assert det.detect(cnn, rgb, upsample=upsample, max_side=640) == []
    # a long thin image downscaled for the CNN shrinks below its minimum: still guarded
    assert det.detect(cnn, np.zeros((40, 6000, 3), np.uint8), upsample=0, max_side=640) == []


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((64, 64), np.uint8), "H x W x 3"),
        (np.zeros((64, 64, 4), np.uint8), "H x W x 3"),
        (np.zeros((64, 64, 3), np.float32), "uint8"),
        ([[0, 0, 0]], "H x W x 3"),
    ],
)
def test_wrong_dtype_or_shape_is_a_clear_error(array, message):
    with pytest.raises(ImageError, match=message):
        check_image(array)


def test_engine_rejects_tiny_image_and_keeps_working(faces_dir):
    from facefleet.vision.image import load_image

    engine = FaceEngine(VisionConfig(embedder="dlib"))
    with pytest.raises(ImageError, match="image too small"):
        engine.analyse(np.zeros((3, 3, 3), np.uint8))
    faces = engine.analyse(load_image(faces_dir / "examples" / "obama_small.jpg"), embed=False)
    assert len(faces) == 1


def test_crash_message():
    assert crash_message(-6) == "crashed the face engine (signal 6)"
    assert crash_message(3) == "crashed the face engine (exit status 3)"


def test_a_worker_that_dies_costs_only_its_file(faces_dir, monkeypatch):
    kind, signum = "abort", signal.SIGABRT
    ex = faces_dir / "examples"
    files = [ex / "biden.jpg", ex / "obama.jpg", ex / "obama2.jpg", ex / "obama3.jpg", ex / "obama_small.jpg"]
    monkeypatch.setenv(FAULT_ENV, f"{kind}:obama2.jpg")  # the worker holding it really dies
    stats = PoolStats()
    # dlib's embedder: no ONNX conversion in each fresh worker
    results = list(analyse_files(files, VisionConfig(embedder="dlib"), workers=2, stats=stats))
    assert [r.path for r in results] == [str(f) for f in files]
    by_name = {Path(r.path).name: r for r in results}
    assert by_name["obama2.jpg"].error.endswith(f"crashed the face engine (signal {int(signum)})")
    assert by_name["obama2.jpg"].faces == []
    for name in ("biden.jpg", "obama.jpg", "obama3.jpg", "obama_small.jpg"):
        assert by_name[name].error is None and len(by_name[name].faces) == 1, name
        assert by_name[name].faces[0].embedding.shape == (128,)
    assert stats.crashes == 1 and stats.restarts == 1


def test_jobs_sent_ahead_to_a_worker_that_dies_are_sent_again(faces_dir, monkeypatch):
    """One worker, the whole batch sent ahead (as a Dask task does): the worker dies on the
    second file; the third and fourth, already sent to it, go to its replacement."""
    from facefleet.vision.dask_backend import _analyse_one

    ex = faces_dir / "examples"
    files = [ex / "biden.jpg", ex / "obama2.jpg", ex / "obama3.jpg", ex / "obama_small.jpg"]
    monkeypatch.setenv(FAULT_ENV, "kill:obama2.jpg")
    pool = Pool(1, VisionConfig(embedder="dlib"))
    try:
        results = list(pool.run([(_analyse_one, str(f), (True, False)) for f in files], depth=len(files)))
        again = list(pool.run([(_analyse_one, str(files[0]), (True, False))], depth=4))  # still usable
    finally:
        pool.close()
    assert results[1] == Failed("crashed the face engine (signal 9)")
    for r, f in zip(results[::2] + results[3:], [files[0], files[2], files[3]], strict=True):
        assert r.path == str(f) and r.error is None and len(r.faces) == 1
    assert pool.stats.crashes == 1 and pool.stats.restarts == 1 and len(again[0].faces) == 1


def test_enrol_keeps_every_other_photo_when_a_worker_crashes(faces_dir, tmp_path, monkeypatch):
    from facefleet.enrol import enroll
    from facefleet.workspace import Workspace

    # dlib's embedder: no ONNX conversion, this test is about the pool
    ws = Workspace.init(tmp_path / "ws", config={"vision": {"embedder": "dlib"}})
    ex = faces_dir / "examples"
    items = [("obama", ex / n) for n in ("obama.jpg", "obama2.jpg", "obama3.jpg", "obama_small.jpg")]
    monkeypatch.setenv(FAULT_ENV, "kill:obama3.jpg")  # as the OOM killer would
    report = enroll(ws, items, workers=2)
    reasons = {Path(o.path).name: o.reason for o in report.outcomes}
    assert reasons["obama3.jpg"] == "crashed the face engine (signal 9)"
    assert len(report.accepted) == 3
    with ws.open_store() as store:
        assert len(store.faces()) == 3
    # the crash is not cached as a rejection: the next run (no fault) enrols the photo
    monkeypatch.delenv(FAULT_ENV)
    again = enroll(ws, items, workers=2)
    assert len(again.accepted) == 4 and sum(not o.cached for o in again.outcomes) == 1
    with ws.open_store() as store:
        assert len(store.faces()) == 4


_BATCH_SCRIPT = """
import sys
from facefleet.vision.batch import analyse_files
from facefleet.vision.engine import VisionConfig
files = sys.argv[1:] * 50
for result in analyse_files(files, VisionConfig(embedder="dlib"), workers=2):
    pass
"""

_LOKY_SCRIPT = """
import numpy as np
from sklearn.model_selection import GridSearchCV
from sklearn.svm import SVC
from facefleet.lifetime import loky_dies_with_parent
rng = np.random.default_rng(0)
X, y = rng.normal(size=(3000, 128)), rng.integers(0, 20, 3000)
with loky_dies_with_parent():
    GridSearchCV(SVC(), {"C": list(np.logspace(-2, 3, 200))}, cv=5, n_jobs=2).fit(X, y)
"""


@pytest.mark.parametrize(
    "script, sig, count",
    [
        (_BATCH_SCRIPT, signal.SIGKILL, 2),
        (_BATCH_SCRIPT, signal.SIGTERM, 2),
        (_LOKY_SCRIPT, signal.SIGKILL, 4),  # two workers and two resource trackers
    ],
    ids=["pool-sigkill", "pool-sigterm", "loky-sigkill"],
)
def test_workers_die_with_their_parent(faces_dir, tmp_path, script, sig, count):
    ex = faces_dir / "examples"
    env = {**os.environ, "PYTHONPATH": str(REPO), "FACEFLEET_NO_PROGRESS": "1"}
    # its own session, so the parent's death does not signal the workers through the group
    parent = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), str(ex / "obama.jpg"), str(ex / "biden.jpg")],
        env=env,
        start_new_session=True,
        cwd=tmp_path,
    )
    workers: set[int] = set()
    try:
        workers = wait_for(lambda: len(found := descendants(parent.pid)) >= count and found, 60)
        assert workers, "no worker processes started"
        parent.send_signal(sig)
        parent.wait(10)
        left = wait_for(lambda: not alive(workers), 15)
        assert left, f"workers still alive 15 s after the parent died: {alive(workers)}"
    finally:
        parent.kill()
        parent.wait()
        for pid in alive(workers):
            os.kill(pid, signal.SIGKILL)
