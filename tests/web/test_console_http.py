"""The console's guards over plain HTTP against the real server: roles on the server, CSRF on
every state-changing request, forged sessions, paths outside the workspace, upload checks and
the sign-in back-off; the device API keeps its bearer tokens."""

from __future__ import annotations

import os

import httpx
from console_helpers import PASSWORDS, login_token, signed_in


def _aliases(ws):
    from facefleet.registry.versions import audit_log, list_versions

    return [(i.version, i.aliases) for i in list_versions(ws)], len(audit_log(ws))


def test_viewer_promote_is_forbidden_and_changes_nothing(server, console_ws):
    before = _aliases(console_ws)
    client, csrf = signed_in(server, "vic")
    r = client.post(
        "/models/promote", data={"csrf": csrf, "version": "1", "alias": "experimental", "why": "x"}
    )
    assert r.status_code == 403 and "admin role" in r.text
    r = client.post("/models/rollback", data={"csrf": csrf, "alias": "production", "why": "x"})
    assert r.status_code == 403
    r = client.post("/review/clusters/1/discard", data={"csrf": csrf})
    assert r.status_code == 403 and "reviewer role" in r.text
    r = client.post("/fleet/deploy", data={"csrf": csrf, "alias": "production", "group": "cams"})
    assert r.status_code == 403
    assert _aliases(console_ws) == before


def test_requests_without_the_csrf_token_are_refused(server, console_ws):
    before = _aliases(console_ws)
    client, csrf = signed_in(server, "ada")
    data = {"version": "1", "alias": "experimental", "why": "no token"}
    assert client.post("/models/promote", data=data).status_code == 403
    assert client.post("/models/promote", data={**data, "csrf": "0" * 64}).status_code == 403
    r = client.post("/models/promote", data=data, headers={"X-CSRF-Token": csrf + "0"})
    assert r.status_code == 403 and "CSRF" in r.text
    assert client.post("/logout").status_code == 403
    assert _aliases(console_ws) == before
    # the token of another session does not work either
    other, other_csrf = signed_in(server, "ada")
    assert other_csrf != csrf
    assert client.post("/models/promote", data={**data, "csrf": other_csrf}).status_code == 403


def test_wrong_or_missing_session_is_refused(server, console_ws):
    anon = httpx.Client(base_url=server, timeout=30, follow_redirects=False)
    for page in ("/review", "/people", "/models", "/fleet", "/events", "/thumbs/1.jpg"):
        r = anon.get(page)
        assert r.status_code == 303 and r.headers["location"].startswith("/login"), page
    assert anon.post("/models/promote", data={"version": "1", "alias": "production"}).status_code == 401
    client, _ = signed_in(server, "ada")
    real = client.cookies["facefleet_session"]
    payload, _, sig = real.rpartition(".")
    forged = httpx.Client(base_url=server, timeout=30, follow_redirects=False)
    for value in (real[:-2] + ("AA" if real[-2:] != "AA" else "BB"), "e30.forged.signature", payload + ".x"):
        forged.cookies.set("facefleet_session", value)
        assert forged.get("/models").status_code == 303
    # a cookie signed with the real secret stops working when the user's password changes
    from facefleet.web.console import accounts

    with console_ws.open_store() as st:
        accounts.set_password(st, "ada", "admin-pass-2")
    assert client.get("/models").status_code == 303
    with console_ws.open_store() as st:
        accounts.set_password(st, "ada", "admin-pass-1")


def test_paths_outside_the_workspace_are_refused(server, console_ws, tmp_path):
    client, _ = signed_in(server, "vic")
    secret = tmp_path / "outside.jpg"
    secret.write_bytes(b"\xff\xd8\xff secret \xff\xd9")
    link = console_ws.root / "images" / "escape.jpg"
    os.symlink(secret, link)
    try:
        for path in (
            "/files/../facefleet.yaml",
            "/files/%2e%2e/%2e%2e/etc/passwd",
            "/files/images/..%2F..%2F..%2Fetc%2Fpasswd",
            "/files/" + str(secret),
            "/files//etc/passwd",
            "/files/images/escape.jpg",
            "/files/facefleet.yaml",
            "/files/keys/console_secret",
        ):
            r = client.get(path)
            assert r.status_code in (404, 400), (path, r.status_code)
            assert b"secret" not in r.content and b"root:" not in r.content
    finally:
        link.unlink()
    with console_ws.open_store() as st:  # a collected capture: its copy is in this workspace
        face = next(f for f in st.faces() if f.image_path.startswith(str(console_ws.root)))
    rel = os.path.relpath(face.image_path, console_ws.root)
    r = client.get("/files/" + rel)
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/")


def test_uploads_are_checked(server, console_ws):
    client, csrf = signed_in(server, "rita")
    with console_ws.open_store() as st:
        people = len(st.people())
        images = st.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    files = [("photos", ("report.pdf", b"%PDF-1.4 not a photo", "application/pdf"))]
    r = client.post("/people/enrol", data={"csrf": csrf, "name": "Nobody Real"}, files=files)
    assert r.status_code == 422
    assert "not an image" in r.text and "Nobody Real is not enrolled" in r.text
    big = [("photos", ("big.jpg", b"\xff\xd8" + b"0" * (21 * 1024 * 1024), "image/jpeg"))]
    r = client.post("/people/enrol", data={"csrf": csrf, "name": "Nobody Real"}, files=big)
    assert r.status_code == 413 and "limit" in r.text
    with console_ws.open_store() as st:
        assert len(st.people()) == people
        assert st.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0] == images


def test_sign_in_needs_its_form_token(server):
    client = httpx.Client(base_url=server, timeout=30, follow_redirects=False)
    good = {"username": "vic", "password": PASSWORDS["vic"]}
    r = client.post("/login", data=good)
    assert r.status_code == 403 and "facefleet_session" not in r.cookies
    r = client.post("/login", data={**good, "csrf": "0" * 64})
    assert r.status_code == 403
    assert client.post("/login", data={**good, **login_token(client)}).status_code == 303


def test_failed_sign_ins_are_slowed_down(server):
    client = httpx.Client(base_url=server, timeout=30, follow_redirects=False)
    token = login_token(client)
    codes = [
        client.post("/login", data={"username": "nobody-here", "password": f"guess{i}", **token}).status_code
        for i in range(5)
    ]
    assert codes[:3] == [401, 401, 401] and 429 in codes[3:], codes
    r = client.post("/login", data={"username": "nobody-here", "password": "guess", **token})
    assert r.status_code == 429 and "try again in" in r.text


def test_device_api_keeps_bearer_tokens(server, console_ws):
    from facefleet.fleet import records

    client, _ = signed_in(server, "ada")
    # a console session is no device token
    assert client.post("/v1/heartbeat", json={"model": "face_model"}).status_code == 401
    with records.open_store(console_ws) as st:
        token = records.create_token(st, "cam-snap")
    import base64

    import cv2
    import numpy as np

    ok, jpg = cv2.imencode(".jpg", np.full((48, 64, 3), 128, np.uint8))
    beat = {
        "model": "face_model",
        "version": 1,
        "fps": 12.5,
        "snapshot": base64.b64encode(jpg.tobytes()).decode(),
    }
    r = httpx.post(server + "/v1/heartbeat", json=beat, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    snap = client.get("/fleet/devices/cam-snap/snapshot.jpg")
    assert snap.status_code == 200 and snap.content == jpg.tobytes()
    assert "cam-snap" in client.get("/fleet").text
    bad = {**beat, "snapshot": base64.b64encode(b"GIF89a not a jpeg").decode()}
    r = httpx.post(server + "/v1/heartbeat", json=bad, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 422 and "JPEG" in r.text


def test_a_looks_like_button_names_the_person_it_shows(server, console_ws, shared_data, tmp_path):
    """The "Not NAME" of a hint sends ``as=NAME``: it wins over whatever was typed in the name
    field, and a viewer cannot send it at all. (A new cluster of its own: ORL s10's photos.)"""
    from facefleet.curate import clusters as cl
    from facefleet.curate.collect import collect
    from facefleet.train.pipeline import current_embedder_id

    crops = tmp_path / "crops"
    crops.mkdir()
    for photo in sorted((shared_data / "faces" / "orl" / "s10").iterdir())[:4]:
        os.symlink(photo, crops / f"s10_{photo.name}")
    added = set(collect(console_ws, [crops], device="door-cam").added)
    emb = current_embedder_id(console_ws)
    with console_ws.open_store() as st:
        cl.update_clusters(st, emb)
        target = next(c for c in cl.clusters(st, emb) if {f.id for f in c.faces} & added)
        ids = {f.id for f in target.faces}
    viewer, vcsrf = signed_in(server, "vic")
    r = viewer.post(f"/review/clusters/{target.id}/not", data={"csrf": vcsrf, "as": "obama"})
    assert r.status_code == 403
    client, csrf = signed_in(server, "rita")
    data = {"csrf": csrf, "as": "obama", "name": "typed_by_mistake"}
    r = client.post(f"/review/clusters/{target.id}/not", data=data)
    assert r.status_code == 303
    with console_ws.open_store() as st:
        negs = {
            (int(f), n)
            for f, n in st.conn.execute(
                "SELECT n.face_id, p.name FROM negatives n JOIN people p ON p.id = n.person_id"
            )
        }
        assert st.find_person("typed_by_mistake") is None
    assert {(i, "obama") for i in ids} <= negs
