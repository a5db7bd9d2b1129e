"""What a new user tripped over with ``facefleet recognize`` (issue 15), run through the
command as a user runs it."""

from __future__ import annotations

import json
import logging
import os
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
    assert len(captured.err.strip().splitlines()) == 1


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
