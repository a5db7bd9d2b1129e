"""Review tools on real captures: collection over SSH from a real sshd, SentinelCam facelist
rows, curate filters and ranking, montages, labels, the facelist export, schedule files and
the validation policy."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from testkit import known_hosts_for, write_inventory

from facefleet.cli.main import main
from facefleet.curate import labels
from facefleet.curate.candidates import Filters, dedup, list_candidates, priority
from facefleet.curate.collect import collect, collect_remote
from facefleet.curate.montage import grid, montages
from facefleet.curate.validate import Policy, judge
from facefleet.errors import ConfigError, FacefleetError, StoreError
from facefleet.registry.legacy import FACELIST_COLUMNS
from facefleet.workspace import Workspace


@pytest.fixture
def fresh_ws(tmp_path):
    return Workspace.init(tmp_path / "ws")


def test_collect_over_ssh_from_a_device(fresh_ws, camera_runs, start_device, ssh_env, tmp_path):
    base, key = ssh_env
    dev = start_device("cam1")
    for sub in ("output", "few_shot_examples/unknown"):
        shutil.copytree(camera_runs["cam1"] / sub, dev.root / sub)
    inv = write_inventory(tmp_path / "inventory.yaml", {"sentinels": {"cam1": dev}}, key)
    kh = known_hosts_for(tmp_path / "known_hosts", [dev])
    n = len(list((dev.root / "few_shot_examples/unknown").glob("*.jpg")))

    report = collect_remote(fresh_ws, inv, "cam1", known_hosts=kh)
    assert len(report.added) == n and not report.skipped
    mirrored = fresh_ws.root / "inbox" / "cam1"
    assert (mirrored / "output" / "events.jsonl").is_file()
    again = collect_remote(fresh_ws, inv, "cam1", known_hosts=kh)
    assert again.added == [] and again.duplicates == n
    store = fresh_ws.open_store()
    try:
        assert {f.meta["device"] for f in store.faces(status="candidate")} == {"cam1"}
    finally:
        store.close()
    # an unknown host key is refused, never silently trusted
    (tmp_path / "other_known_hosts").write_text("")
    with pytest.raises(FacefleetError, match="host key"):
        collect_remote(fresh_ws, inv, "cam1", known_hosts=tmp_path / "other_known_hosts")


def _sentinelcam_sink(root: Path, shared_data: Path, engine) -> Path:
    """A SentinelCam data sink: facelist.csv + images/<date>/<event>_<timestamp>.jpg."""
    from facefleet.vision.image import load_image

    rows = []
    specs = [
        ("obama1.jpg", "obama", 0.995, 0.41, 0.19, "evA"),
        ("alex_lacamoire1.jpg", "alex_lacamoire", 0.90, 0.45, 0.15, "evB"),
        ("johnsnow_test1.jpg", "kit_harington", 0.999, 0.70, -0.10, "evC"),
    ]
    for i, (photo, name, proba, dist, margin, event) in enumerate(specs):
        src = shared_data / "faces/examples/knn_examples/test" / photo
        ts = f"2024-05-0{i + 1}T10:00:0{i}.500000"
        folder = root / "images" / f"2024-05-0{i + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, folder / f"{event}_{ts.replace(':', '.')}.jpg")
        box = max(engine.detect(load_image(src)), key=lambda d: d.box[2] - d.box[0]).box
        row = dict.fromkeys(FACELIST_COLUMNS, "")
        row.update(
            date=f"2024-05-0{i + 1}",
            event=event,
            timestamp=ts,
            objid=str(i),
            source="outpost1",
            status="0",
            name=name,
            proba=proba,
            dist=dist,
            margin=margin,
            x1=box[0],
            y1=box[1],
            x2=box[2],
            y2=box[3],
        )
        rows.append(row)
    with open(root / "facelist.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FACELIST_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return root / "facelist.csv"


def test_sentinelcam_rows_filters_and_ranking(fresh_ws, shared_data, tmp_path, capsys):
    csv_path = _sentinelcam_sink(tmp_path / "sink", shared_data, fresh_ws.engine())
    report = collect(fresh_ws, [csv_path], device="datasink1")
    assert len(report.added) == 3, report.summary()
    emb = fresh_ws.engine().embedder.id
    store = fresh_ws.open_store()
    try:
        default = list_candidates(store, emb)  # SentinelCam's 0.99 / 0.65
        assert [c.meta["name"] for c in default] == ["obama"]
        everyone = list_candidates(store, emb, Filters(min_proba=None, max_distance=None))
        assert len(everyone) == 3
        # ranked: clear faces with the smallest |margin| first
        margins = [abs(c.meta["margin"]) for c in everyone]
        assert margins == sorted(margins)
        assert [
            c.meta["name"] for c in list_candidates(store, emb, Filters(None, None, person="alex_lacamoire"))
        ] == ["alex_lacamoire"]
        assert (
            list_candidates(store, emb, Filters(None, None, since="2024-05-03"))
            and len(list_candidates(store, emb, Filters(None, None, since="2024-05-02"))) == 2
        )
        face = store.face(report.added[0])
        assert face.meta["origin"] == "sentinelcam" and face.meta["device"] == "datasink1"
    finally:
        store.close()
    assert main(["-w", str(fresh_ws.root), "curate", "--json", "--min-proba", "0"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == {"obama", "alex_lacamoire"}  # kit: dist 0.70 > 0.65


def test_dedup_and_priority_pure():
    a = np.zeros(128, np.float32)
    b = a.copy()
    b[0] = 0.1  # the same face again
    c = a.copy()
    c[0] = 0.9
    assert dedup([a, b, c, None], ["h1", "h2", "h3", "h1"], 0.15) == [0, 2]
    assert priority(0.8, 0.02, None) > priority(0.8, 0.3, None) > 0
    assert priority(0.9, None, 0.6) > priority(0.9, None, 0.9)


def test_montage_grid_and_size(fresh_ws, camera_runs, tmp_path):
    collect(fresh_ws, [camera_runs["cam1"]])
    emb = fresh_ws.engine().embedder.id
    store = fresh_ws.open_store()
    try:
        n = len(store.faces(status="candidate"))
        paths = montages(store, emb, tmp_path / "sheets", status="candidate")
        by_cluster = montages(store, emb, tmp_path / "clusters")
    finally:
        store.close()
    assert len(paths) == 1
    img = cv2.imread(str(paths[0]))
    rows, cols = grid(n)
    assert img.shape == (rows * 128, cols * 128, 3)
    # each tile carries its number box (dark) in the corner and a face elsewhere
    assert img[2:10, 2:10].mean() < 60 and img[64:100, 40:90].std() > 10
    assert all(p.name.startswith("cluster_") for p in by_cluster)
    total = 0
    for p in by_cluster:
        h, w = cv2.imread(str(p)).shape[:2]
        total += (h // 128) * (w // 128)
    assert total >= n  # every capture is on some cluster sheet


def test_labels_statuses_and_facelist_export(fresh_ws, camera_runs, tmp_path, capsys):
    collect(fresh_ws, [camera_runs["cam1"]])
    store = fresh_ws.open_store()
    try:
        ids = [f.id for f in store.faces(status="candidate")]
    finally:
        store.close()
    root = str(fresh_ws.root)
    assert main(["-w", root, "label", str(ids[0]), str(ids[1]), "visitor"]) == 0
    assert main(["-w", root, "label", str(ids[2]), "--discard"]) == 0
    assert main(["-w", root, "label", str(ids[3]), "--not", "visitor"]) == 0
    assert main(["-w", root, "label", "99999", "visitor"]) == 2  # clear error, nothing changed
    assert "no face(s) 99999" in capsys.readouterr().err
    store = fresh_ws.open_store()
    try:
        assert [store.face(i).status for i in ids[:4]] == ["selected", "selected", "revoked", "candidate"]
        assert store.face(ids[0]).person_name == "visitor"
        with pytest.raises(StoreError, match="no person"):
            labels.label_not(store, [ids[3]], "nobody-like-this")
        assert labels.promote_selected(store) == ids[:2]
        assert store.face(ids[0]).status == "in_use"
    finally:
        store.close()
    out = tmp_path / "facelist.csv"
    assert main(["-w", root, "curate", "--facelist", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["name"] for r in rows] == ["visitor", "visitor"]
    assert rows[0]["status"] == "in_use" and rows[0]["event"] and rows[0]["dist"]
    capsys.readouterr()
    assert main(["-w", root, "label", str(ids[3]), "--stranger"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 face(s) kept as strangers (selected)\n")
    assert "1 face(s) reviewed as strangers; from 499 they set the next model's operating point" in out


def test_strangers_note_says_when_reviewed_strangers_take_over():
    from facefleet.train.thresholds import strangers_needed, strangers_take_over

    assert [strangers_needed(t) for t in (0.01, 0.05, 0.1)] == [499, 99, 49]
    assert strangers_take_over(499, 0.01) and not strangers_take_over(498, 0.01)
    assert labels.strangers_note(12, 0.01) == (
        "12 face(s) reviewed as strangers; from 499 they set the next model's operating point "
        "alone (target 1.00 %), until then they join the enrolled people's own trials."
    )
    assert labels.strangers_note(99, 0.05) == (
        "99 face(s) reviewed as strangers: they set the next model's operating point (target 5.00 %)."
    )
    assert labels.strangers_note(12, 0.01, people=3).startswith(
        "12 face(s) reviewed as strangers, about 3 people (the estimate counts each once); from 499"
    )
    one = labels.strangers_note(2, 0.01, people=1)
    assert one.startswith("2 face(s) reviewed as strangers, about 1 person (")
    assert labels.strangers_note(3, 0.01, people=3) == labels.strangers_note(3, 0.01)  # all different


def test_strangers_note_counts_people(fresh_ws, shared_data, tmp_path, capsys, monkeypatch):
    """Two ORL subjects' photos collected as crops and all kept as strangers: the note says
    they are a few people, grouped as training groups them, not one person per face."""
    crops = tmp_path / "crops"
    crops.mkdir()
    for subject in ("s21", "s22"):
        for photo in sorted((shared_data / "faces" / "orl" / subject).iterdir()):
            os.symlink(photo, crops / f"{subject}_{photo.name}")
    collect(fresh_ws, [crops])
    store = fresh_ws.open_store()
    try:
        ids = [str(f.id) for f in store.faces(status="candidate")]
    finally:
        store.close()
    assert len(ids) >= 15
    capsys.readouterr()
    assert main(["-w", str(fresh_ws.root), "label", *ids, "--stranger"]) == 0
    note = capsys.readouterr().out.splitlines()[1]
    got = re.match(rf"{len(ids)} face\(s\) reviewed as strangers, about (\d+) people \(", note)
    assert got and 2 <= int(got[1]) <= 4, note
    # the console remembers the grouping until a verdict changes which faces are strangers
    from facefleet.web.console import review
    from facefleet.web.console.app import Console

    console = Console(fresh_ws)
    emb = fresh_ws.engine().embedder.id
    store = fresh_ws.open_store()
    try:
        assert review._strangers_note(console, store, emb) == note
        monkeypatch.setattr(labels, "stranger_people", lambda *a: pytest.fail("grouped again"))
        assert review._strangers_note(console, store, emb) == note
        monkeypatch.undo()
        labels.label(store, [int(ids[0])], "now_enrolled")
        assert review._strangers_note(console, store, emb).startswith(f"{len(ids) - 1} face(s)")
    finally:
        store.close()


def test_schedule_files(fresh_ws, tmp_path, capsys):
    d = tmp_path / "units"
    assert main(["-w", str(fresh_ws.root), "schedule", "install", "--at", "03:00", "--dir", str(d)]) == 0
    timer = (d / "facefleet-autotrain.timer").read_text()
    service = (d / "facefleet-autotrain.service").read_text()
    assert "OnCalendar=*-*-* 03:00:00" in timer and "WantedBy=timers.target" in timer
    assert f"--workspace {fresh_ws.root} autotrain" in service and "Type=oneshot" in service
    assert "systemctl --user enable --now facefleet-autotrain.timer" in capsys.readouterr().out
    assert (
        main(["-w", str(fresh_ws.root), "schedule", "install", "--at", "4:30", "--crontab", "--dir", str(d)])
        == 0
    )
    assert (d / "facefleet-autotrain.crontab").read_text().startswith("30 4 * * * ")
    assert main(["-w", str(fresh_ws.root), "schedule", "install", "--at", "25:00", "--dir", str(d)]) == 2


def test_policy_config_and_judge():
    with pytest.raises(ConfigError, match="unknown key"):
        Policy.from_config({"min_acuracy": 0.9})
    with pytest.raises(ConfigError, match="true or false"):
        Policy.from_config({"promote_production": "yes"})
    p = Policy.from_config({"min_accuracy": 0.8, "min_improvement": 0.05})
    good = {
        "open_set_accuracy": 0.95,
        "unknown_false_accept_rate": 0.0,
        "known_false_reject_rate": 0.05,
        "known_faces": 20,
    }
    assert all(c.ok for c in judge(good, None, p))  # no production: floors only
    base = {**good, "open_set_accuracy": 0.93}
    failed = [c.name for c in judge(good, base, p) if not c.ok]
    assert failed == ["accuracy better by the minimum"]
    worse = {**good, "unknown_false_accept_rate": 0.2}
    assert "false accept <= ceiling" in [c.name for c in judge(worse, good, Policy()) if not c.ok]
    assert not all(c.ok for c in judge({"known_faces": 0}, None, Policy()))


def test_collect_bad_input_is_a_clear_error(fresh_ws, tmp_path):
    with pytest.raises(FacefleetError, match="no such file"):
        collect(fresh_ws, [tmp_path / "missing"])
    bad = tmp_path / "crops"
    bad.mkdir()
    (bad / "broken.jpg").write_bytes(b"not a jpeg")
    report = collect(fresh_ws, [bad])
    assert report.added == [] and "broken.jpg" in report.skipped[0][0]
    assert os.listdir(fresh_ws.images_dir) in ([], ["collected"])


def test_set_distances_are_the_rms_of_every_pair():
    from facefleet.curate.clusters import nearest_sets, set_distances, set_stats

    rng = np.random.default_rng(3)
    A, B = rng.normal(size=(7, 5)), rng.normal(size=(4, 5))
    X = np.vstack([A, B])
    mean, var = set_stats(X, np.array([0] * 7 + [1] * 4), 2)
    brute = np.sqrt(((A[:, None, :] - B[None, :, :]) ** 2).sum(-1).mean())
    assert set_distances(mean[:1], var[:1], mean[1:], var[1:])[0, 0] == pytest.approx(brute)
    best, near = nearest_sets(np.array([[0.2, 0.1, 0.7], [0.9, 0.8, 0.3]]), 0.5, exclude=np.array([1, -1]))
    assert best.tolist() == [0, 2] and near.tolist() == [0.2, 0.3]
    assert nearest_sets(np.array([[0.6, 0.7]]), 0.5)[0].tolist() == [-1]


def test_clusters_say_whom_they_look_like(fresh_ws, shared_data, tmp_path, capsys):
    """ORL s5 enrolled from 5 photos; crops of s5's other photos and of s7 and s40 collected
    and clustered with a cut tight enough to split a person: the s5 cluster looks like s5 (in
    the library and in ``clusters list``) until a reviewer says "not s5", nobody else's does,
    and a split person's clusters point at each other."""
    from facefleet.curate import clusters as cl

    orl = shared_data / "faces" / "orl"
    s5 = sorted((orl / "s5").iterdir())
    assert main(["-w", str(fresh_ws.root), "enroll", "s5", *map(str, s5[:5])]) == 0
    crops = tmp_path / "crops"
    crops.mkdir()
    for photo in s5[5:]:
        os.symlink(photo, crops / f"s5_{photo.name}")
    for subject in ("s7", "s40"):
        for photo in sorted((orl / subject).iterdir()):
            os.symlink(photo, crops / f"{subject}_{photo.name}")
    collect(fresh_ws, [crops])
    emb = fresh_ws.engine().embedder.id
    store = fresh_ws.open_store()
    try:
        cl.update_clusters(store, emb, threshold=0.3)
        who = {}  # cluster id -> the subjects of its faces
        for info in cl.clusters(store, emb):
            who[info.id] = {Path(f.meta["source"]).name.split("_")[0] for f in info.faces}
        assert all(len(s) == 1 for s in who.values()), who  # a tight cut mixes nobody
        hints = cl.looks_like(store, emb, sorted(who))
        enrolled = store.training_set(emb)
    finally:
        store.close()
    subject = {cid: next(iter(s)) for cid, s in who.items()}
    people = {cid: h.person for cid, hs in hints.items() for h in hs if h.person}
    assert people and set(people.values()) == {"s5"}
    assert {subject[cid] for cid in people} == {"s5"}  # only s5's own clusters look like s5
    own = [cid for cid, s in subject.items() if s == "s5"]
    assert own and all(cid in people for cid in own)  # and every one of them does
    pairs = [(cid, h.cluster) for cid, hs in hints.items() for h in hs if h.cluster is not None]
    assert pairs and all(subject[a] == subject[b] for a, b in pairs), (pairs, subject)
    for hs in hints.values():
        for h in hs:
            assert h.distance < cl.LOOKS_LIKE_DISTANCE
            if h.person:  # the face shown beside the name is one of the person's own
                assert h.face_id in enrolled.face_ids
    # one face at a time (the console's Candidates tab): s5's faces look like s5, no one else's do
    with fresh_ws.open_store() as store:
        index = cl.HintIndex.build(store, emb)
        faces = store.faces(status="candidate")
        vectors = store.embeddings(emb, [f.id for f in faces])
    near = index.people_near(np.stack([vectors[f.id] for f in faces]))
    for f, hit in zip(faces, near, strict=True):
        if Path(f.meta["source"]).name.startswith("s5_"):
            assert hit is not None and hit[0] == "s5" and hit[1] < cl.LOOKS_LIKE_DISTANCE
        else:
            assert hit is None, (f.meta["source"], hit)
    capsys.readouterr()
    assert main(["-w", str(fresh_ws.root), "clusters", "list"]) == 0
    rows = {int(line.split()[0]): line for line in capsys.readouterr().out.splitlines()[1:]}
    for cid in own:
        assert f"[looks like s5 ({hints[cid][0].distance:.2f})" in rows[cid]
    a, b = pairs[0]
    assert f"may be cluster {b} (" in rows[a]
    assert main(["-w", str(fresh_ws.root), "clusters", "show", str(own[0]), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["looks_like"]
    assert shown[0]["person"] == "s5" and shown[0]["face"] in enrolled.face_ids
    # a reviewer said "not s5" of every face of one s5 cluster: it stops saying s5
    with fresh_ws.open_store() as store:
        refused = cl.cluster(store, emb, own[0])
        labels.label_not(store, [f.id for f in refused.faces], "s5")
        again = cl.looks_like(store, emb, [own[0]])[own[0]]
    assert not any(h.person for h in again)
