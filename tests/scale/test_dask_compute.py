"""Heavy work on a real Dask cluster (``dask scheduler`` + two ``dask worker`` subprocesses on
127.0.0.1): enrolment gives exactly the local store, training the local model, a worker
killed mid-run costs only its tasks, and a photo that crashes the face engine (a real
SIGABRT or SIGKILL through the fault hook) costs only that photo, with or without nannies."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
import yaml
from clusterkit import DaskCluster, wait_until
from testkit import free_port

from facefleet import compute
from facefleet.cli.main import main
from facefleet.enrol import enroll, plan_folder
from facefleet.vision.batch import FAULT_ENV
from facefleet.workspace import Workspace

# the scheduler cannot import this test module: send its helper functions by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])

PEOPLE = ("ben_afflek", "elton_john", "jerry_seinfeld", "madonna", "mindy_kaling")
# one with two faces, one too blurred, one where only the CNN fallback is tried (and fails)
HARD = ("jerry_seinfeld/16.jpg", "madonna/14.jpg", "mindy_kaling/15.jpg")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = DaskCluster(tmp_path_factory.mktemp("dask")).start(n_workers=2)
    try:
        yield c
    finally:
        compute.close_clients()
        c.stop()


@pytest.fixture(scope="module")
def photos(tmp_path_factory, faces_dir) -> Path:
    """23 photos of 5 people (3 of them rejected), a corrupt file and a copy of a photo."""
    src = faces_dir / "five_celebrity" / "train"
    root = tmp_path_factory.mktemp("photos")
    for person in PEOPLE:
        (root / person).mkdir()
        for photo in sorted((src / person).iterdir(), key=lambda p: int(p.stem))[:4]:
            (root / person / photo.name).symlink_to(photo)
    for rel in HARD:
        (root / rel).unlink(missing_ok=True)
        (root / rel).symlink_to(src / rel)
    (root / "madonna" / "broken.jpg").write_bytes((src / "madonna" / "1.jpg").read_bytes()[:300])
    shutil.copyfile(src / "elton_john" / "1.jpg", root / "elton_john" / "1_again.jpg")
    return root


def _workspace(root: Path, compute_cfg: dict | None = None) -> Workspace:
    return Workspace.init(root, {"compute": compute_cfg} if compute_cfg else None)


@pytest.fixture(scope="module")
def local_ws(tmp_path_factory, photos) -> Workspace:
    ws = _workspace(tmp_path_factory.mktemp("local"))
    enroll(ws, plan_folder(photos), workers=1)
    return ws


def store_dump(ws: Workspace) -> dict:
    """The store's content without ids, paths and times: what must not depend on where the
    faces were computed."""
    conn = sqlite3.connect(ws.store_path)
    people = dict(conn.execute("SELECT id, name FROM people").fetchall())
    faces = {}
    for sha, person, box, lm, quality, status, detector, emb, vec in conn.execute(
        "SELECT i.sha256, f.person_id, f.box, f.landmarks, f.quality, f.status, f.detector, "
        "e.embedder_id, e.vector FROM faces f JOIN images i ON i.id = f.image_id "
        "JOIN embeddings e ON e.face_id = f.id"
    ):
        assert sha not in faces, f"image {sha[:12]} stored twice"
        faces[sha] = {
            "person": people.get(person),
            "box": json.loads(box),
            "landmarks": np.asarray(json.loads(lm), dtype=np.float32),
            "quality": json.loads(quality),
            "status": status,
            "detector": detector,
            "embedder": emb,
            "vector": np.frombuffer(vec, dtype=np.float32),
        }
    images = conn.execute("SELECT COUNT(*), COUNT(DISTINCT sha256) FROM images").fetchone()
    rejections = sorted(conn.execute("SELECT sha256, reason FROM rejections").fetchall())
    conn.close()
    return {"people": sorted(people.values()), "faces": faces, "images": images, "rejections": rejections}


def assert_same_store(a: dict, b: dict) -> None:
    assert a["people"] == b["people"]
    assert a["images"] == b["images"] and a["images"][0] == a["images"][1]
    assert a["rejections"] == b["rejections"]
    assert sorted(a["faces"]) == sorted(b["faces"])
    for sha, fa in a["faces"].items():
        fb = b["faces"][sha]
        for key in ("person", "box", "quality", "status", "detector", "embedder"):
            assert fa[key] == fb[key], (sha[:12], key)
        np.testing.assert_allclose(fa["landmarks"], fb["landmarks"], atol=1e-4)
        np.testing.assert_allclose(fa["vector"], fb["vector"], atol=1e-6)


@pytest.fixture(scope="module")
def observer(cluster):
    """A client of the test's own, to watch the scheduler."""
    from distributed import Client

    with Client(cluster.address, timeout=30) as c:
        yield c


def _finished(dask_scheduler, prefix: str) -> int:
    return sum(
        v.state_counts.get("memory", 0)
        for k, v in dask_scheduler.task_prefixes.items()
        if k.startswith(prefix)
    )


def prefix_count(observer, prefix: str) -> int:
    """Tasks of ``prefix`` the scheduler has seen finish so far (every client, every run)."""
    return observer.run_on_scheduler(_finished, prefix=prefix)


def test_local_enrolment_is_the_reference(local_ws):
    dump = store_dump(local_ws)
    assert len(dump["people"]) == 5 and len(dump["faces"]) == 20
    reasons = [r for _, r in dump["rejections"]]
    assert any(r.startswith("several faces") for r in reasons)
    assert any(r.startswith("no face found") for r in reasons)


def test_enroll_on_dask_gives_the_local_store(cluster, observer, local_ws, photos, tmp_path, capsys):
    ws = _workspace(tmp_path / "ws", {"chunk": 3})
    before = prefix_count(observer, "facefleet-analyse")
    code = main(
        ["-w", str(ws.root), "enroll", "--folder", str(photos), "--scheduler", cluster.address, "--json"]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["accepted"] == 21 and out["rejected"] == 4  # the copy is accepted as the same face
    assert prefix_count(observer, "facefleet-analyse") - before == 9  # 25 files, 3 a task
    broken = next(p for p in out["photos"] if p["path"].endswith("broken.jpg"))
    assert broken["reason"].startswith("unreadable:") and "corrupt or truncated" in broken["reason"]
    assert_same_store(store_dump(local_ws), store_dump(ws))
    from facefleet.vision import dask_backend

    built = observer.run(dask_backend.engines_built)
    assert sorted(built.values()) == [1, 1], built  # one engine per worker, however many tasks

    # the second pass is answered from the store: nothing is sent to the cluster
    before = prefix_count(observer, "facefleet-analyse")
    report = enroll(ws, plan_folder(photos), scheduler=cluster.address)
    assert all(o.cached for o in report.outcomes if o.accepted)
    assert prefix_count(observer, "facefleet-analyse") == before


def test_bytes_mode_gives_the_same_store(cluster, local_ws, photos, tmp_path):
    """Workers on other machines get the files' contents, not paths."""
    ws = _workspace(tmp_path / "ws", {"send": "bytes", "chunk": 4})
    enroll(ws, plan_folder(photos), scheduler=cluster.address)
    assert_same_store(store_dump(local_ws), store_dump(ws))


def test_worker_killed_mid_enrol(cluster, observer, local_ws, photos, tmp_path):
    ws = _workspace(tmp_path / "ws", {"chunk": 1, "scheduler": cluster.address})
    start = prefix_count(observer, "facefleet-analyse")
    result: dict = {}

    def run() -> None:
        try:
            result["report"] = enroll(ws, plan_folder(photos))  # compute.scheduler from facefleet.yaml
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            result["error"] = exc

    victim = cluster.workers[0]
    address = next(a for a, pid in observer.run(os.getpid).items() if pid == victim.pid)
    thread = threading.Thread(target=run)
    thread.start()
    wait_until(lambda: prefix_count(observer, "facefleet-analyse") - start >= 3, 180, "three finished tasks")
    assert thread.is_alive(), "the enrolment finished before a worker could be killed"
    cluster.kill_worker(0)
    wait_until(lambda: address not in observer.scheduler_info()["workers"], 60, "the worker's removal")
    thread.join(timeout=300)
    assert not thread.is_alive()
    if "error" in result:
        raise result["error"]
    assert len(result["report"].accepted) == 21
    assert_same_store(store_dump(local_ws), store_dump(ws))  # nothing lost, nothing twice
    cluster.add_worker()  # two workers again for the tests after this one
    cluster.wait_workers(2)


def test_train_on_dask_gives_the_same_model(cluster, observer, local_ws, tmp_path, capsys):
    from facefleet.train.config import load_config
    from facefleet.train.model import build_model
    from facefleet.train.pipeline import current_embedder_id

    cfg = load_config()
    with local_ws.open_store() as store:
        ts = store.training_set(current_embedder_id(local_ws), cfg.statuses)
    # enough rows for the successive-halving search, not only the plain grid
    rng = np.random.default_rng(0)
    X = np.concatenate([ts.X + rng.normal(0, 0.01, ts.X.shape).astype(np.float32) for _ in range(12)])
    names = list(ts.names) * 12
    here = build_model(X, names, cfg.search, cfg.open_set)
    before = prefix_count(observer, "batch_of__fit_and_score") + prefix_count(
        observer, "mixed_batch_of__fit_and_score"
    )
    with compute.using(compute.ComputeConfig(scheduler=cluster.address)):
        there = build_model(X, names, cfg.search, cfg.open_set)
    after = prefix_count(observer, "batch_of__fit_and_score") + prefix_count(
        observer, "mixed_batch_of__fit_and_score"
    )
    assert after > before, "the model search did not run on the cluster"
    assert here.labels == there.labels
    assert (here.fitted.method, here.fitted.params) == (there.fitted.method, there.fitted.params)
    assert here.fitted.cv_score == pytest.approx(there.fitted.cv_score)
    assert here.thresholds == pytest.approx(there.thresholds, abs=1e-9)
    assert sorted(here.arrays) == sorted(there.arrays)
    for key, value in here.arrays.items():
        np.testing.assert_allclose(value, there.arrays[key], rtol=1e-9, atol=1e-9, err_msg=key)

    # end to end through the CLI: MLflow run, signed bundle, the same thresholds as locally
    ws = Workspace.open(shutil.copytree(local_ws.root, tmp_path / "ws"))
    code = main(["-w", str(ws.root), "train", "--scheduler", cluster.address, "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    local = build_model(ts.X, list(ts.names), cfg.search, cfg.open_set)
    assert out["thresholds"] == pytest.approx(local.thresholds, abs=1e-9)
    manifest = json.loads((Path(out["bundle"]) / "manifest.json").read_text())
    assert manifest["labels"] == local.labels


def test_collect_on_dask_gives_the_local_candidates(cluster, observer, photos, tmp_path):
    """A folder of crops: analysed on the workers, written here, the same as a local collect."""
    from facefleet.curate.collect import collect

    here = _workspace(tmp_path / "here")
    local = collect(here, [photos])
    there = _workspace(tmp_path / "there", {"chunk": 4})
    before = prefix_count(observer, "facefleet-analyse")
    remote = collect(there, [photos], scheduler=cluster.address)
    # 25 files, 24 distinct contents (the copy is sent once), 4 a task
    assert prefix_count(observer, "facefleet-analyse") - before == 6
    assert len(remote.added) == len(local.added) == 23
    assert remote.duplicates == local.duplicates == 1
    assert (
        [p for p, _ in remote.skipped]
        == [p for p, _ in local.skipped]
        == [str(photos / "madonna" / "broken.jpg")]
    )
    a, b = store_dump(here), store_dump(there)
    assert {f["status"] for f in a["faces"].values()} == {"candidate"}
    assert_same_store(a, b)


# new photos (not in the five people's) on which the face engine really dies: abort, SIGKILL
CRASHERS = {"crash-abort.jpg": ("obama.jpg", 6), "crash-kill.jpg": ("biden.jpg", 9)}
FAULTS = "abort:crash-abort.jpg,kill:crash-kill.jpg"


@pytest.fixture(scope="module")
def crashers(tmp_path_factory, faces_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("crashers")
    for name, (src, _) in CRASHERS.items():
        shutil.copyfile(faces_dir / "examples" / src, root / name)
    return {name: root / name for name in CRASHERS}


@pytest.fixture(scope="module")
def fault_cluster(tmp_path_factory):
    """Two workers without nannies whose face engine dies on the crashers (test hook)."""
    c = DaskCluster(tmp_path_factory.mktemp("dask-faults"), env={FAULT_ENV: FAULTS}).start(n_workers=2)
    try:
        yield c
    finally:
        compute.close_clients()
        c.stop()


def test_a_photo_that_crashes_the_engine_costs_only_that_photo(
    fault_cluster, local_ws, photos, crashers, tmp_path
):
    """Each worker thread runs the face engine in a crash-isolated child: the child dies, the
    photo gets the crash, the child is replaced, no Dask worker dies, and every other photo's
    result is the local run's. A re-run stores nothing twice."""
    from distributed import Client

    from facefleet.vision import dask_backend

    ws = _workspace(tmp_path / "ws", {"chunk": 3, "scheduler": fault_cluster.address})
    shutil.copytree(local_ws.cache_dir, ws.cache_dir, dirs_exist_ok=True)  # the ONNX graph, converted
    items = plan_folder(photos)
    items[5:5] = [("madonna", crashers["crash-abort.jpg"])]
    items[12:12] = [("elton_john", crashers["crash-kill.jpg"])]
    with Client(fault_cluster.address, timeout=30) as watch:
        workers = sorted(watch.scheduler_info()["workers"])
        report = enroll(ws, items)
        reasons = {Path(o.path).name: o.reason for o in report.outcomes}
        for name, (_, signum) in CRASHERS.items():
            assert reasons[name] == f"crashed the face engine (signal {signum})"
        assert len(report.outcomes) == len(items) and len(report.accepted) == 21
        assert_same_store(store_dump(local_ws), store_dump(ws))  # every other photo, as locally
        assert sorted(watch.scheduler_info()["workers"]) == workers, "a Dask worker died"
        assert sum(watch.run(dask_backend.engines_built).values()) == 2 + 2  # a child per crash

        again = enroll(ws, items)  # the crashers are tried again (and crash again), nothing twice
        assert {o.path: o.reason for o in again.outcomes} == {o.path: o.reason for o in report.outcomes}
        assert all(o.cached for o in again.accepted)
        assert_same_store(store_dump(local_ws), store_dump(ws))


def test_collect_skips_only_the_photo_that_crashes_the_engine(
    fault_cluster, photos, crashers, tmp_path, capsys
):
    """``facefleet collect`` as a user runs it: the photo whose engine is SIGKILLed (as the OOM
    killer would) is skipped with the crash, every other face is collected and written; the
    second run adds nothing twice."""
    from distributed import Client

    crops = tmp_path / "crops"
    for person in ("elton_john", "madonna"):  # 9 faces, a copy of one, a corrupt file
        shutil.copytree(photos / person, crops / person, symlinks=True)
    shutil.copyfile(crashers["crash-kill.jpg"], crops / "madonna" / "crash-kill.jpg")
    there = _workspace(tmp_path / "there", {"chunk": 4})
    with Client(fault_cluster.address, timeout=30) as watch:
        workers = sorted(watch.scheduler_info()["workers"])
        for added, known in ((9, 1), (0, 10)):
            code = main(["-w", str(there.root), "collect", str(crops), "--scheduler", fault_cluster.address])
            out = capsys.readouterr().out.splitlines()
            assert code == 0
            assert out[0] == f"{added} candidate faces added, {known} already in the store, 2 skipped", out
            assert (
                f"  skipped {crops / 'madonna' / 'crash-kill.jpg'}: crashed the face engine (signal 9)" in out
            )
            assert any(line.startswith(f"  skipped {crops / 'madonna' / 'broken.jpg'}: ") for line in out)
            dump = store_dump(there)
            assert len(dump["faces"]) == 9 and {f["status"] for f in dump["faces"].values()} == {"candidate"}
        assert sorted(watch.scheduler_info()["workers"]) == workers, "a Dask worker died"


@pytest.mark.parametrize(
    "daemon, reason",
    [
        ("True", "crashed the face engine (its Dask worker died on it)"),
        ("False", "crashed the face engine (signal 6)"),
    ],
    ids=["daemonic", "not-daemonic"],
)
def test_nanny_workers_lose_only_the_photo_that_crashes(tmp_path, faces_dir, crashers, daemon, reason):
    """Workers under a nanny are daemonic by default (no child processes): the engine runs in
    the worker, the crash kills it, the nanny starts it again, and once Dask gives the task up
    (``KilledWorker``; ``allowed-failures`` 0 here to keep it short) its files run again one
    per task, so only the photo that kills a worker by itself is marked. With
    ``distributed.worker.daemon: false`` they use the crash-isolated child like the others."""
    src = faces_dir / "five_celebrity" / "train"
    items = [(p, src / p / f"{n}.jpg") for p in PEOPLE[:3] for n in (1, 2)]
    items.insert(2, ("madonna", crashers["crash-abort.jpg"]))
    vision = {"vision": {"embedder": "dlib"}}
    local = Workspace.init(tmp_path / "local", vision)
    enroll(local, [it for it in items if "crash" not in it[1].name], workers=1)
    env = {
        FAULT_ENV: FAULTS,
        "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0",
        "DASK_DISTRIBUTED__WORKER__DAEMON": daemon,
    }
    cluster = DaskCluster(tmp_path / "dask", nanny=True, env=env).start(n_workers=1)
    try:
        ws = Workspace.init(tmp_path / "ws", {**vision, "compute": {"chunk": 4}})
        report = enroll(ws, items, scheduler=cluster.address)
    finally:
        compute.close_clients()
        cluster.stop()
    reasons = {Path(o.path).name: o.reason for o in report.outcomes}
    assert reasons["crash-abort.jpg"] == reason
    assert len(report.outcomes) == len(items) and len(report.accepted) == len(items) - 1
    assert_same_store(store_dump(local), store_dump(ws))


def test_bad_scheduler_settings_are_one_line_errors(tmp_path, photos, capsys):
    ws = _workspace(tmp_path / "ws")
    assert main(["-w", str(ws.root), "enroll", "--folder", str(photos), "--scheduler", "8786"]) == 2
    assert "compute.scheduler: expected tcp://HOST:8786" in capsys.readouterr().err
    cfg = yaml.safe_load(ws.config_path.read_text())
    cfg["compute"] = {"connect_timeout": 2, "chunk": 0}
    ws.config_path.write_text(yaml.safe_dump(cfg))
    assert main(["-w", str(ws.root), "enroll", "--folder", str(photos)]) == 2
    assert "compute.chunk must be in [1, 100000], got 0" in capsys.readouterr().err
    cfg["compute"] = {"connect_timeout": 2}
    ws.config_path.write_text(yaml.safe_dump(cfg))
    t0 = time.monotonic()
    dead = f"tcp://127.0.0.1:{free_port()}"
    assert main(["-w", str(ws.root), "enroll", "--folder", str(photos), "--scheduler", dead]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"facefleet: error: cannot reach the Dask scheduler at {dead}") and "\n" not in err
    assert time.monotonic() - t0 < 60
    empty = DaskCluster(tmp_path / "empty").start(n_workers=0)  # a scheduler without workers
    try:
        assert (
            main(["-w", str(ws.root), "enroll", "--folder", str(photos), "--scheduler", empty.address]) == 2
        )
        assert f"the Dask scheduler at {empty.address} has no workers" in capsys.readouterr().err
    finally:
        compute.close_clients()
        empty.stop()
    with Workspace.open(ws.root).open_store() as store:
        assert store.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 0
