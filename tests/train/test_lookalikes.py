"""Look-alikes: the enrolled people the stranger estimate takes for one another.

The pure part on a made-up gallery whose geometry is known; the real part on ORL and the five
celebrities with one ORL subject enrolled a second time under another name, the mistake the
list exists to catch, through ``facefleet train`` and ``models show``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from facefleet.cli.main import main
from facefleet.registry.inference import pairwise_distances
from facefleet.train.lookalikes import LookAlike, describe, look_alikes, summary, with_face_ids
from facefleet.train.thresholds import OpenSetParams, centroids, fit_open_set


def _gallery(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """30 people, 3 faces each, on a sphere of radius 0.25 around means about 0.5 apart (as
    dlib's are); person 1's mean is person 0's moved by 0.05 (one person under two names)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(30, 128))
    means *= 0.35 / np.linalg.norm(means, axis=1, keepdims=True)
    means[1] = means[0] + 0.05 * rng.normal(size=128) / np.sqrt(128)
    noise = rng.normal(size=(90, 128))
    X = np.repeat(means, 3, axis=0) + 0.25 * noise / np.linalg.norm(noise, axis=1, keepdims=True)
    y = np.repeat(np.arange(30), 3)
    return X, y, [f"p{i:02d}" for i in range(30)]


def test_the_person_enrolled_twice_comes_first_and_both_ways():
    X, y, labels = _gallery()
    params = OpenSetParams(target_far=0.05)
    fit = fit_open_set(pairwise_distances(X, centroids(X, y, 30)), y, params)
    found = look_alikes(X, y, labels, fit.gallery, fit.gallery_named, params.max_threshold, rows=3)
    assert {(found[0].person, found[0].taken_for), (found[1].person, found[1].taken_for)} == {
        ("p00", "p01"),
        ("p01", "p00"),
    }
    assert found[0].both_ways and found[1].both_ways
    # every trial of the pair is named: they are the estimate's false accepts
    assert found[0].named == found[0].trials == 3 and found[1].named == 3
    # then every other pair with a named trial, and the three closest of the rest
    named = [la for la in found if la.named]
    assert sum(la.named for la in named) == fit.gallery_named.sum() == 6  # nobody else's
    rest = found[len(named) :]
    assert len(rest) == 3 and not any(la.named for la in rest)
    assert [la.score for la in found] == sorted(la.score for la in found)
    for la in found:
        assert y[la.face] == labels.index(la.person) and y[la.other_face] == labels.index(la.taken_for)
        theirs = np.flatnonzero(y == y[la.other_face])
        d = np.linalg.norm(X[theirs] - X[la.face], axis=1)
        assert theirs[np.argmin(d)] == la.other_face
    assert "p00 taken for p01: 3 of 3 photos named as them" in describe(found[0]) + describe(found[1])
    assert summary(found, shown=2)[0].startswith(
        f"look-alikes: {len(named)} pair(s) of enrolled people named"
    )
    assert summary(found, shown=2)[-1] == f"  ... {len(found) - 2} more in 'facefleet models show'"
    ids = list(range(1000, 1090))
    moved = with_face_ids(found, ids)
    assert [la.face for la in moved] == [1000 + la.face for la in found]
    assert with_face_ids(found, None)[0].face is None
    assert LookAlike.from_dict({**found[0].as_dict(), "added_later": 1}) == found[0]


def test_an_accepted_pair_stays_listed_but_is_no_longer_advice(tmp_path):
    from facefleet.errors import StoreError
    from facefleet.store import Store
    from facefleet.train.lookalikes import accept, accepted_pairs, mark_accepted

    X, y, labels = _gallery()
    params = OpenSetParams(target_far=0.05)
    fit = fit_open_set(pairwise_distances(X, centroids(X, y, 30)), y, params)
    found = look_alikes(X, y, labels, fit.gallery, fit.gallery_named, params.max_threshold, rows=3)
    store = Store(tmp_path / "store.db")
    for name in labels:
        store.add_person(name)
    accept(store, "p01", "p00", by="test")  # either way round: one pair
    assert accepted_pairs(store) == {frozenset({"p00", "p01"})}
    marked = mark_accepted(found, accepted_pairs(store))
    assert [la.accepted for la in marked] == [{la.person, la.taken_for} == {"p00", "p01"} for la in found]
    assert sum(la.accepted for la in marked) == 2 and len(marked) == len(found)
    assert describe(marked[0]).endswith("; accepted as two people")
    others = sum(1 for la in found if la.named) - 2
    head = summary(marked)[0]
    if others:
        assert head.startswith(f"look-alikes: {others} pair(s)") and head.endswith(
            "; 2 more accepted as two people"
        )
    else:
        assert head == "look-alikes: 2 pair(s) named as one another, all accepted as two people"
    with pytest.raises(StoreError, match="same person"):
        accept(store, "p00", "p00")
    accept(store, "p00", "p01", undo=True)
    assert accepted_pairs(store) == set()
    accept(store, "p00", "p01")
    store.remove_person("p01")  # the mark goes with either person
    assert accepted_pairs(store) == set()
    assert store.conn.execute("SELECT COUNT(*) FROM lookalike_accepts").fetchone()[0] == 0


def test_a_person_enrolled_twice_is_listed_by_train_and_models_show(
    celebrity_orl_workspace, copy_workspace, faces_dir, capsys
):
    from facefleet.enrol import enroll

    ws = copy_workspace(celebrity_orl_workspace)
    again = [("orl_s1_again", faces_dir / "orl" / "s1" / f"{i}.pgm") for i in (8, 9, 10)]
    assert all(o.accepted for o in enroll(ws, again).outcomes)
    assert main(["-w", str(ws.root), "keys", "init"]) == 0
    capsys.readouterr()
    assert main(["-w", str(ws.root), "train", "--method", "centroid"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if "look-alikes:" in line)
    assert "pair(s) of enrolled people named as one another" in lines[head], out
    # the one person under two names is the closest pair, both ways, and named
    top = {lines[head + 1].strip().split(":")[0], lines[head + 2].strip().split(":")[0]}
    assert top == {"orl_s1 taken for orl_s1_again", "orl_s1_again taken for orl_s1"}, out
    assert "both ways" in lines[head + 1] and "named as them" in lines[head + 1]

    assert main(["-w", str(ws.root), "train", "--method", "centroid", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    pairs = res["lookalikes"]
    assert {pairs[0]["person"], pairs[0]["taken_for"]} == {"orl_s1", "orl_s1_again"}
    with ws.open_store() as st:
        faces = {
            f.id: f for f in st.faces_by_id([p["face"] for p in pairs] + [p["other_face"] for p in pairs])
        }
    for p in pairs:  # the faces are the store's, of the right people
        assert faces[p["face"]].person_name == p["person"]
        assert faces[p["other_face"]].person_name == p["taken_for"]
    named = sum(p["named"] for p in pairs)
    assert named == round(res["metrics"]["gallery_far"] * res["metrics"]["gallery_trials"])

    assert main(["-w", str(ws.root), "models", "show", str(res["version"])]) == 0
    shown = capsys.readouterr().out
    assert "look-alikes (enrolled people played as strangers, the closest pairs):" in shown
    for p in pairs:
        assert describe(LookAlike.from_dict(p)) in shown

    # compared and found to be two people (they are not): marked, live in models show and in
    # the next training, and taken back
    version = res["version"]
    assert main(["-w", str(ws.root), "people", "accept-alike", "orl_s1", "orl_s1_again"]) == 0
    assert "accepted as two people" in capsys.readouterr().out
    assert main(["-w", str(ws.root), "models", "show", str(version)]) == 0
    shown = capsys.readouterr().out.splitlines()
    marked = [line for line in shown if line.endswith("; accepted as two people")]
    assert len(marked) == 2 and all("orl_s1_again" in line for line in marked)
    assert main(["-w", str(ws.root), "train", "--method", "centroid", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)["lookalikes"]
    assert [p["accepted"] for p in again] == [
        {p["person"], p["taken_for"]} == {"orl_s1", "orl_s1_again"} for p in again
    ]
    assert main(["-w", str(ws.root), "people", "accept-alike", "orl_s1", "orl_s1_again", "--undo"]) == 0
    capsys.readouterr()
    assert main(["-w", str(ws.root), "models", "show", str(version)]) == 0
    assert "accepted as two people" not in capsys.readouterr().out

    with ws.open_store() as st:
        twice = {f.id for f in st.faces(person=st.person("orl_s1_again").id)}
    # the fix: one name merged into the other, trained again; the pair is gone and the
    # threshold it held down comes back up
    assert main(["-w", str(ws.root), "people", "merge", "orl_s1_again", "orl_s1"]) == 0
    assert "merged orl_s1_again into orl_s1: 3 faces moved" in capsys.readouterr().out
    assert main(["-w", str(ws.root), "train", "--method", "centroid", "--json"]) == 0
    fixed = json.loads(capsys.readouterr().out)
    assert "orl_s1_again" not in fixed["thresholds"]
    assert not any("orl_s1_again" in (p["person"], p["taken_for"]) for p in fixed["lookalikes"])
    assert fixed["metrics"]["system_threshold"] > res["metrics"]["system_threshold"] + 0.1
    assert fixed["metrics"]["frr"] < res["metrics"]["frr"] / 4

    # and taken back: the name and its three faces return, and training finds the pair again
    assert main(["-w", str(ws.root), "people", "merges"]) == 0
    assert "orl_s1_again into orl_s1: 3 faces; faces with orl_s1" in capsys.readouterr().out
    assert main(["-w", str(ws.root), "people", "unmerge", "orl_s1_again"]) == 0
    assert "orl_s1_again" in capsys.readouterr().out
    with ws.open_store() as st:
        assert {f.id for f in st.faces(person=st.person("orl_s1_again").id)} == twice
        assert len(st.faces(person=st.person("orl_s1").id)) == 7


def test_a_run_that_logged_none_has_none(tmp_path):
    import mlflow

    from facefleet.registry import tracking
    from facefleet.train.lookalikes import ARTIFACT, of_version
    from facefleet.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws")
    pair = LookAlike("a", "b", 1, 3, 0.1, 0.4, 7, 9)
    with tracking.start_run(ws, "older") as older:
        mlflow.log_metric("far", 0.01)
    with tracking.start_run(ws, "newer") as newer:
        mlflow.log_dict([pair.as_dict(), {"person": "a row of a later format"}], ARTIFACT)

    class Info:  # what of_version reads of a registered version
        def __init__(self, run_id):
            self.run_id = run_id

    assert of_version(ws, Info(older.info.run_id)) is None
    assert of_version(ws, Info(newer.info.run_id)) == [pair]
    assert of_version(ws, Info(None)) is None
