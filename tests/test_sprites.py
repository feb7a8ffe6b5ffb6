"""The procedural dSprites: the published factor grid, distinct shapes, packed subsets, the metrics on it."""

from __future__ import annotations

import numpy as np
import pytest

from facevae.data.sprites import FACTOR_NAMES, FACTOR_SIZES, FACTOR_VALUES, ProceduralDSprites, write_dsprites_packed


def test_the_grid_is_the_published_files():
    sprites = ProceduralDSprites()
    # latents_sizes of dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz, without the constant colour
    assert sprites.factor_names == FACTOR_NAMES == ["shape", "scale", "orientation", "position_x", "position_y"]
    assert sprites.factor_sizes == FACTOR_SIZES == [3, 6, 40, 32, 32] and len(sprites) == 737_280
    np.testing.assert_allclose(FACTOR_VALUES["scale"], [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert FACTOR_VALUES["orientation"][0] == 0 and FACTOR_VALUES["orientation"][-1] == pytest.approx(2 * np.pi)
    assert list(FACTOR_VALUES["shape"]) == [1, 2, 3] and FACTOR_VALUES["position_x"][[0, -1]].tolist() == [0, 1]
    f = sprites.sample_factors(5000, np.random.RandomState(0))
    assert f.shape == (5000, 5) and (f.min(0) == 0).all() and (f.max(0) == np.array(FACTOR_SIZES) - 1).all()
    with pytest.raises(ValueError):
        sprites.render([[3, 0, 0, 0, 0]])


def area_and_centre(image):
    ys, xs = np.nonzero(image[..., 0])
    return len(ys), (xs.mean(), ys.mean())


def test_each_factor_changes_the_sprite_as_it_should():
    sprites = ProceduralDSprites(channels=1)
    images = sprites.render([[s, 5, 0, 16, 16] for s in range(3)])
    assert images.shape == (3, 64, 64, 1) and set(np.unique(images)) == {0, 255}
    areas = [area_and_centre(im)[0] for im in images]
    assert areas[0] > areas[2] > areas[1] > 0  # square > heart > ellipse (half as tall as wide)
    assert all((images[i] != images[j]).mean() > 0.01 for i in range(3) for j in range(i))  # three distinct shapes
    small, large = (area_and_centre(sprites.render([[0, s, 0, 16, 16]])[0])[0] for s in (0, 5))
    assert large / small == pytest.approx((1.0 / 0.5) ** 2, rel=0.15)  # area grows with the square of the scale
    (_, (x0, y0)), (_, (x1, y1)) = (area_and_centre(sprites.render([[1, 3, 0, x, y]])[0]) for x, y in ((0, 0), (31, 31)))
    assert x0 < 20 and y0 < 20 and x1 > 44 and y1 > 44  # positions 0..1 sweep the frame
    flat, turned = sprites.render([[1, 5, 0, 16, 16], [1, 5, 10, 16, 16]])  # an ellipse turned by 90°
    assert (flat[..., 0] > 0).sum(0).max() < (turned[..., 0] > 0).sum(0).max()  # it stands up
    rgb = ProceduralDSprites(channels=3).render([[2, 2, 7, 3, 9]])
    assert rgb.shape == (1, 64, 64, 3) and (rgb[..., 0] == rgb[..., 2]).all()


def test_a_packed_subset_trains_and_is_scored_with_fresh_renders(tmp_path):
    from facevae.cli import main
    from facevae.data.packed import PackedDataset

    data = write_dsprites_packed(tmp_path / "ds", 300, seed=1, progress=False)
    packed = PackedDataset(data.root)
    assert packed.factor_names == FACTOR_NAMES and packed.attribute_names == ["square", "ellipse", "heart"]
    np.testing.assert_array_equal(packed.attributes.argmax(1), packed.factors[:, 0])
    run = tmp_path / "run"
    assert main(["train", "--data", str(data.root), "--run-dir", str(run), "--model", "vae", "--width", "1",
                 "--latent-dim", "6", "--image-size", "32", "--batch-size", "32", "--epochs", "1", "--eval-k", "2",
                 "--eval-batches", "1", "--no-progress"]) == 0
    assert main(["metrics", str(run), "--n", "40", "--n-eval", "20", "--batch-size", "4", "--metrics",
                 "beta_vae,mig"]) == 0
    import json

    result = json.loads((run / "metrics.json").read_text())["disentanglement"]
    assert result["settings"]["factors"].startswith("independent uniform factors")
    assert 0 <= result["scores"]["beta_vae_eval"] <= 1 and 0 <= result["scores"]["mig"] <= 1
