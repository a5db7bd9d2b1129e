"""The int8 embedder: calibrated on real faces, close to the fp32 vectors, its own id, cached,
and a one-line fallback to the fp32 ONNX embedder when it cannot be made."""

from __future__ import annotations

import logging

import numpy as np

from facefleet.vision.embed import dlib_embedder_id, make_embedder
from facefleet.vision.engine import FaceEngine, VisionConfig
from facefleet.vision.image import load_image
from facefleet.vision.int8_embedder import calibration_chips, create_int8_embedder


def test_int8_close_to_fp32_with_its_own_id_and_cached(tmp_path, faces_dir, caplog):
    strangers = sorted((faces_dir / "lfw_dev/strangers").glob("*.jpg"))
    calib = tmp_path / "calib"
    calib.mkdir()
    for p in strangers[:24]:
        (calib / p.name).write_bytes(p.read_bytes())
    chips = calibration_chips(calib, limit=24)
    assert len(chips) >= 20 and chips.shape[1:] == (150, 150, 3)

    caplog.set_level(logging.INFO, logger="facefleet.vision.int8_embedder")
    int8 = create_int8_embedder(tmp_path / "cache", chips=chips, threads=1)
    assert int8.id.startswith("dlib-resnet-v1-int8:") and int8.id != dlib_embedder_id()
    assert len(list((tmp_path / "cache/onnx").glob("*-int8-*.onnx"))) == 1

    engine = FaceEngine(VisionConfig(fallback_detector=None, cache_dir=tmp_path / "cache"))
    probes = [
        engine.analyse(load_image(p), fallback=False, embed=False)
        for p in sorted((faces_dir / "lfw_dev/people").glob("*/*.jpg"))[:40:4]
    ]
    test = np.stack([f[0].chip for f in probes if f])
    fp32, q = engine.embed_chips(test), int8.embed(test)
    assert q.shape == fp32.shape and q.dtype == np.float32
    assert float(np.linalg.norm(q - fp32, axis=1).max()) < 0.2  # same-person threshold is 0.6

    caplog.clear()
    again = make_embedder("onnx-int8", cache_dir=tmp_path / "cache")  # no photos: the cached model
    assert again.id == int8.id and "quantised" not in caplog.text
    assert np.allclose(again.embed(test), q, atol=1e-5)


def test_int8_without_model_or_photos_falls_back_in_one_line(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        emb = make_embedder("onnx-int8", cache_dir=tmp_path, calibration_dir=tmp_path / "none")
    assert emb.id == dlib_embedder_id()  # the fp32 ONNX embedder
    (record,) = [r for r in caplog.records if "int8" in r.getMessage()]
    assert "\n" not in record.getMessage() and "calibrate" in record.getMessage()
