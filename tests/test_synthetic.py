"""The synthetic faces: contract, determinism, visibility of every factor, CelebA-like priors."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from facevae.data.attributes import CELEBA_ATTRIBUTE_RATES, CELEBA_ATTRIBUTES
from facevae.data.packed import PackedDataset
from facevae.data.synthetic import SyntheticFaces, generate_celeba_like_partition, write_synthetic_packed

REQUIRED_ATTRIBUTES = [
    "Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair", "Bangs", "Smiling", "Mouth_Slightly_Open",
    "Eyeglasses", "Pale_Skin", "Male", "No_Beard", "Goatee", "Chubby", "Wearing_Lipstick", "Wearing_Hat", "Young",
]
# A plain face: brown shoulder-length hair, frontal, average width, light skin, nothing worn.
PLAIN = np.array([[1, 2, 0, 2, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0]])


@pytest.fixture(scope="module")
def faces() -> SyntheticFaces:
    return SyntheticFaces(64)


@pytest.fixture(scope="module")
def uniform() -> SyntheticFaces:
    return SyntheticFaces(64, prior="uniform")


@pytest.fixture(scope="module")
def celeba_factors(faces) -> np.ndarray:
    return faces.sample_factors(20_000, np.random.default_rng(7))


def test_contract(faces):
    assert faces.num_factors == len(faces.factor_names) == len(faces.factor_sizes) >= 10
    assert len(set(faces.factor_names)) == faces.num_factors
    assert all(isinstance(s, int) and s >= 2 for s in faces.factor_sizes)
    assert all(len(faces.factor_values[n]) == s for n, s in zip(faces.factor_names, faces.factor_sizes))
    for name in ("hair_color", "hair_volume", "bangs", "rotation", "face_width", "skin_tone", "smile",
                 "eyeglasses", "beard", "background"):
        assert name in faces.factor_names
    assert set(REQUIRED_ATTRIBUTES) <= set(faces.attribute_names)
    order = [CELEBA_ATTRIBUTES.index(a) for a in faces.attribute_names]
    assert order == sorted(order), "attribute_names must follow CelebA's file order"


@pytest.mark.parametrize("prior", ["celeba", "uniform"])
def test_sample_factors_shape_range_and_seeding(prior):
    faces = SyntheticFaces(64, prior=prior)
    f = faces.sample_factors(500, 3)
    assert f.dtype == np.int64 and f.shape == (500, faces.num_factors)
    assert (f >= 0).all() and (f < np.array(faces.factor_sizes)).all()
    assert np.array_equal(f, faces.sample_factors(500, np.random.default_rng(3)))
    assert np.array_equal(faces.sample_factors(500, np.random.RandomState(5)),
                          faces.sample_factors(500, np.random.RandomState(5)))
    assert not np.array_equal(f, faces.sample_factors(500, 4))


def test_render_shape_dtype_determinism_and_chunking(faces):
    f = faces.sample_factors(20, 0)
    images = faces.render(f)
    assert images.dtype == np.uint8 and images.shape == (20, 64, 64, 3)
    assert np.array_equal(images, faces.render(f))
    assert np.array_equal(images, SyntheticFaces(64, chunk=3).render(f)), "chunking must not change pixels"
    assert np.array_equal(images[5:6], faces.render(f[5])), "a single row works too"
    other = faces.render(faces.sample_factors(20, 1))
    assert np.abs(images.astype(int) - other).mean() > 5
    assert images.std() > 20, "not a blank picture"
    imgs, factors = faces.sample(4, 9)
    assert np.array_equal(imgs, faces.render(factors))


def test_invalid_input():
    faces = SyntheticFaces(64)
    with pytest.raises(ValueError):
        faces.render(np.zeros((2, faces.num_factors - 1), np.int64))
    bad = np.zeros((1, faces.num_factors), np.int64)
    bad[0, 0] = faces.factor_sizes[0]
    with pytest.raises(ValueError, match="hair_color"):
        faces.render(bad)
    with pytest.raises(ValueError):
        SyntheticFaces(64, prior="nope")


def _pairwise_min(faces, base, j) -> float:
    images = faces.render(faces.factor_grid(base, j)).astype(np.float32)
    k = len(images)
    return min(np.abs(images[p] - images[q]).mean() for p in range(k) for q in range(p + 1, k))


def test_every_factor_is_visible_and_every_value_distinct(uniform):
    bases = np.concatenate([PLAIN, uniform.sample_factors(6, 11)])
    for j, name in enumerate(uniform.factor_names):
        plain = _pairwise_min(uniform, bases[0], j)
        assert plain > 0.4, f"{name}: two values look alike on a plain face ({plain:.2f})"
        for base in bases[1:]:
            d = _pairwise_min(uniform, base, j)
            assert d > 0.1, f"{name}: two values look alike for base {base.tolist()} ({d:.2f})"


def test_uniform_prior_covers_all_values(uniform):
    f = uniform.sample_factors(6000, 0)
    for j, size in enumerate(uniform.factor_sizes):
        counts = np.bincount(f[:, j], minlength=size) / len(f)
        assert counts.min() > 0.6 / size and counts.max() < 1.4 / size, uniform.factor_names[j]
    corr = np.corrcoef(f.T.astype(float))
    assert np.abs(corr[np.triu_indices_from(corr, 1)]).max() < 0.06, "uniform factors are independent"


def test_celeba_prior_rates(faces, celeba_factors):
    rates = dict(zip(faces.attribute_names, faces.attributes(celeba_factors).mean(axis=0)))
    for name in ("Eyeglasses", "Bangs", "Male", "Smiling", "Blond_Hair", "No_Beard"):
        assert abs(rates[name] - CELEBA_ATTRIBUTE_RATES[name]) < 0.02, (name, rates[name])
    for name, rate in rates.items():
        assert abs(rate - CELEBA_ATTRIBUTE_RATES[name]) < 0.03, (name, rate)


def test_celeba_prior_correlations(faces, celeba_factors):
    a = faces.attributes(celeba_factors).astype(float)
    corr = np.corrcoef(a.T)
    ix = {n: i for i, n in enumerate(faces.attribute_names)}
    c = lambda p, q: corr[ix[p], ix[q]]  # noqa: E731
    assert c("Male", "No_Beard") < -0.3
    assert c("Male", "Wearing_Lipstick") < -0.6
    assert c("Blond_Hair", "Male") < -0.15
    assert c("Gray_Hair", "Young") < -0.2
    assert c("Smiling", "Mouth_Slightly_Open") > 0.3
    # beards are male only; blond beards are rare
    beard = ~a[:, ix["No_Beard"]].astype(bool)
    assert a[beard, ix["Male"]].all()
    assert a[beard, ix["Blond_Hair"]].mean() < 0.05


def test_all_celeba_attributes(faces, celeba_factors):
    f = celeba_factors[:5000]
    full = faces.all_celeba_attributes(f)
    assert full.shape == (5000, 40) and full.dtype == np.uint8 and set(np.unique(full)) <= {0, 1}
    cols = [CELEBA_ATTRIBUTES.index(a) for a in faces.attribute_names]
    assert np.array_equal(full[:, cols], faces.attributes(f))
    assert np.array_equal(full, faces.all_celeba_attributes(f))
    # the same factor row gives the same 40 values wherever it appears
    repeated = faces.all_celeba_attributes(np.repeat(f[:3], 4, axis=0))
    assert np.array_equal(repeated, np.repeat(full[:3], 4, axis=0))
    rates = full.mean(axis=0)
    for j, name in enumerate(CELEBA_ATTRIBUTES):
        assert abs(rates[j] - CELEBA_ATTRIBUTE_RATES[name]) < 0.04, (name, rates[j])


@pytest.mark.parametrize("size, shape", [(64, (64, 64)), (128, (128, 128)), ((218, 178), (218, 178)), ((40, 72), (40, 72))])
def test_sizes(size, shape):
    faces = SyntheticFaces(size)
    images = faces.render(PLAIN)
    assert images.shape == (1, *shape, 3)
    assert faces.frame == min(shape)


def test_bigger_sizes_show_the_same_picture():
    f = SyntheticFaces(64, prior="uniform").sample_factors(3, 2)
    small = SyntheticFaces(64).render(f).astype(float)
    big = SyntheticFaces(128).render(f)
    down = np.stack([np.asarray(Image.fromarray(b).resize((64, 64), Image.Resampling.BOX)) for b in big])
    assert np.abs(down - small).mean() < 4


def test_celeba_canvas_crop_matches_direct_render():
    direct = SyntheticFaces(64)
    canvas = SyntheticFaces((218, 178), frame=148)
    f = np.concatenate([direct.sample_factors(6, 5), SyntheticFaces(64, prior="uniform").sample_factors(6, 5)])
    small = direct.render(f).astype(float)
    big = canvas.render(f)
    assert big.shape == (12, 218, 178, 3)
    crops = np.stack([
        np.asarray(Image.fromarray(b[35:183, 15:163]).resize((64, 64), Image.Resampling.LANCZOS)) for b in big
    ]).astype(float)
    per_image = np.abs(crops - small).mean(axis=(1, 2, 3))
    assert per_image.max() < 6, per_image
    # the bigger canvas shows more of the scene around the frame (background, shoulders)
    assert big[:, :35].std() > 1 and big[:, 183:].std() > 1


def test_landmarks_and_bboxes_inside_the_canvas():
    canvas = SyntheticFaces((218, 178), frame=148)
    f = canvas.sample_factors(50, 0)
    lm = canvas.landmarks(f)
    assert lm.shape == (50, 10)
    xs, ys = lm[:, 0::2], lm[:, 1::2]
    assert (xs > 15).all() and (xs < 163).all() and (ys > 35).all() and (ys < 183).all()
    assert (lm[:, 0] < lm[:, 2]).all() and (lm[:, 1] < lm[:, 5]).all() and (lm[:, 5] < lm[:, 7]).all()
    box = canvas.bboxes(f)
    assert box.shape == (50, 4) and (box[:, 2:] > 40).all()


def test_render_speed_is_vectorised(faces):
    f = faces.sample_factors(1024, 0)
    faces.render(f[:64])
    start = time.perf_counter()
    faces.render(f)
    rate = len(f) / (time.perf_counter() - start)
    assert rate > 300, f"{rate:.0f} images/s at 64x64"  # measured ~9,000/s on one core


def test_partition_proportions():
    part = generate_celeba_like_partition(202_599)
    assert np.bincount(part).tolist() == [162_770, 19_867, 19_962]
    assert (np.diff(part) >= 0).all(), "contiguous like CelebA's file"
    shuffled = generate_celeba_like_partition(1000, rng=0)
    assert np.bincount(shuffled).tolist() == np.bincount(generate_celeba_like_partition(1000)).tolist()
    assert not (np.diff(shuffled) >= 0).all()
    assert generate_celeba_like_partition(1).tolist() == [0]


def test_write_synthetic_packed(tmp_path):
    ds = write_synthetic_packed(tmp_path / "synth", 300, size=32, seed=4, chunk=128, progress=False)
    assert isinstance(ds, PackedDataset) and len(ds) == 300
    again = PackedDataset(tmp_path / "synth")
    faces = SyntheticFaces(32)
    assert again.images.shape == (300, 32, 32, 3)
    assert again.factor_names == faces.factor_names and again.factor_sizes == faces.factor_sizes
    assert again.attribute_names == faces.attribute_names
    assert np.array_equal(again.factors, faces.sample_factors(300, np.random.default_rng(4)))
    assert np.array_equal(again.attributes, faces.attributes(again.factors))
    assert np.array_equal(np.asarray(again.images[250:]), faces.render(again.factors[250:]))
    assert again.image_ids[0] == "synth_000001" and len(again.image_ids) == 300
    counts = np.bincount(again.partition, minlength=3)
    assert counts.tolist() == np.bincount(generate_celeba_like_partition(300)).tolist()
    assert again.meta.source == "synthetic" and "32x32" in again.meta.preprocessing
