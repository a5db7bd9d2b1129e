"""Detection, fallback, alignment and quality on real photos, and the pure helpers."""

from __future__ import annotations

import numpy as np
import pytest

from facefleet.vision.detect import downscale, map_box
from facefleet.vision.engine import FaceEngine, VisionConfig
from facefleet.vision.image import load_image
from facefleet.vision.quality import Quality, frontalness, sharpness, unusable_reason


@pytest.fixture(scope="module")
def engine():
    return FaceEngine(VisionConfig(embedder="dlib"))


def test_downscale_and_map_back():
    img = np.zeros((1080, 1920, 3), np.uint8)
    small, scale = downscale(img, 960)
    assert small.shape[:2] == (540, 960) and scale == pytest.approx(0.5)
    assert map_box((10, 20, 110, 120), scale, img.shape) == (20, 40, 220, 240)
    assert map_box((900, 500, 980, 560), scale, img.shape) == (1800, 1000, 1919, 1079)
    same, one = downscale(img[:100, :100], 960)
    assert one == 1.0 and same.shape == (100, 100, 3)


def test_large_photo_boxes_are_in_original_coordinates(engine, faces_dir):
    big = load_image(faces_dir / "examples" / "obama-1080p.jpg")
    small = load_image(faces_dir / "examples" / "obama-480p.jpg")
    (b,) = engine.detect(big)
    (s,) = engine.detect(small)
    ratio = big.shape[1] / small.shape[1]
    assert abs(b.box[0] - s.box[0] * ratio) < 0.06 * big.shape[1]
    assert abs((b.box[2] - b.box[0]) - (s.box[2] - s.box[0]) * ratio) < 0.2 * (b.box[2] - b.box[0])


def test_tilted_head_needs_the_accurate_detector(engine, faces_dir):
    img = load_image(faces_dir / "five_celebrity" / "val" / "ben_afflek" / "4.jpg")
    assert engine.detect(img) == []
    faces = engine.analyse(img, fallback=True)
    assert len(faces) == 1 and faces[0].detector == "cnn"
    assert faces[0].embedding.shape == (128,)
    assert engine.analyse(img, fallback=False) == []


def test_haar_detector_finds_a_frontal_face(faces_dir):
    eng = FaceEngine(VisionConfig(detector="haar", embedder="dlib"))
    assert len(eng.detect(load_image(faces_dir / "examples" / "obama.jpg"))) >= 1


def test_two_people_and_chip_shape(engine, faces_dir):
    faces = engine.analyse(load_image(faces_dir / "examples" / "two_people.jpg"))
    assert len(faces) == 2
    for face in faces:
        assert face.chip.shape == (150, 150, 3)
        assert face.landmarks.shape == (5, 2)
        assert 0.5 < np.linalg.norm(face.embedding) < 2.0  # dlib vectors are not unit length


def test_same_person_is_closer_than_another(engine, faces_dir):
    ex = faces_dir / "examples"
    a, b, c = (
        engine.analyse(load_image(ex / n))[0].embedding for n in ("obama.jpg", "obama2.jpg", "biden.jpg")
    )
    assert np.linalg.norm(a - b) < 0.6 < np.linalg.norm(a - c)


def test_quality_measures():
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 255, (150, 150, 3), dtype=np.uint8)
    flat = np.full((150, 150, 3), 128, np.uint8)
    assert sharpness(sharp) > 1000 > sharpness(flat) == 0.0
    frontal = np.array([[60, 50], [45, 50], [90, 50], [105, 50], [75, 80]], float)
    turned = frontal.copy()
    turned[4] = (50, 80)
    assert frontalness(frontal) == pytest.approx(1.0)
    assert frontalness(turned) < 0.7
    cfg = {"min_face_px": 30, "min_sharpness": 15, "min_brightness": 20, "max_brightness": 240}
    assert unusable_reason(Quality(100, 200.0, 0.9, 120.0), cfg) is None
    assert "too small" in unusable_reason(Quality(20, 200.0, 0.9, 120.0), cfg)
    assert "blurred" in unusable_reason(Quality(100, 3.0, 0.9, 120.0), cfg)
    assert "too dark" in unusable_reason(Quality(100, 200.0, 0.9, 5.0), cfg)
