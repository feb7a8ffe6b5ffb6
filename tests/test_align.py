"""Photos framed like CelebA's aligned faces (facevae.data.align), on photos that ship inside scikit-image."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from facevae.data.align import (
    CELEBA_FRAME,
    CELEBA_TEMPLATE,
    PictureError,
    align_face,
    detect_face,
    read_picture,
    similarity_transform,
    warp_to_frame,
)
from facevae.data.prepare import decode_face

data = pytest.importorskip("skimage.data", reason="the test photos ship inside scikit-image (the dev extra)")
pytest.importorskip("facenet_pytorch", reason="the face detector is in the serve extra")


def encoded(array: np.ndarray, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()  # Eileen Collins, 512×512, one frontal face


def test_the_similarity_transform_recovers_a_known_one():
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 100, (5, 2))
    angle = 0.3
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = 1.7 * points @ rotation.T + [12.0, -4.0]
    scale, found, shift = similarity_transform(points, moved)
    assert scale == pytest.approx(1.7) and found == pytest.approx(rotation) and shift == pytest.approx([12, -4])


def test_a_face_is_found_and_its_landmarks_land_on_celeba_s_template(astronaut):
    picture = Image.fromarray(astronaut)
    found = detect_face(picture)
    assert found is not None and found.probability > 0.99
    left_eye, right_eye, nose, mouth_left, mouth_right = found.landmarks
    assert left_eye[0] < nose[0] < right_eye[0] and max(left_eye[1], right_eye[1]) < nose[1] < mouth_left[1]
    frame = warp_to_frame(picture, found.landmarks)
    assert frame.size == CELEBA_FRAME
    again = detect_face(frame)  # the detector, run on the aligned frame, finds the points where CelebA has them
    assert again is not None
    assert np.abs(again.landmarks - CELEBA_TEMPLATE).max() < 6


def test_the_aligned_face_is_prepared_at_any_size_and_says_how(astronaut):
    for size in (32, 64, 128):
        face = align_face(encoded(astronaut, "JPEG", quality=90), size)
        assert face.image.shape == (size, size, 3) and face.image.dtype == np.uint8
        assert face.face_found and "five-point" in face.note
    info = face.describe()
    assert info["face_found"] is True and len(info["landmarks"]) == 5 and info["face_probability"] > 0.99
    json.dumps(info)  # what edit's JSON records


def test_exif_orientation_is_applied_before_detection(astronaut):
    sideways = Image.fromarray(np.rot90(astronaut))  # as a phone stores a photo taken in portrait
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to view
    buffer = io.BytesIO()
    sideways.save(buffer, format="JPEG", exif=exif)
    picture = read_picture(buffer.getvalue())
    assert np.abs(np.asarray(picture, np.int16) - astronaut).mean() < 8  # upright again
    assert align_face(buffer.getvalue(), 64).face_found


def test_where_no_face_is_found_it_says_so_and_centre_crops(tmp_path):
    cup = data.coffee()  # 400×600, a coffee cup
    face = align_face(encoded(cup), 64)
    assert not face.face_found and face.note.startswith("no face found") and face.describe()["face_found"] is False
    # bigger than CelebA's frame: scaled to cover it, then the preparation's centre crop
    assert face.image.shape == (64, 64, 3)
    centre = np.asarray(cup, np.float32)[100:300, 200:400].mean((0, 1))
    assert np.abs(face.image.reshape(-1, 3).mean(0) - centre).max() < 25


def test_a_picture_no_bigger_than_the_frame_is_prepared_exactly_as_the_dataset():
    from conftest import celeba_image

    jpeg = encoded(np.asarray(celeba_image(3)), "JPEG", quality=95)  # 178×218, like img_align_celeba files
    face = align_face(jpeg, 64, align=False)
    assert face.note.startswith("alignment off")
    np.testing.assert_array_equal(face.image, decode_face(jpeg, 64, fast=False))


@pytest.mark.parametrize("bad, message", [
    (b"not a picture at all", "not an image"),
    (b"", "not an image"),
])
def test_bytes_that_are_not_a_picture_are_a_picture_error(bad, message):
    with pytest.raises(PictureError, match=message):
        align_face(bad, 64)


def test_a_truncated_picture_is_a_picture_error(astronaut):
    whole = encoded(astronaut, "JPEG")
    with pytest.raises(PictureError, match="not an image"):
        read_picture(whole[: len(whole) // 3])


def test_too_many_pixels_are_refused_before_decoding(monkeypatch):
    big = encoded(np.zeros((300, 400, 3), np.uint8))
    with pytest.raises(PictureError, match="400×300, more than the 100,000 pixels"):
        read_picture(big, max_pixels=100_000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)  # Pillow's own guard, beyond our cap
    with pytest.raises(PictureError, match="decompression-bomb"):
        read_picture(big, max_pixels=None)


def test_edit_with_an_image_aligns_it_and_records_it(cvae_run, tmp_path, astronaut):
    from facevae.cli import main

    run = shutil.copytree(cvae_run, tmp_path / "cvae")
    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(encoded(astronaut, "JPEG"))
    assert main(["edit", str(run), "--image", str(photo), "--set", "Smiling=1"]) == 0
    result = json.loads((run / "analysis" / "edit_astronaut_Smiling1.json").read_text())
    assert result["source"]["face_found"] is True and "five-point" in result["source"]["alignment"]
    cup = tmp_path / "cup.png"
    cup.write_bytes(encoded(data.coffee()))
    assert main(["edit", str(run), "--image", str(cup), "--set", "Smiling=1"]) == 0
    result = json.loads((run / "analysis" / "edit_cup_Smiling1.json").read_text())
    assert result["source"]["face_found"] is False and result["source"]["alignment"].startswith("no face found")


def test_16_bit_and_transparent_pictures_read_as_the_dataset_reads_them():
    grey16 = Image.fromarray(np.full((60, 50), 32768, np.uint16))  # mid-grey, 16 bits a sample
    clear = Image.fromarray(np.zeros((60, 50, 4), np.uint8), "RGBA")  # every pixel transparent
    for picture, value in ((grey16, 128), (clear, 255)):
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        read = np.asarray(read_picture(buffer.getvalue()))
        assert read.shape == (60, 50, 3) and np.abs(read.astype(int) - value).max() <= 1, picture.mode
