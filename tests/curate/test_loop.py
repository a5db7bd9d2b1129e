"""The learning loop end to end on real data: recognise the pbs clip on two cameras with model
v1, collect, cluster, label one cluster with a new name, autotrain, validate, promote; a "not"
label moves a threshold; two autotrain runs at once."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from facefleet.curate import clusters as cl
from facefleet.curate import labels
from facefleet.curate.autotrain import autotrain
from facefleet.curate.collect import collect
from facefleet.registry.catalog import bundle_path
from facefleet.registry.inference import load_bundle
from facefleet.registry.keys import load_public_key
from facefleet.registry.versions import audit_log, resolve_version
from facefleet.train.pipeline import current_embedder_id

NEW = "pbs_speaker"


def _tree_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _bundle(ws, ref):
    return load_bundle(bundle_path(ws, ref), load_public_key(ws.keys_dir / "signing_key.pub.pem"))


@pytest.fixture(scope="module")
def loop(base_ws, camera_runs, tmp_path_factory, shared_data):
    """Collect both cameras, cluster, label the biggest cluster (one capture held out),
    autotrain with a held-out test folder of real photos. Returns a dict of what happened."""
    ws, first = base_ws
    v1_before = _tree_hashes(first.bundle_dir)
    test = tmp_path_factory.mktemp("heldout")
    for person, photo in (
        ("obama", "obama1.jpg"),
        ("alex_lacamoire", "alex_lacamoire1.jpg"),
        ("kit_harington", "johnsnow_test1.jpg"),
    ):
        (test / person).mkdir()
        os.symlink(shared_data / "faces/examples/knn_examples/test" / photo, test / person / photo)
    cfg = yaml.safe_load(ws.config_path.read_text())
    cfg["validate"] = {"test_dir": str(test), "promote_production": True}
    ws.config_path.write_text(yaml.safe_dump(cfg))
    ws = type(ws).open(ws.root)

    first_collect = collect(ws, list(camera_runs.values()))
    again = collect(ws, list(camera_runs.values()))
    emb = current_embedder_id(ws)
    store = ws.open_store()
    try:
        captures = store.faces(status="candidate")
        placed = cl.update_clusters(store, emb)
        found = cl.clusters(store, emb)
        big = found[0]
        held_out = big.faces[-1].id
        labelled = cl.label_cluster(store, emb, big.id, NEW, exclude=[held_out])
        vecs = {f.id: store.embedding(f.id, emb) for f in captures}
    finally:
        store.close()
    result = autotrain(ws)
    return dict(
        ws=ws,
        first=first,
        v1_before=v1_before,
        collected=first_collect,
        again=again,
        captures=captures,
        placed=placed,
        clusters=found,
        big=big,
        held_out=held_out,
        labelled=labelled,
        vecs=vecs,
        result=result,
        emb=emb,
    )


def test_collect_keeps_provenance_and_imports_nothing_twice(loop, camera_runs):
    n_files = sum(len(list((d / "few_shot_examples/unknown").glob("*.jpg"))) for d in camera_runs.values())
    assert len(loop["collected"].added) == n_files == len(loop["captures"])
    assert loop["again"].added == [] and loop["again"].duplicates == n_files
    metas = [f.meta for f in loop["captures"]]
    assert {m["device"] for m in metas} == {"cam1", "cam2"}
    for m in metas:
        assert m["origin"] == "events" and m["event_time"] and m["source"].endswith(".mp4")
        assert m["name"] is None and m["candidate"] and isinstance(m["dist"], float)


def test_clusters_follow_people(loop):
    found, vecs = loop["clusters"], loop["vecs"]
    n = len(loop["captures"])
    assert sorted(loop["placed"]) == sorted(f.id for f in loop["captures"])
    assert sum(len(c.faces) for c in found) == n
    assert len(found) <= n / 2, [len(c.faces) for c in found]  # people recur across cameras
    assert len(loop["big"].faces) >= 3 and set(loop["big"].devices) == {"cam1", "cam2"}
    for c in found:  # members of a cluster are close, different clusters are apart
        assert c.spread < 0.6
    centroids = [np.mean([vecs[f.id] for f in c.faces], axis=0) for c in found]
    for i in range(len(found)):
        for j in range(i + 1, len(found)):
            assert np.linalg.norm(centroids[i] - centroids[j]) > 0.4


def test_cluster_ids_stable_after_recluster(loop):
    ws, emb = loop["ws"], loop["emb"]
    store = ws.open_store()
    try:
        before = {c.id: [f.id for f in c.faces] for c in cl.clusters(store, emb, include_closed=True)}
        assert cl.update_clusters(store, emb) == []
        after = {c.id: [f.id for f in c.faces] for c in cl.clusters(store, emb, include_closed=True)}
    finally:
        store.close()
    assert before == after


def test_autotrain_new_version_knows_the_person(loop):
    ws, first, res = loop["ws"], loop["first"], loop["result"]
    assert res.state == "promoted", res.lines
    assert res.moved_to_in_use == len(loop["labelled"])
    assert res.version == first.version + 1
    new = _bundle(ws, res.version)
    assert NEW in new.labels
    held = loop["vecs"][loop["held_out"]]
    assert new.classify(held[None])[0].name == NEW  # a capture it was not trained on
    assert _bundle(ws, first.version).classify(held[None])[0].name is None
    # the labelled faces are now in use, the held-out one is still a candidate
    store = ws.open_store()
    try:
        assert {f.status for f in store.faces(person=NEW)} == {"in_use"}
        assert store.face(loop["held_out"]).status == "candidate"
    finally:
        store.close()
    # one log line per step, in order
    steps = [line.split(": ", 1)[1].split(":")[0] for line in res.lines]
    assert steps == ["check", "select", "train", "validate", "promote"]
    assert (ws.root / "autotrain.log").read_text().count("autotrain[") >= 5


def test_old_version_unchanged_and_audit_shows_the_move(loop):
    ws, first, res = loop["ws"], loop["first"], loop["result"]
    assert _tree_hashes(first.bundle_dir) == loop["v1_before"]
    moves = [e for e in audit_log(ws) if e["to_version"] == res.version]
    assert {e["alias"] for e in moves} == {"experimental", "validated", "production"}
    prod = [e for e in moves if e["alias"] == "production"][0]
    assert prod["from_version"] == first.version and "validated:" in prod["why"]
    assert resolve_version(ws, "@production").version == res.version


def test_validate_table_and_changed_decisions(loop):
    from facefleet.curate.validate import format_report, validate

    ws, first, res = loop["ws"], loop["first"], loop["result"]
    report = validate(ws, str(res.version), against=str(first.version))
    assert report.passed
    held = report.results["held-out"]
    for model in ("candidate", "production"):  # the held-out photos: both know these people
        assert held[model].metrics["open_set_accuracy"] == 1.0
    changed = {c.item: c for c in report.changes}
    key = f"replay face {loop['held_out']}"
    assert changed[key].before is None and changed[key].after == NEW
    text = format_report(report)
    assert "[held-out]" in text and "[replay]" in text and NEW in text and "PASSED" in text


def test_not_label_moves_threshold_and_decision(loop, tmp_path, shared_data):
    """A photo of Obama on a screen is "not obama" for an access camera: his threshold drops
    below its distance and the new version no longer accepts it."""
    ws = loop["ws"]
    crops = tmp_path / "crops"
    crops.mkdir()
    os.symlink(shared_data / "faces/examples/obama3.jpg", crops / "screen.jpg")
    added = collect(ws, [crops]).added
    assert len(added) == 1
    store = ws.open_store()
    try:
        vec = store.embedding(added[0], loop["emb"])
        labels.label_not(store, added, "obama")
        assert store.negative_set(loop["emb"])[1] == ["obama"]
    finally:
        store.close()
    before = _bundle(ws, "@production")
    assert before.classify(vec[None])[0].name == "obama"
    res = autotrain(ws)  # a new negative is news enough to train
    assert res.version is not None, res.lines
    after = _bundle(ws, res.version)
    dist = after.classify(vec[None])[0].distance
    assert after.thresholds["obama"] < before.thresholds["obama"]
    assert after.thresholds["obama"] < dist
    assert after.classify(vec[None])[0].name is None


def test_two_autotrain_processes_one_exits_cleanly(loop):
    ws = loop["ws"]
    cmd = [sys.executable, "-m", "facefleet.cli.main", "-w", str(ws.root), "autotrain", "--force"]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lock = ws.root / ".autotrain.lock"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "pid" not in (lock.read_text() if lock.exists() else ""):
        time.sleep(0.1)
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    out1, err1 = first.communicate(timeout=300)
    assert second.returncode == 0, second.stderr
    assert "holds the lock" in second.stdout and "train:" not in second.stdout
    assert first.returncode in (0, 1), err1
    assert "train:" in out1
