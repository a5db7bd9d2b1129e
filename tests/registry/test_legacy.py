"""SentinelCam / edge-script legacy formats: round trips with real dlib embeddings."""

from __future__ import annotations

import csv
import json
import pickle
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from facefleet.registry import legacy
from facefleet.registry.legacy import LegacyError
from facefleet.workspace import Workspace

PEOPLE = ["ben_afflek", "elton_john", "madonna"]
DLIB = {"vision": {"embedder": "dlib", "workers": 1}}


@pytest.fixture(scope="module")
def ws(tmp_path_factory, faces_dir) -> Workspace:
    """Four training photos each of three people, enrolled with the dlib embedder."""
    from facefleet.enrol import enroll, plan_folder

    ws = Workspace.init(tmp_path_factory.mktemp("legacy"), DLIB)
    items = [(n, p) for n, p in plan_folder(faces_dir / "five_celebrity" / "train") if n in PEOPLE]
    picked = [item for name in PEOPLE for item in [i for i in items if i[0] == name][:4]]
    enroll(ws, picked, workers=1)
    return ws


@pytest.fixture(scope="module")
def embedder_id(ws) -> str:
    return legacy.current_embedder_id(ws)


@pytest.fixture(scope="module")
def engine(ws):
    return ws.engine()


def _embed_photo(engine, path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    from facefleet.vision.image import load_image

    faces = engine.analyse(load_image(path))
    face = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    return tuple(int(v) for v in face.box), face.embedding


def test_refkey_and_status_helpers():
    key = legacy.format_refkey("2024-03-01", "ev1", "2024-03-01T10:11:12.500000", (1, 2, 30, 40), "data1")
    assert key == "2024-03-01|ev1|2024-03-01T10:11:12.500000|(1,2,30,40)|data1"
    assert legacy.parse_refkey(key)["box"] == (1, 2, 30, 40)
    with pytest.raises(ValueError):
        legacy.parse_refkey("2024-03-01|ev1|(1,2,3,4)")
    assert legacy.normalise_timestamp("2024-03-01 10:11:12.5") == "2024-03-01T10:11:12.500000"
    assert [legacy.parse_status(s) for s in ("0", "1", "2.0", "3", "4", "in_use")] == [
        "candidate",
        "selected",
        "in_use",
        "revoked",
        None,
        "in_use",
    ]
    with pytest.raises(ValueError):
        legacy.parse_status("7")
    with pytest.raises(ValueError):
        legacy.check_vector(np.zeros(64))
    with pytest.raises(ValueError):
        legacy.check_vector(np.full(128, np.nan))


def test_facedata_round_trip(ws, embedder_id, tmp_path):
    out = tmp_path / "facedata.hdf5"
    n = legacy.export_facedata(ws, out, embedder_id=embedder_id)
    store = ws.open_store()
    ts = store.training_set(embedder_id)
    store.close()
    assert n == len(ts.names) >= 10
    with h5py.File(out, "r") as fh:
        assert sorted(fh.keys()) == PEOPLE
        keys = [k for name in PEOPLE for k in fh[name]]
        shape = r"\d{4}-\d\d-\d\d\|[^|]+\|[^|]+\|\(\d+,\d+,\d+,\d+\)\|facefleet"
        assert all(re.fullmatch(shape, k) for k in keys)
        vectors = {tuple(np.round(fh[name][k][()], 6)) for name in PEOPLE for k in fh[name]}
    assert vectors == {tuple(np.round(v, 6)) for v in ts.X}

    other = Workspace.init(tmp_path / "other", DLIB)
    report = legacy.import_facedata(other, out, embedder_id=embedder_id)
    assert report.faces_added == n and sorted(report.people_added) == PEOPLE and not report.skipped
    store = other.open_store()
    got = store.training_set(embedder_id)
    faces = store.faces()
    store.close()
    assert sorted(got.names) == sorted(ts.names)
    order = lambda s: np.lexsort(np.asarray(s.X).T)  # noqa: E731
    np.testing.assert_array_equal(got.X[order(got)], ts.X[order(ts)])
    assert all(f.meta["sentinelcam"]["sink"] == "facefleet" for f in faces)

    again = legacy.import_facedata(other, out, embedder_id=embedder_id)
    assert again.faces_added == 0 and again.already_present == n

    # Exported again from the imported store: the same keys (SentinelCam's fields kept).
    back = tmp_path / "back.hdf5"
    legacy.export_facedata(other, back, embedder_id=embedder_id)
    with h5py.File(out, "r") as a, h5py.File(back, "r") as b:
        assert {n: sorted(a[n].keys()) for n in a} == {n: sorted(b[n].keys()) for n in b}


def test_facedata_import_skips_bad_entries_and_rejects_non_hdf5(ws, embedder_id, tmp_path):
    path = tmp_path / "bad.hdf5"
    good = np.random.default_rng(0).normal(size=128).astype(np.float32)
    with h5py.File(path, "w") as fh:
        fh.create_dataset("zed/2024-01-01|e1|2024-01-01T00:00:01|(1,2,50,60)|data1", data=good)
        fh.create_dataset("zed/not a key", data=good)
        fh.create_dataset("zed/2024-01-01|e1|2024-01-01T00:00:02|(1,2,50,60)|data1", data=good[:64])
        fh.create_dataset("loose", data=good)
    other = Workspace.init(tmp_path / "o", DLIB)
    report = legacy.import_facedata(other, path, embedder_id=embedder_id)
    assert report.faces_added == 1 and report.people_added == ["zed"]
    reasons = " ".join(r for _, r in report.skipped)
    assert len(report.skipped) == 3 and "not a SentinelCam face key" in reasons and "128-vector" in reasons

    junk = tmp_path / "junk.hdf5"
    junk.write_bytes(b"this is not hdf5")
    with pytest.raises(LegacyError, match="not a readable HDF5"):
        legacy.import_facedata(other, junk, embedder_id=embedder_id)


def test_baselines_from_store_separate_people(ws, embedder_id, tmp_path):
    out = tmp_path / "baselines.hdf5"
    assert legacy.export_baselines(ws, out, embedder_id=embedder_id) == 3
    store = ws.open_store()
    ts = store.training_set(embedder_id)
    store.close()
    with h5py.File(out, "r") as fh:
        names = sorted(fh.keys())
        base = np.stack([fh[n][()] for n in names])
        thr = [float(fh[n].attrs["threshold"]) for n in names]
    assert names == PEOPLE and thr == [0.6, 0.6, 0.6]
    # SentinelCam's rule: nearest baseline by L2 names the person.
    dist = np.linalg.norm(ts.X[:, None, :] - base[None, :, :], axis=2)
    assert [names[i] for i in dist.argmin(axis=1)] == list(ts.names)


def test_baselines_from_a_signed_bundle(ws, embedder_id, tmp_path):
    from facefleet.registry import format as bundle_mod
    from facefleet.registry import keys

    if not (keys.public_key_path(ws.keys_dir)).exists():
        keys.generate_keypair(ws.keys_dir)
    store = ws.open_store()
    ts = store.training_set(embedder_id)
    store.close()
    labels, cents = legacy.centroids(ts.X, list(ts.names))
    idx = np.array([labels.index(n) for n in ts.names], dtype=np.int32)
    manifest = {
        "model": "face_model",
        "version": 1,
        "name": "alpha1",
        "embedder_id": embedder_id,
        "labels": labels,
        "thresholds": {n: 0.5 + i / 10 for i, n in enumerate(labels)},
        "method": "centroid",
        "metrics": {},
    }
    arrays = {"gallery": ts.X, "gallery_labels": idx, "centroids": cents, "temperature": np.float32(0.1)}
    priv = keys.load_private_key(keys.private_key_path(ws.keys_dir))
    folder = bundle_mod.write_bundle(tmp_path / "bundle", manifest=manifest, arrays=arrays, private_key=priv)
    out = tmp_path / "b.hdf5"
    assert legacy.export_baselines(ws, out, bundle=folder) == 3
    with h5py.File(out, "r") as fh:
        assert {n: round(float(fh[n].attrs["threshold"]), 3) for n in fh} == {
            "ben_afflek": 0.5,
            "elton_john": 0.6,
            "madonna": 0.7,
        }
        np.testing.assert_allclose(fh["madonna"][()], cents[2], rtol=1e-6)


def test_facemodel_pickle_names_held_out_photos(ws, embedder_id, engine, faces_dir, tmp_path):
    out = tmp_path / "facemodel.pickle"
    assert legacy.export_facemodel(ws, out, embedder_id=embedder_id) == 3
    with open(out, "rb") as fh:  # our own file, written just now: the old tools' format
        model = pickle.load(fh)  # noqa: S301
    assert set(model) == {"svm", "labels"} and list(model["labels"].classes_) == PEOPLE
    right = total = 0
    for name in PEOPLE:
        for photo in sorted((faces_dir / "five_celebrity" / "val" / name).iterdir())[:3]:
            _, vec = _embed_photo(engine, photo)
            proba = model["svm"].predict_proba(vec[None, :])[0]
            assert proba.shape == (3,) and abs(proba.sum() - 1) < 1e-6
            right += model["labels"].inverse_transform([int(proba.argmax())])[0] == name
            total += 1
    assert right / total >= 0.8, f"{right}/{total}"


def test_face_database_json(ws, tmp_path):
    out = tmp_path / "face_database.json"
    assert legacy.export_face_database(ws, out) == 3
    data = json.loads(out.read_text())
    assert sorted(p["name"] for p in data["people"]) == PEOPLE
    assert all(p["examples"] >= 3 for p in data["people"])


def _facelist_row(event, timestamp, status, name, box, proba="", dist="", margin=""):
    """One SentinelCam facelist.csv row (eye geometry zeroed, focus 55.5)."""
    eyes = ["0"] * 6 + ["0.0"]
    return ["2024-05-06", event, timestamp, "1", "cam1", status, name, proba, dist, margin,
            *box, *eyes, "55.5"]  # fmt: skip


def test_facelist_import_embeds_frames(ws, embedder_id, engine, faces_dir, tmp_path):
    images = tmp_path / "images" / "2024-05-06"
    images.mkdir(parents=True)
    rows, expected = [], {}
    cases = [
        ("ben_afflek", "2", "ben_afflek"),
        ("elton_john", "1", "elton_john"),
        ("madonna", "0", "madonna"),
        ("madonna", "3", "Unknown"),
    ]
    for i, (person, status, label) in enumerate(cases):
        photo = faces_dir / "five_celebrity" / "val" / person / f"{i + 1}.jpg"
        box, vec = _embed_photo(engine, photo)
        ts = f"2024-05-06 10:00:0{i}.25"
        (images / f"evt{i}_2024-05-06_10.00.0{i}.250000.jpg").symlink_to(photo)
        rows.append(_facelist_row(f"evt{i}", ts, status, label, box, proba="0.9", dist="0.4", margin="0.1"))
        expected[f"evt{i}"] = (box, vec, status)
    box = ("1", "1", "50", "50")
    rows.append(_facelist_row("gone", "2024-05-06 11:00:00", "1", "x", box))  # frame missing
    rows.append(_facelist_row("evt0", "2024-05-06 10:00:00.25", "4", "x", box))  # remove
    rows.append(_facelist_row("evt0", "yesterday", "1", "x", box))  # bad timestamp
    csv_path = tmp_path / "facelist.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(legacy.FACELIST_COLUMNS)
        w.writerows(rows)

    other = Workspace.init(tmp_path / "o", DLIB)
    report = legacy.import_facelist(other, csv_path)
    assert report.faces_added == 4, report.summary()
    reasons = [r for _, r in report.skipped]
    assert len(reasons) == 3 and any("frame not found" in r for r in reasons)
    assert any("removal" in r for r in reasons) and any("timestamp" in r for r in reasons)
    store = other.open_store()
    faces = {f.meta["sentinelcam"]["event"]: f for f in store.faces()}
    assert {e: f.status for e, f in faces.items()} == {
        "evt0": "in_use",
        "evt1": "selected",
        "evt2": "candidate",
        "evt3": "revoked",
    }
    assert faces["evt3"].person_name is None and faces["evt0"].person_name == "ben_afflek"
    assert faces["evt0"].quality["focus"] == 55.5
    for event, (box, vec, _) in expected.items():
        assert tuple(faces[event].box) == box
        got = store.embedding(faces[event].id, embedder_id)
        assert np.linalg.norm(got - vec) < 1e-4  # same landmarks, chip and network
    store.close()
    assert legacy.import_facelist(other, csv_path).already_present == 4


def test_facelist_wrong_columns_is_a_clear_error(ws, tmp_path):
    path = tmp_path / "facelist.csv"
    path.write_text("date,event\n2024-01-01,e\n")
    with pytest.raises(LegacyError, match="missing columns: timestamp"):
        legacy.import_facelist(ws, path, embed=False)
    with pytest.raises(LegacyError, match="no such file"):
        legacy.import_facelist(ws, tmp_path / "nope.csv", embed=False)


def test_cli_export_and_import(ws, tmp_path):
    import subprocess
    import sys

    cli = (
        "import sys; from facefleet.cli import main as m; "
        "m.COMMAND_MODULES[:] = ['facefleet.cli.models_cmds']; sys.exit(m.main(sys.argv[1:]))"
    )

    def run(root: Path, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", cli, "-w", str(root), *args], capture_output=True, text=True, timeout=300
        )

    out = run(ws.root, "export", "facedata", str(tmp_path / "fd.hdf5"))
    assert out.returncode == 0, out.stderr
    assert re.search(r"wrote 1[0-9] faces", out.stdout)
    out = run(ws.root, "export", "face-database", str(tmp_path / "db.json"))
    assert out.returncode == 0 and "wrote 3 people" in out.stdout
    other = Workspace.init(tmp_path / "o", DLIB)
    out = run(other.root, "import", "facedata", str(tmp_path / "fd.hdf5"))
    assert out.returncode == 0, out.stderr
    assert "faces added, 3 new people" in out.stdout
    out = run(other.root, "import", "facelist", str(tmp_path / "missing.csv"))
    assert out.returncode == 2 and "no such file" in out.stderr and "Traceback" not in out.stderr
