"""The model server (uvicorn for real on loopback) and the device's pull client."""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
import time

import httpx
import pytest
import uvicorn
from testkit import free_port

from facefleet.edge import sync
from facefleet.errors import BundleError
from facefleet.fleet import records
from facefleet.fleet.status import fleet_status, status_table
from facefleet.registry.format import pack_bundle
from facefleet.registry.keys import load_public_key, public_key_path
from facefleet.web.server import create_app, etag_matches


@pytest.fixture
def server(workspace):
    port = free_port()
    config = uvicorn.Config(create_app(workspace), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start within 15 s")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def token(workspace):
    store = records.open_store(workspace)
    try:
        return records.create_token(store, "cam1")
    finally:
        store.close()


def set_alias(ws, version: int) -> None:
    (ws.models_dir / "aliases.json").write_text(json.dumps({"face_model": {"production": version}}))


def test_token_required_and_wrong_token_refused(server, token, workspace, bundle_factory):
    bundle_factory(1)
    url = f"{server}/v1/models/face_model/1/manifest"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer fft_wrong"}).status_code == 401
    ok = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200 and ok.json()["version"] == 1
    store = records.open_store(workspace)
    try:
        records.revoke_token(store, "cam1")
        assert [t.revoked is not None for t in records.list_tokens(store)] == [True]
    finally:
        store.close()
    assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert httpx.get(f"{server}/docs").status_code == 200


def test_manifest_by_alias_and_etag_saves_the_download(server, token, workspace, bundle_factory):
    bundle_factory(1)
    bundle_factory(2)
    set_alias(workspace, 2)
    auth = {"Authorization": f"Bearer {token}"}
    man = httpx.get(f"{server}/v1/models/face_model/production/manifest", headers=auth)
    assert man.json()["version"] == 2
    first = httpx.get(f"{server}/v1/models/face_model/@production/bundle.tar.gz", headers=auth)
    assert first.status_code == 200 and first.headers["X-Facefleet-Version"] == "2"
    import hashlib

    etag = first.headers["ETag"].strip('"')
    assert hashlib.sha256(first.content).hexdigest() == etag
    again = httpx.get(
        f"{server}/v1/models/face_model/production/bundle.tar.gz",
        headers={**auth, "If-None-Match": f'"{etag}"'},
    )
    assert again.status_code == 304 and again.content == b""
    missing = httpx.get(f"{server}/v1/models/face_model/9/manifest", headers=auth)
    assert missing.status_code == 404


def test_etag_header_parsing():
    assert etag_matches('"abc"', "abc") and etag_matches('W/"abc", "x"', "abc")
    assert etag_matches("*", "abc") and not etag_matches('"abd"', "abc")
    assert not etag_matches(None, "abc")


def _tampered_archive(bundle_dir, out):
    """The bundle's files with model.npz altered but the signed manifest kept."""
    with tarfile.open(out, "w:gz") as tar:
        for f in sorted(bundle_dir.iterdir()):
            data = f.read_bytes()
            if f.name == "model.npz":
                data = data[:-10] + b"0123456789"
            info = tarfile.TarInfo(f.name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def test_edge_sync_installs_skips_unchanged_refuses_tampered(
    server, token, workspace, bundle_factory, tmp_path
):
    key = load_public_key(public_key_path(workspace.keys_dir))
    dev = tmp_path / "device-models"
    bundle_factory(1)
    set_alias(workspace, 1)
    kw = dict(token=token, public_key=key, models_dir=dev, device_id="cam1", fps=9.5, base_delay=0.01)
    first = sync.sync_once(server, **kw)
    assert (first.status, first.version) == ("installed", 1)
    assert os.readlink(dev / "face_model" / "current") == "1"
    second = sync.sync_once(server, **kw)
    assert (second.status, second.version) == ("unchanged", 1)

    # v2 exists only as an archive whose model.npz was altered after signing
    b2 = bundle_factory(2)
    _tampered_archive(b2, workspace.models_dir / "face_model-2.tar.gz")
    import shutil

    shutil.rmtree(b2)
    set_alias(workspace, 2)
    with pytest.raises(BundleError, match="checksum"):
        sync.sync_once(server, **kw)
    assert os.readlink(dev / "face_model" / "current") == "1"
    assert sorted(p.name for p in dev.iterdir() if p.name.startswith(".incoming")) == []
    assert sorted(p.name for p in (dev / "face_model").iterdir()) == ["1", "current"]

    # a good v2 (archive) is picked up by the next round
    (workspace.models_dir / "face_model-2.tar.gz").unlink()
    pack_bundle(bundle_factory(2), workspace.models_dir / "face_model-2.tar.gz")
    assert sync.sync_once(server, **kw).version == 2
    assert os.readlink(dev / "face_model" / "previous") == "1"

    status = {s.host: s for s in fleet_status(workspace)}
    assert status["cam1"].heartbeat_version == 2 and status["cam1"].fps == 9.5
    assert "cam1" in status_table(list(status.values()))


def test_sync_gives_up_after_bounded_retries(tmp_path, workspace):
    key = load_public_key(public_key_path(workspace.keys_dir))
    waits: list[float] = []
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(sync.SyncError, match="gave up after 4 attempts"):
        sync.sync_once(
            dead,
            token="t",
            public_key=key,
            models_dir=tmp_path / "m",
            attempts=4,
            base_delay=0.5,
            sleep=waits.append,
        )
    assert waits == [0.5, 1.0, 2.0]
    assert list((tmp_path / "m").iterdir()) == []


def test_edge_sync_imports_no_server_libraries():
    import subprocess
    import sys

    code = (
        "import sys, facefleet.edge.sync; "
        "bad = [m for m in ('mlflow', 'sklearn', 'pandas') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_bad_references_heartbeats_and_bundles_are_4xx_without_paths(
    server, token, workspace, bundle_factory
):
    bundle_factory(1)
    auth = {"Authorization": f"Bearer {token}"}
    root = str(workspace.root)
    for ref in ["9" * 5000, "9" * 12, "..", "@", "a b", "@" + "x" * 200, "9", "@production", "production"]:
        resp = httpx.get(f"{server}/v1/models/face_model/{ref}/manifest", headers=auth)
        assert resp.status_code == 404, (ref[:20], resp.status_code, resp.text[:200])
        assert root not in resp.text and "Traceback" not in resp.text
    for model in ["..", ".hidden", "a" * 300]:
        resp = httpx.get(f"{server}/v1/models/{model}/1/manifest", headers=auth)
        assert resp.status_code in (404, 422), (model[:20], resp.status_code)
    beat = f"{server}/v1/heartbeat"
    bad_beats = [
        '{"version": 1, "fps": NaN}',
        '{"version": 1, "fps": Infinity}',
        '{"version": 1, "fps": 1e999}',
        '{"version": -1, "fps": 10}',
        '{"version": ' + "9" * 5000 + "}",
        '{"model": "../etc", "version": 1}',
        '{"model": "", "version": 1}',
        '{"fps": -3}',
    ]
    for body in bad_beats:
        resp = httpx.post(beat, content=body, headers={**auth, "Content-Type": "application/json"})
        assert resp.status_code in (400, 422), (body[:40], resp.status_code, resp.text[:200])
    ok = httpx.post(beat, json={"model": "face_model", "version": 1, "fps": 12.5}, headers=auth)
    assert ok.status_code == 200
    # a symlink inside a bundle folder: refused with 409, never a 500, and no path shown
    folder = next(p for p in workspace.models_dir.rglob("manifest.sig")).parent
    (folder / "extra.bin").symlink_to("/etc/hostname")
    resp = httpx.get(f"{server}/v1/models/face_model/1/bundle.tar.gz", headers=auth)
    assert resp.status_code == 409 and root not in resp.text, resp.text


def test_head_is_allowed_on_get_routes(server, token, workspace, bundle_factory):
    bundle_factory(1)
    auth = {"Authorization": f"Bearer {token}"}
    assert httpx.head(f"{server}/health").status_code == 200
    man = httpx.head(f"{server}/v1/models/face_model/1/manifest", headers=auth)
    assert man.status_code == 200 and man.content == b""
    tar = httpx.head(f"{server}/v1/models/face_model/1/bundle.tar.gz", headers=auth)
    assert tar.status_code == 200 and tar.headers["X-Facefleet-Version"] == "1" and tar.content == b""
    assert httpx.head(f"{server}/v1/models/face_model/1/manifest").status_code == 401
