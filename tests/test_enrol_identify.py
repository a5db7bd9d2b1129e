"""Enrolment and identification on real photos (../shared/data)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from facefleet.enrol import enroll, name_from_flat_file, plan_flat, plan_folder
from facefleet.identify import identify
from facefleet.store.export import face_database
from facefleet.workspace import Workspace


def _single_names(results):
    return {Path(r["path"]).parent.name: None for r in results}, [
        (Path(r["path"]).parent.name, [f["name"] for f in r["faces"]]) for r in results
    ]


def test_celebrities_all_identified(celebrity_workspace, celebrity_enrolment, faces_dir):
    report = celebrity_enrolment
    assert len(report.person_ids()) == 5
    assert len(report.accepted) >= 85
    assert all(o.reason for o in report.rejected)
    results = identify(celebrity_workspace, [faces_dir / "five_celebrity" / "val"])
    assert len(results) == 25
    wrong = [
        (r["path"], r["faces"])
        for r in results
        if [f["name"] for f in r["faces"]] != [Path(r["path"]).parent.name]
    ]
    assert wrong == []


def test_second_enrolment_embeds_nothing(celebrity_workspace, celebrity_enrolment):
    # celebrity_enrolment is a second pass over the same photos
    assert all(o.cached for o in celebrity_enrolment.outcomes)
    with celebrity_workspace.open_store() as store:
        assert len(store.faces()) == len(celebrity_enrolment.accepted)


def test_copies_go_to_few_shot_examples(celebrity_workspace, celebrity_enrolment):
    for person_id in celebrity_enrolment.person_ids().values():
        assert len(list((celebrity_workspace.few_shot_dir / person_id).iterdir())) >= 10


def test_few_shot_gallery(knn_workspace, faces_dir):
    test = faces_dir / "examples" / "knn_examples" / "test"
    (result,) = identify(knn_workspace, [test / "obama_and_biden.jpg"])
    names = [f["name"] for f in result["faces"]]
    assert "obama" in names and "biden" in names
    assert len(result["faces"]) == 3 and names.count(None) == 1  # the child is nobody enrolled
    (kit,) = identify(knn_workspace, [test / "kit_with_rose.jpg"])
    assert sorted(f["name"] for f in kit["faces"]) == ["kit_harington", "rose_leslie"]
    strangers = identify(knn_workspace, [faces_dir / "five_celebrity" / "val"])
    named = [(r["path"], f["name"]) for r in strangers for f in r["faces"] if f["name"]]
    assert len(named) <= 1, named  # 25 photos of 5 people enrolled nowhere


def test_awkward_batch_goes_on(knn_workspace, faces_dir, tmp_path):
    ex = faces_dir / "examples"
    data = (ex / "obama.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    (tmp_path / "notes.jpg").write_text("not an image")
    files = [
        ex / "32bit.png",
        ex / "obama_partial_face.jpg",
        ex / "obama_partial_face2.jpg",
        ex / "obama-1080p.jpg",
        tmp_path / "cut.jpg",
        tmp_path / "notes.jpg",
        ex / "obama.jpg",
    ]
    results = identify(knn_workspace, files)
    by_name = {Path(r["path"]).name: r for r in results}
    assert len(results) == len(files)
    assert "truncated" in by_name["cut.jpg"]["error"]
    assert "not an image" in by_name["notes.jpg"]["error"]
    assert [f["name"] for f in by_name["obama.jpg"]["faces"]] == ["obama"]
    assert [f["name"] for f in by_name["obama-1080p.jpg"]["faces"]] == ["obama"]
    for name in ("32bit.png", "obama_partial_face.jpg", "obama_partial_face2.jpg"):
        assert by_name[name]["error"] is None
    json.dumps(results)  # the documented JSON shape serialises


def test_enrolment_rejections_and_cache(tmp_path, faces_dir):
    ws = Workspace.init(tmp_path / "ws")
    ex = faces_dir / "examples"
    (tmp_path / "junk.jpg").write_text("junk")
    report = enroll(
        ws,
        [
            ("pair", ex / "two_people.jpg"),
            ("junk", tmp_path / "junk.jpg"),
            ("lin", ex / "lin-manuel-miranda.png"),
            ("lin", ex / "lin-manuel-miranda.png"),
        ],
    )
    reasons = {Path(o.path).name: o.reason for o in report.rejected}
    assert reasons["two_people.jpg"].startswith("several faces (2)")
    assert reasons["junk.jpg"].startswith("unreadable")
    assert [o.accepted for o in report.outcomes if "lin" in o.path] == [True, True]
    with ws.open_store() as store:
        assert len(store.faces()) == 1  # listed twice, embedded once
    again = enroll(ws, [("pair", ex / "two_people.jpg")], largest=True)
    assert again.accepted and not again.outcomes[0].cached
    clash = enroll(ws, [("someone_else", ex / "lin-manuel-miranda.png")])
    assert "already enrolled as 'lin'" in clash.rejected[0].reason


def test_flat_names(tmp_path, faces_dir):
    assert name_from_flat_file(Path("john_doe_3.jpg")) == "john_doe"
    assert name_from_flat_file(Path("madonna.jpg")) == "madonna"
    assert name_from_flat_file(Path("ann-2.png")) == "ann"
    src = faces_dir / "examples" / "knn_examples" / "train"
    for person in src.iterdir():
        for i, photo in enumerate(sorted(person.iterdir()), 1):
            shutil.copy(photo, tmp_path / f"{person.name}_{i}{photo.suffix}")
    plan = plan_flat(tmp_path)
    assert {name for name, _ in plan} == {"alex_lacamoire", "biden", "kit_harington", "obama", "rose_leslie"}
    assert len(plan) == 9 and len(plan_folder(src)) == 9


def test_face_database_export(knn_workspace):
    with knn_workspace.open_store() as store:
        db = face_database(store)
    names = {p["name"]: p for p in db["people"]}
    assert db["total_people"] == 5 and names["obama"]["examples"] == 2
    assert db["id_to_name"][names["biden"]["id"]] == "biden"


def test_missing_workspace_says_so(tmp_path, monkeypatch):
    from facefleet.errors import NoWorkspaceError

    monkeypatch.delenv("FACEFLEET_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NoWorkspaceError, match="facefleet init"):
        Workspace.find()


def test_bad_config_yaml_is_a_clear_error(tmp_path):
    from facefleet.errors import ConfigError

    (tmp_path / "facefleet.yaml").write_text("vision: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        Workspace.open(tmp_path)
