"""What a new user tripped over in the quality gate (issue 15 item 8), through ``facefleet enroll``."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from facefleet.cli.main import main
from facefleet.workspace import Workspace


def _enrol(ws: Workspace, capsys, *args: str) -> list[dict]:
    capsys.readouterr()
    main(["-w", str(ws.root), "enroll", *args, "--json"])
    return json.loads(capsys.readouterr().out)["photos"]


def test_a_dark_photo_is_too_dark_not_too_blurred(tmp_path, faces_dir, capsys):
    """obama.jpg dimmed to 20 %: the reason is the light, checked before sharpness."""
    ws = Workspace.init(tmp_path / "ws")
    rgb = np.asarray(Image.open(faces_dir / "examples" / "obama.jpg").convert("RGB"), dtype=np.float32)
    Image.fromarray((rgb * 0.2).astype(np.uint8)).save(tmp_path / "dim.png")
    (out,) = _enrol(ws, capsys, "obama", str(tmp_path / "dim.png"))
    assert not out["accepted"] and out["reason"].startswith("too dark"), out["reason"]
    assert "blurred" not in out["reason"]


def test_greyscale_faces_are_flagged_and_refused_only_on_request(tmp_path, faces_dir, capsys):
    ws = Workspace.init(tmp_path / "ws")
    grey = faces_dir / "orl" / "s1" / "1.pgm"
    colour = faces_dir / "examples" / "obama.jpg"
    outs = _enrol(ws, capsys, "someone", str(grey), str(colour))
    assert [o["accepted"] for o in outs] == [True, True]
    assert [o["quality"]["greyscale"] for o in outs] == [True, False]
    assert main(["-w", str(ws.root), "people", "show", "someone"]) == 0
    assert "greyscale/IR" in capsys.readouterr().out

    strict = Workspace.init(tmp_path / "strict")
    cfg = strict.root / "facefleet.yaml"
    cfg.write_text(cfg.read_text() + "\nquality:\n  reject_greyscale: true\n")
    outs = _enrol(strict, capsys, "someone", str(grey), str(colour))
    assert [o["accepted"] for o in outs] == [False, True]
    assert "greyscale or IR" in outs[0]["reason"]


def test_a_frontalness_gate_is_on_by_default(tmp_path, faces_dir, capsys):
    """The default (measured by bench/bench_quality_gate.py: it loses none of 1,192 shared
    one-face photos) keeps frontal portraits; a stricter setting refuses a face, saying why."""
    from facefleet.settings import QualitySettings

    MIN_FRONTALNESS = QualitySettings().min_frontalness

    photos = [str(faces_dir / "examples" / n) for n in ("obama.jpg", "biden.jpg")]
    ws = Workspace.init(tmp_path / "ws")
    assert ws.settings.quality.min_frontalness == MIN_FRONTALNESS > 0
    outs = _enrol(ws, capsys, "someone", *photos)
    assert all(o["accepted"] for o in outs), [o["reason"] for o in outs]
    fronts = sorted(o["quality"]["frontalness"] for o in outs)
    assert fronts[0] >= MIN_FRONTALNESS

    strict = Workspace.init(tmp_path / "strict")
    cfg = strict.root / "facefleet.yaml"
    cfg.write_text(cfg.read_text() + f"\nquality:\n  min_frontalness: {(fronts[0] + fronts[1]) / 2}\n")
    outs = _enrol(strict, capsys, "someone", *photos)
    refused = [o for o in outs if not o["accepted"]]
    assert len(refused) == 1 and refused[0]["reason"].startswith("not frontal enough")
