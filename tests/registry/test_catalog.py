"""The version catalog without MLflow: a plain models folder and its aliases.json."""

from __future__ import annotations

import json

import pytest

from facefleet.errors import BundleError, ModelError
from facefleet.registry import catalog
from facefleet.registry.format import pack_bundle
from facefleet.registry.keys import generate_keypair
from facefleet.workspace import Workspace
from tests.fleet.fleet_helpers import make_bundle


@pytest.fixture
def ws(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    generate_keypair(ws.keys_dir)
    return ws


def test_parse_ref():
    assert catalog.parse_ref(None) == ("newest", None)
    assert catalog.parse_ref(3) == catalog.parse_ref("v3") == catalog.parse_ref(" 3 ") == ("version", 3)
    assert catalog.parse_ref("@production") == ("alias", "production")
    assert catalog.parse_ref("gamma4") == ("name", "gamma4")
    with pytest.raises(catalog.VersionError, match="empty"):
        catalog.parse_ref("  ")


def test_folder_catalog_resolves_every_kind(ws):
    one = make_bundle(ws, 1, name="alpha")
    two = make_bundle(ws, 2, name="beta")
    three = make_bundle(ws, 3, name="alpha")  # retrained under the same name
    (ws.models_dir / catalog.ALIASES_FILE).write_text(json.dumps({"face_model": {"production": 2}}))
    assert not (ws.root / "mlflow.db").exists()  # no registry: the folder answers alone
    got = catalog.resolve(ws)
    assert (got.version, got.path, got.name) == (3, three, "alpha")
    assert "newest" in got.reason and "models folder" in got.reason
    assert catalog.resolve(ws, "v1").path == catalog.resolve(ws, 1).path == one
    got = catalog.resolve(ws, "@production")
    assert (got.version, got.path) == (2, two) and got.reason.startswith("@production -> v2")
    assert catalog.resolve(ws, "alpha").version == 3
    assert catalog.bundle_path(ws, "beta") == two
    assert not (ws.root / "mlflow.db").exists()  # and asking did not create one


def test_folder_catalog_errors_are_clear(ws):
    with pytest.raises(ModelError, match="no trained model 'face_model' yet"):
        catalog.resolve(ws)
    make_bundle(ws, 1)
    with pytest.raises(ModelError, match="has no version 7"):
        catalog.resolve(ws, 7)
    with pytest.raises(ModelError, match="holds @production"):
        catalog.resolve(ws, "@production")
    with pytest.raises(ModelError, match="no version named 'zeta'"):
        catalog.resolve(ws, "zeta")


def test_archives_count_and_folders_win(ws, tmp_path):
    folder = make_bundle(ws, 4)
    packed = pack_bundle(folder, ws.models_dir / "elsewhere" / "face_model-4.tar.gz")
    assert catalog.resolve(ws, 4).path == folder
    other = make_bundle(ws, 5)
    pack_bundle(other, ws.models_dir / "face_model-5.tar.gz")
    import shutil

    shutil.rmtree(other)
    assert catalog.resolve(ws, 5).path == ws.models_dir / "face_model-5.tar.gz"
    assert packed.is_file()
    (ws.models_dir / "broken.tar.gz").write_bytes(b"not gzip")
    assert catalog.resolve(ws).version == 5  # an unreadable archive is skipped


def test_bundle_not_held_without_fetch(ws):
    make_bundle(ws, 1)
    (ws.models_dir / catalog.ALIASES_FILE).write_text(json.dumps({"face_model": {"production": 9}}))
    with pytest.raises(BundleError, match="no bundle for face_model v9"):
        catalog.resolve(ws, "@production", fetch=False)
