"""The ONNX face embedder: same vectors as dlib on real faces, cached conversion, clean fallback."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from facefleet.errors import ModelError
from facefleet.vision import onnx_embedder
from facefleet.vision.dlib_dnn import DlibModelFormatError, _Reader, read_dlib_net
from facefleet.vision.embed import DlibEmbedder, dlib_embedder_id, make_embedder
from facefleet.vision.models import model_path
from facefleet.vision.onnx_embedder import OnnxEmbedder

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
PHOTO_DIRS = [
    SHARED / "faces" / "five_celebrity" / "val",
    SHARED / "faces" / "examples" / "knn_examples" / "train",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx_cache")


@pytest.fixture(scope="module")
def embedder(cache_dir) -> OnnxEmbedder:
    return OnnxEmbedder.create(cache_dir, threads=1)


@pytest.fixture(scope="module")
def real_chips(shared_data) -> np.ndarray:
    """Every face HOG finds in the shared photos, as dlib's aligned 150x150 chips."""
    import cv2
    import dlib

    suffixes = {".jpg", ".jpeg", ".png"}
    photos = sorted(p for d in PHOTO_DIRS for p in d.rglob("*") if p.suffix.lower() in suffixes)
    if not photos:
        pytest.fail(f"shared test photos not found under {SHARED}")
    detector = dlib.get_frontal_face_detector()
    shaper = dlib.shape_predictor(str(model_path("landmarks5")))
    chips = []
    for path in photos:
        img = dlib.load_rgb_image(str(path))
        side = max(img.shape[:2])
        if side > 640:  # the large portraits: their faces stay large, detection gets fast
            img = cv2.resize(img, None, fx=640 / side, fy=640 / side, interpolation=cv2.INTER_AREA)
        for box in detector(img, 1 if side < 400 else 0):
            chips.append(dlib.get_face_chip(img, shaper(img, box), size=150, padding=0.25))
    return np.stack(chips)


def test_same_vectors_as_dlib_on_real_faces(embedder, real_chips):
    assert len(real_chips) >= 30
    ref = DlibEmbedder().embed(real_chips)
    ours = embedder.embed(real_chips)
    assert ours.shape == (len(real_chips), 128) and ours.dtype == np.float32
    dist = np.linalg.norm(ours - ref, axis=1)
    assert dist.max() < 1e-3, f"max L2 to dlib {dist.max():.2e}"


def test_id_is_dlibs_when_verified(embedder):
    assert embedder.verification["matches"] is True
    assert embedder.verification["max_l2"] < 1e-3
    assert embedder.id == dlib_embedder_id()


def test_batches_equal_single_chips(embedder):
    chips = onnx_embedder.reference_chips(5)
    embedder.batch_size = 2  # 3 batches, the last one short
    try:
        batched = embedder.embed(chips)
    finally:
        embedder.batch_size = 32
    single = np.concatenate([embedder.embed(c) for c in chips])  # 3-D input: one chip
    np.testing.assert_allclose(batched, single, atol=1e-5)
    assert embedder.embed(np.zeros((0, 150, 150, 3), np.uint8)).shape == (0, 128)
    with pytest.raises(ValueError, match="150 x 150 x 3"):
        embedder.embed(np.zeros((2, 64, 64, 3), np.uint8))


def test_cached_conversion_and_check_are_reused(embedder, cache_dir, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("converted or checked a second time")

    monkeypatch.setattr(onnx_embedder, "convert", forbidden)
    monkeypatch.setattr(onnx_embedder, "_dlib_vectors", forbidden)
    again = OnnxEmbedder.create(cache_dir, threads=1)
    assert again.id == embedder.id
    assert len(list((cache_dir / "onnx").glob("*.onnx"))) == 1


def test_damaged_cache_is_converted_again(embedder, cache_dir, tmp_path):
    import shutil

    folder = tmp_path / "onnx"
    shutil.copytree(cache_dir / "onnx", folder)
    (onnx_file,) = folder.glob("*.onnx")
    onnx_file.write_bytes(b"not an onnx model")
    fresh = OnnxEmbedder.create(tmp_path, threads=1)
    assert fresh.id == embedder.id
    assert onnx_file.stat().st_size > 1_000_000


@pytest.fixture(params=["garbage", "truncated", "wrong_model"])
def bad_dat(request, tmp_path) -> Path:
    path = tmp_path / f"{request.param}.dat"
    if request.param == "garbage":
        path.write_bytes(b"this is not a dlib model\n" * 100)
    elif request.param == "truncated":
        path.write_bytes(model_path("resnet").read_bytes()[:2_000_000])
    else:
        path.write_bytes(model_path("landmarks5").read_bytes())
    return path


def test_bad_dat_gives_a_clear_error(bad_dat, tmp_path, monkeypatch):
    with pytest.raises(DlibModelFormatError, match="not a dlib face ResNet model") as info:
        read_dlib_net(bad_dat)
    assert str(bad_dat) in str(info.value) and "\n" not in str(info.value)
    monkeypatch.setattr(onnx_embedder, "source_path", lambda: bad_dat)
    with pytest.raises(ModelError):
        OnnxEmbedder.create(tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.onnx"))


def test_auto_falls_back_to_dlib_with_one_warning(bad_dat, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(onnx_embedder, "source_path", lambda: bad_dat)
    with caplog.at_level(logging.WARNING, logger="facefleet.vision.embed"):
        emb = make_embedder("auto", cache_dir=tmp_path)
    assert isinstance(emb, DlibEmbedder)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "using dlib" in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()


def test_dlib_number_encodings():
    r = _Reader(b"\x01\x02\x81\x05\x03\x0a\xd7\xa3\x81\x1c\x01\x00\x01\x00", "t")
    assert r.int_() == 2
    assert r.int_() == -5
    assert r.float_() == pytest.approx(0.04, abs=1e-9)
    assert r.float_() == 0.0
    with pytest.raises(DlibModelFormatError, match="file ends early"):
        r.int_()
