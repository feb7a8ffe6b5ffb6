"""Labelled image grids: conversions, layout, captions, show_dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from facevae.common.grids import (
    NBSP,
    abbreviate_attribute,
    abbreviate_factor,
    attribute_caption,
    factor_caption,
    image_grid,
    save_comparison_grid,
    save_labelled_grid,
    to_uint8_images,
)
from facevae.data.attributes import CELEBA_ATTRIBUTES
from facevae.data.packed import write_packed
from facevae.data.show import show_dataset

RED, GREEN = (230, 20, 20), (20, 200, 40)


def solid(n: int, colour, size: int = 64) -> np.ndarray:
    return np.broadcast_to(np.array(colour, np.uint8), (n, size, size, 3)).copy()


def count_colour(path, colour, tol: int = 12) -> int:
    with Image.open(path) as img:
        a = np.asarray(img.convert("RGB")).astype(int)
    return int((np.abs(a - np.array(colour)).max(axis=-1) <= tol).sum())


def test_to_uint8_images_accepts_the_usual_layouts():
    hwc = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    chw_float = torch.from_numpy(hwc).permute(0, 3, 1, 2).float() / 255
    np.testing.assert_array_equal(to_uint8_images(chw_float), hwc)
    np.testing.assert_array_equal(to_uint8_images(hwc), hwc)
    np.testing.assert_array_equal(to_uint8_images(hwc[0]), hwc[:1])
    grey = to_uint8_images(np.ones((2, 8, 8), bool))
    assert grey.shape == (2, 8, 8, 3) and (grey == 255).all()
    assert to_uint8_images(np.full((1, 1, 8, 8), 2.0)).max() == 255  # clipped
    with pytest.raises(ValueError, match="shaped"):
        to_uint8_images(np.zeros((2, 3, 4, 5, 6)))


def test_labelled_grid_enlarges_cells_and_writes_captions(tmp_path):
    images = np.concatenate([solid(1, RED), solid(9, GREEN)])
    labels = ["Smiling, Bangs"] + ["a very long caption that has to be wrapped over several lines " * 2] * 9
    path = save_labelled_grid(images, tmp_path / "grid.png", ncol=4, labels=labels, title="Ten faces")
    with Image.open(path) as img:
        width, height = img.size
    assert 4 * 128 < width < 4 * 128 + 60  # 64-pixel images shown at 128 pixels, small padding
    assert height > 3 * 128 + 60  # three rows of cells, plus captions and title
    red = count_colour(path, RED)
    assert abs(red - 128 * 128) < 128 * 6  # the red face fills one whole 128x128 cell
    assert count_colour(path, (0, 0, 0), tol=90) > 500  # dark caption/title text was drawn


def test_grid_checks_its_arguments():
    with pytest.raises(ValueError, match="2 labels for 3 images"):
        image_grid(solid(3, RED), labels=["a", "b"])
    with pytest.raises(ValueError, match="no images"):
        image_grid(np.zeros((0, 8, 8, 3), np.uint8))


def test_image_grid_returns_a_figure_with_one_axes_per_image():
    fig = image_grid(solid(5, RED, size=32), nrow=3, labels=list("abcde"), title="t", scale=2)
    assert len(fig.axes) == 5
    w, h = fig.get_size_inches()
    assert w == pytest.approx((3 * 64 + 4 * 8) / 100)  # 3 columns of 64-pixel cells


def test_comparison_grid_rows_and_labels(tmp_path):
    path = save_comparison_grid([solid(6, RED), solid(4, GREEN)], ["original", "reconstruction"],
                                tmp_path / "cmp.png", title="Reconstructions",
                                col_labels=None)
    assert count_colour(path, GREEN) == pytest.approx(4 * 128 * 128, rel=0.05)
    assert count_colour(path, RED) == pytest.approx(6 * 128 * 128, rel=0.05)
    with Image.open(path) as img:
        assert img.height > 2 * 128 and img.width > 6 * 128
    path = save_comparison_grid([solid(3, RED, 32)], ["z3"], tmp_path / "trav.png", col_labels=["-2", "0", "+2"])
    assert path.is_file()
    with pytest.raises(ValueError, match="same size"):
        save_comparison_grid([solid(2, RED, 32), solid(2, RED, 64)], ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="1 row labels for 2 rows"):
        save_comparison_grid([solid(2, RED), solid(2, RED)], ["a"], tmp_path / "x.png")


def test_captions_are_short_and_informative():
    assert abbreviate_attribute("Mouth_Slightly_Open") == "Mouth open"
    assert abbreviate_attribute("Wearing_Scarf") == "Scarf"
    assert abbreviate_attribute("smile") == "smile"
    assert abbreviate_factor("hair_colour") == "hair col" and abbreviate_factor("face_rotation") == "face rot"
    names = ["Male", "Bald", "Smiling", "Young", "Eyeglasses", "Bangs"]
    rates = np.array([0.4, 0.02, 0.5, 0.8, 0.07, 0.15])
    caption = attribute_caption(np.array([1, 1, 1, 1, 1, 1]), names, rates).replace(NBSP, " ")
    assert caption == "Bald, Glasses, Bangs, Male, +2 more"  # rarest first, up to four
    assert attribute_caption(np.zeros(6), names, rates) == "(no attribute)"
    assert factor_caption(np.array([2, 0]), ["hair_colour", "smile"]).replace(NBSP, " ") == "hair col 2, smile 0"


def test_show_dataset_attributes_and_split(tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    images = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
    attrs = (rng.random((n, 40)) < 0.2).astype(np.uint8)
    ds = write_packed(tmp_path / "ds", images, attrs, CELEBA_ATTRIBUTES,
                      partition=np.repeat(np.array([0, 1, 2], np.int8), [40, 10, 10]))
    path = show_dataset(ds, tmp_path / "show.png", n=12, seed=1)
    with Image.open(path) as img:
        assert img.width > 8 * 128 and img.height > 2 * 128
    path = show_dataset(ds, tmp_path / "show_test.png", n=32, split="official")
    with Image.open(path) as img:  # only 10 test images: two rows of 8 columns
        assert 2 * 128 < img.height < 3 * 128 + 200
    with pytest.raises(ValueError, match="at least 1"):
        show_dataset(ds, tmp_path / "x.png", n=0)


def test_show_dataset_uses_factors_when_present(tmp_path, monkeypatch):
    n = 20
    ds = write_packed(tmp_path / "syn", np.zeros((n, 32, 32, 3), np.uint8), np.zeros((n, 2), np.uint8), ["a", "b"],
                      factors=np.stack([np.arange(n) % 4, np.arange(n) % 2], 1),
                      factor_names=["hair_colour", "smile"], factor_sizes=[4, 2])
    seen = {}
    import facevae.data.show as show

    real = show.save_labelled_grid

    def spy(images, path, ncol=8, labels=None, title=None, scale=None):
        seen.update(labels=labels, title=title, shape=images.shape)
        return real(images, path, ncol=ncol, labels=labels, title=title, scale=scale)

    monkeypatch.setattr(show, "save_labelled_grid", spy)
    show_dataset(ds, tmp_path / "syn.png", n=8)
    assert seen["shape"] == (8, 32, 32, 3)
    assert all(lbl.replace(NBSP, " ").startswith("hair col ") and ", smile " in lbl.replace(NBSP, " ")
               for lbl in seen["labels"])
    assert "factor" in seen["title"]
