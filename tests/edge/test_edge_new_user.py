"""What a new user tripped over with ``facefleet recognize`` (issue 15), run through the
command as a user runs it."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from facefleet.cli.main import main


def _events(folder: Path) -> list[dict]:
    from facefleet.edge.events import read_events

    return read_events(folder / "events.jsonl")


def test_photos_of_a_folder_are_not_tracked_across(edge_ws, faces_dir, tmp_path, capsys):
    """Item 4: each photo of a folder is its own frame; a face is never carried over."""
    ws, _ = edge_ws
    photos = tmp_path / "photos"
    photos.mkdir()
    val = faces_dir / "five_celebrity" / "val"
    for person in sorted(p for p in val.iterdir() if p.is_dir()):
        for photo in sorted(person.iterdir())[:2]:
            os.symlink(photo, photos / f"{person.name}_{photo.name}")
    out = tmp_path / "out"
    code = main(
        [
            "-w",
            str(ws.root),
            "recognize",
            str(photos),
            "--no-display",
            "--output-dir",
            str(out),
            "--no-unknowns",
        ]
    )
    assert code == 0
    summary = capsys.readouterr().out
    face_frames = int(summary.split("faces on ")[1].split(",")[0])
    events = _events(out)
    assert face_frames >= 8
    # every photo with a face gives its own decision(s), and no track spans two photos
    assert len({e["frame"] for e in events}) == face_frames
    tracks: dict[int, set[int]] = {}
    for e in events:
        tracks.setdefault(e["track_id"], set()).add(e["frame"])
    assert all(len(frames) == 1 for frames in tracks.values())


def test_a_source_with_no_frame_fails_clearly(edge_ws, tmp_path, capsys):
    """Item 5: no "0 frames" and exit 0 when the source never gives a frame."""
    import cv2

    empty = tmp_path / "empty.avi"
    writer = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
    writer.release()
    assert cv2.VideoCapture(str(empty)).isOpened()  # it opens, it just has no frame
    ws, _ = edge_ws
    code = main(
        ["-w", str(ws.root), "recognize", str(empty), "--no-display", "--output-dir", str(tmp_path / "o")]
    )
    captured = capsys.readouterr()
    assert code == 2
    assert "no frame to recognise" in captured.err and "0 frames" not in captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("facefleet: error:")]
    assert len(errors) == 1 and "Traceback" not in captured.err


def test_recognize_with_no_trained_model_says_how_to_make_one(tmp_path, hamilton, capsys):
    """Item 7: not "no public key at ...", but that there is no model yet and how to get one."""
    from facefleet.workspace import Workspace

    ws = Workspace.init(tmp_path / "fresh")
    assert main(["-w", str(ws.root), "recognize", str(hamilton), "--no-display"]) == 2
    err = capsys.readouterr().err
    assert (
        "no model yet" in err and "facefleet train" in err and "public key" not in err.split(":", 2)[-1][:30]
    )


def test_screenshots_are_listed_not_warned(edge_ws, hamilton, tmp_path, capsys, caplog):
    """Item 12: "screenshot saved" is not a warning; the command lists the files."""
    ws, _ = edge_ws
    caplog.set_level(logging.INFO)
    out = tmp_path / "out"
    args = ["-w", str(ws.root), "recognize", str(hamilton), "--no-display", "--output-dir", str(out)]
    assert (
        main([*args, "--screenshot-every", "10", "--max-frames", "20", "--no-events", "--no-unknowns"]) == 0
    )
    shots = [
        line.split(" ", 1)[1]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("screenshot: ")
    ]
    assert len(shots) == 2 and all(Path(s).is_file() for s in shots)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "screenshot" in r.getMessage()]
    json.dumps(shots)


def test_a_named_face_can_be_collected_and_corrected(edge_ws, hamilton, tmp_path, capsys):
    """Item 2: named faces keep a sampled crop (de-duplicated, rate-limited, marked "named"),
    so a face a camera named is collected, shown with its margin, and labelled ``--not``."""
    from testkit import clone_workspace

    ws = clone_workspace(edge_ws[0], tmp_path / "ws")
    # earlier runs on the shared workspace (BlazeFace names him within a few frames) left samples
    shutil.rmtree(ws.unknown_dir.parent / "named", ignore_errors=True)
    assert main(["-w", str(ws.root), "recognize", str(hamilton), "--no-display", "--device", "cam9"]) == 0
    summary = capsys.readouterr().out
    kept = int(summary.split(" named samples kept")[0].rsplit(" ", 1)[1])
    events = _events(ws.output_dir)
    sampled = [e for e in events if e["name"] and e["crop"]]
    assert kept >= 1 and sampled
    assert all(e["crop_kind"] == "named" and e["margin"] is not None for e in sampled)
    named_dir = ws.unknown_dir.parent / "named"
    assert len(list(named_dir.glob("named_*.jpg"))) == kept  # de-duplicated: not one per event
    side = json.loads(Path(sampled[0]["crop"]).with_suffix(".json").read_text())
    assert side["kind"] == "named" and side["name"] == sampled[0]["name"] and "margin" in side

    assert main(["-w", str(ws.root), "collect", str(ws.root / "few_shot_examples")]) == 0
    assert "skipped" in capsys.readouterr().out
    name = sampled[0]["name"]
    review = ["-w", str(ws.root), "curate", "--person", name, "--min-proba", "0", "--max-distance", "1"]
    assert main([*review, "--json"]) == 0
    cands = [c for c in json.loads(capsys.readouterr().out) if c["sample"] == "named"]
    assert cands and all(c["name"] == name and c["margin"] is not None for c in cands)
    assert main(review) == 0
    table = capsys.readouterr().out
    assert "named sample" in table and "margin" in table.splitlines()[0]
    assert main(["-w", str(ws.root), "label", str(cands[0]["id"]), "--not", name]) == 0
    capsys.readouterr()
    assert main([*review, "--json"]) == 0
    after = {c["id"]: c for c in json.loads(capsys.readouterr().out)}
    assert after[cands[0]["id"]]["not"] == [name]


def test_a_near_threshold_match_is_flagged_for_review(tmp_path, capsys):
    """Item 2: a named face within NEAR_MARGIN of its threshold is listed by ``curate`` whatever
    the proba filter, with its margin and a note (the 0.578-against-0.580 case)."""
    import numpy as np

    from facefleet.train.pipeline import current_embedder_id
    from facefleet.workspace import Workspace

    ws = Workspace.init(tmp_path / "w")
    with ws.open_store() as store:
        for i, (margin, proba) in enumerate(((0.002, 0.4), (0.3, 0.4))):
            image_id, _ = store.add_image(tmp_path / f"f{i}.jpg", source="test", sha256=f"{i:064d}")
            face = store.add_face(
                image_id,
                person_id=None,
                box=(0, 0, 80, 80),
                quality={"size_px": 80, "sharpness": 100.0, "frontalness": 0.9, "brightness": 120.0},
                status="candidate",
                detector="test",
                meta={"name": "elton_john", "dist": 0.578, "margin": margin, "proba": proba},
            )
            store.add_embedding(face, current_embedder_id(ws), np.full(128, i, np.float32))
    assert main(["-w", str(ws.root), "curate"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 2 and "near threshold (margin +0.002): check" in rows[1]
