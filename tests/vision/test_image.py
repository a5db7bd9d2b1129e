"""Image loading: awkward real files give an image or a clear ImageError, never a crash."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facefleet.errors import ImageError
from facefleet.vision.image import load_image


@pytest.mark.parametrize(
    "name", ["32bit.png", "obama_partial_face.jpg", "obama-1080p.jpg", "lin-manuel-miranda.png"]
)
def test_awkward_examples_load_as_rgb(faces_dir, name):
    img = load_image(faces_dir / "examples" / name)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


def test_greyscale_pgm_becomes_rgb(faces_dir):
    img = load_image(faces_dir / "orl" / "s1" / "1.pgm")
    assert img.shape == (112, 92, 3)
    assert np.array_equal(img[..., 0], img[..., 1])


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path, faces_dir):
    grey = np.asarray(Image.open(faces_dir / "orl" / "s1" / "1.pgm"), dtype=np.uint16) * 257
    path = tmp_path / "deep.png"
    Image.fromarray(grey).save(path)
    img = load_image(path)
    original = np.asarray(Image.open(faces_dir / "orl" / "s1" / "1.pgm"))
    assert np.abs(img[..., 0].astype(int) - original.astype(int)).max() <= 1


def test_palette_and_rgba_png(tmp_path, faces_dir):
    src = Image.open(faces_dir / "examples" / "obama_small.jpg").convert("RGB")
    src.convert("P", palette=Image.ADAPTIVE).save(tmp_path / "pal.png")
    rgba = src.convert("RGBA")
    rgba.putalpha(0)  # fully transparent: composited on white
    rgba.save(tmp_path / "clear.png")
    assert load_image(tmp_path / "pal.png").shape == np.asarray(src).shape
    assert load_image(tmp_path / "clear.png").min() == 255


def test_exif_rotation_is_applied(tmp_path, faces_dir):
    src = Image.open(faces_dir / "examples" / "obama_small.jpg").convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    src.save(tmp_path / "rot.jpg", exif=exif)
    img = load_image(tmp_path / "rot.jpg")
    assert img.shape[:2] == (src.width, src.height)


def test_truncated_jpeg_is_refused(tmp_path, faces_dir):
    data = (faces_dir / "examples" / "obama.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated"):
        load_image(tmp_path / "cut.jpg")


@pytest.mark.parametrize(
    ("content", "message"), [(b"hello, not an image\n", "not an image"), (b"", "empty file")]
)
def test_non_images_are_refused(tmp_path, content, message):
    path = tmp_path / "fake.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message):
        load_image(path)


def test_absurdly_large_image_is_refused(tmp_path):
    Image.new("L", (10_000, 7_000)).save(tmp_path / "huge.png")
    with pytest.raises(ImageError, match="too large"):
        load_image(tmp_path / "huge.png")


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.jpg")
