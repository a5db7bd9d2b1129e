"""The console's small pure parts and the library functions it added (no server, no browser)."""

from __future__ import annotations

import base64
import os

import pytest

from facefleet.cli.main import main
from facefleet.errors import ConfigError, FacefleetError
from facefleet.fleet import snapshots
from facefleet.settings import Settings
from facefleet.web.console import accounts, files
from facefleet.web.console.models import summary_metrics, threshold_rule


def test_backoff_and_throttle():
    assert [accounts.backoff_seconds(n) for n in range(7)] == [0, 0, 0, 1, 2, 4, 8]
    assert accounts.backoff_seconds(40) == 60
    t = accounts.Throttle(free=2, cap=10)
    for _ in range(3):
        t.failed("ada", now=100.0)
    assert t.wait("ada", now=100.5) == pytest.approx(1.5)  # 2 s after the third
    assert t.wait("ada", now=102.0) == 0 and t.wait("bob", now=100.5) == 0
    t.succeeded("ada")
    assert t.wait("ada", now=100.5) == 0


def test_roles_order():
    admin = accounts.User("a", "admin", 1, "", None)
    viewer = accounts.User("v", "viewer", 1, "", None)
    assert admin.can("reviewer") and admin.can("viewer") and not viewer.can("reviewer")
    with pytest.raises(accounts.AccountError):
        accounts.check_role("root")
    with pytest.raises(accounts.AccountError, match="at least 8"):
        accounts.check_password("short")


def test_inside_refuses_escapes(tmp_path):
    root = tmp_path / "ws"
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.jpg").write_bytes(b"x")
    (root / "notes.txt").write_text("x")
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"x")
    os.symlink(outside, root / "images" / "link.jpg")
    assert files.inside(root, "images/a.jpg") == (root / "images" / "a.jpg").resolve()
    for bad in (
        "../secret.jpg",
        "images/../../secret.jpg",
        str(outside),
        "images/link.jpg",
        "notes.txt",
        "nope.jpg",
    ):
        with pytest.raises(files.PathRefusedError):
            files.inside(root, bad)


def test_thumbnails_of_photos_a_browser_cannot_show(tmp_path, shared_data):
    """An ORL photo (PGM) inside the workspace gets a JPEG thumbnail; the file itself is not
    served raw (no browser shows PGM), and a non-image is refused either way."""
    import cv2

    root = tmp_path / "ws"
    (root / "images").mkdir(parents=True)
    photo = root / "images" / "s1_1.pgm"
    photo.write_bytes((shared_data / "faces/orl/s1/1.pgm").read_bytes())
    thumb = files.thumbnail(root, root / "cache", 7, str(photo), "ab" * 32, (10, 20, 80, 100))
    assert thumb.name == "7-abababababab.jpg" and cv2.imread(str(thumb)).shape[2] == 3
    with pytest.raises(files.PathRefusedError, match="not an image"):
        files.inside(root, "images/s1_1.pgm")
    (root / "images" / "notes.txt").write_text("not a photo")
    with pytest.raises(files.PathRefusedError, match="not an image"):
        files.thumbnail(root, root / "cache", 8, str(root / "images/notes.txt"), "cd" * 32, (0, 0, 5, 5))


def test_crop_box_and_safe_name():
    assert files.crop_box((100, 100), (40, 40, 60, 60), margin=0.5) == (30, 30, 70, 70)
    assert files.crop_box((50, 80), (0, 0, 80, 50)) == (0, 0, 80, 50)
    assert files.safe_name("../../etc/pass wd.JPG", 3) == "003_pass_wd.jpg"
    assert files.safe_name("C:\\x\\evil.exe", 1) == "001_evil.img"


def test_settings_are_validated():
    def console(**values):
        return Settings.from_mapping({"console": values}).console

    assert console().max_upload_bytes == 20 * 1024 * 1024
    assert console(page_size=30).page_size == 30
    assert Settings.from_mapping({"fleet": {"known_hosts": "/k"}}).fleet.known_hosts == "/k"
    with pytest.raises(ConfigError, match="sesion_hours"):
        console(sesion_hours=3)
    with pytest.raises(ConfigError, match="max_upload_mb"):
        console(max_upload_mb=-1)
    with pytest.raises(ConfigError, match="page_size"):
        console(page_size="many")


def test_summary_metrics_finds_prefixed_keys():
    got = summary_metrics({"val_accuracy": 0.9, "far": 0.01, "val_known_false_reject_rate": 0.02})
    assert got == {"accuracy": 0.9, "strangers named": 0.01, "known rejected": 0.02}
    trained = {"target_far": 0.01, "gallery_far": 0.03, "stranger_far": 0.02, "far": 0.012, "frr": 0.1}
    assert summary_metrics(trained)["strangers named"] == 0.012  # the estimate behind the threshold
    assert summary_metrics({**trained, "val_unknown_false_accept_rate": 0.004})["strangers named"] == 0.004
    assert summary_metrics({}) == {"accuracy": None, "strangers named": None, "known rejected": None}


def test_threshold_heading_follows_the_bundles_rule():
    rule = {"rule": "centroid_margin", "margin": 0.6, "far_distance": 1.0, "max_distance": 0.6}
    head, says = threshold_rule(rule)
    assert head == "score threshold"
    assert "minus 0.6 x" in says and "at most 1)" in says and "at most 0.6; lower is surer" in says
    assert threshold_rule({})[0] == "distance threshold"  # bundles from before the margin rule


def test_snapshot_checks():
    jpeg = b"\xff\xd8\xff\xe0" + b"0" * 100 + b"\xff\xd9"
    assert snapshots.decode(base64.b64encode(jpeg).decode()) == jpeg
    with pytest.raises(FacefleetError, match="not a JPEG"):
        snapshots.decode(base64.b64encode(b"GIF89a").decode())
    with pytest.raises(FacefleetError, match="base64"):
        snapshots.decode("***")
    with pytest.raises(FacefleetError, match="more than"):
        snapshots.decode(base64.b64encode(b"\xff\xd8\xff" + b"0" * snapshots.MAX_BYTES).decode())
    assert snapshots.file_name("cam-1") == "cam-1.jpg"
    assert snapshots.file_name("../x").startswith("d-") and "/" not in snapshots.file_name("a/b")


def test_users_remove_photo_and_revoke_from_the_cli(knn_workspace, copy_workspace, capsys, monkeypatch):
    import io

    ws = copy_workspace(knn_workspace)
    w = ["-w", str(ws.root)]
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
    assert main([*w, "users", "add", "ada", "--role", "reviewer", "--password-stdin"]) == 0
    assert main([*w, "users", "role", "ada", "admin"]) == 0
    assert main([*w, "users", "list"]) == 0
    assert "ada\tadmin" in capsys.readouterr().out
    with ws.open_store() as st:
        person = next(p for p in st.people() if len(st.faces(person=p.id)) >= 2)
        faces = st.faces(person=person.id)
    copy = faces[0].image_path  # in the original workspace: the copy's store points there
    assert main([*w, "people", "remove-photo", str(faces[0].id)]) == 0
    assert main([*w, "people", "revoke", person.name]) == 0
    with ws.open_store() as st:
        left = st.faces(person=person.id)
    assert [f.id for f in left] == [f.id for f in faces[1:]]
    assert all(f.status == "revoked" for f in left)
    assert os.path.exists(copy)  # a file outside this workspace is never deleted
    assert main([*w, "people", "remove-photo", "999999"]) == 2
    assert main([*w, "users", "remove", "nobody"]) == 2
