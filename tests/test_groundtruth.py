"""dSprites and 3D Shapes loaders, on small files in the published formats written here."""

from __future__ import annotations

import numpy as np
import pytest

from facevae.data.groundtruth import (
    DSPRITES_SIZES,
    DSprites,
    GroundTruthFileError,
    Shapes3D,
    _Grid,
    _read_packed_imgs,
)

# reduced grids: colour, shape, scale, orientation, x, y (colour constant as in the real file)
DSPRITES_SMALL = [1, 3, 2, 4, 2, 3]
# floor hue, wall hue, object hue, scale, shape, orientation (object hue constant here)
SHAPES_SMALL = [2, 3, 1, 2, 4, 3]


def grid_classes(sizes) -> np.ndarray:
    """Every combination of classes, in the published order (last factor fastest)."""
    return np.indices(sizes).reshape(len(sizes), -1).T.astype(np.int64)


def marker_image(p: int, h: int = 64, w: int = 64) -> np.ndarray:
    """A binary image with exactly one pixel set, at flat position p: it names its row."""
    img = np.zeros(h * w, np.uint8)
    img[p] = 1
    return img.reshape(h, w)


def write_dsprites(path, sizes=DSPRITES_SMALL, *, shuffle=False, compressed=True, extra=None):
    classes = grid_classes(sizes)
    position = np.arange(len(classes))
    if shuffle:
        order = np.random.default_rng(0).permutation(len(classes))
        classes, position = classes[order], position[order]
    imgs = np.stack([marker_image(int(p)) for p in position])
    values = classes.astype(np.float64) / np.maximum(np.array(sizes) - 1, 1)
    metadata = np.array({"latents_sizes": np.array(sizes), "title": "dSprites"}, dtype=object)
    arrays = dict(imgs=imgs, latents_classes=classes, latents_values=values, metadata=metadata)
    arrays.update(extra or {})
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def shapes_labels(classes: np.ndarray) -> np.ndarray:
    """Float labels with the published value sets (hues in [0, 1), scale 0.75..1.25, ...)."""
    full = [np.linspace(0, 0.9, 10), np.linspace(0, 0.9, 10), np.linspace(0, 0.9, 10),
            np.linspace(0.75, 1.25, 8), np.arange(4.0), np.linspace(-30, 30, 15)]
    return np.stack([full[j][classes[:, j]] for j in range(6)], axis=1)


def write_shapes3d(path, sizes=SHAPES_SMALL, *, shuffle=False):
    import h5py

    classes = grid_classes(sizes)
    position = np.arange(len(classes))
    if shuffle:
        order = np.random.default_rng(1).permutation(len(classes))
        classes, position = classes[order], position[order]
    images = np.zeros((len(classes), 64, 64, 3), np.uint8)
    images[:, 0, 0, 0] = position % 256  # the pixel names the grid position
    images[:, 0, 0, 1] = position // 256
    images[:, 1:, :, 2] = 7
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images, chunks=(1, 64, 64, 3))
        f.create_dataset("labels", data=shapes_labels(classes))
    return path


def expected_position(factors, sizes):
    full = np.zeros((len(factors), len(sizes)), np.int64)
    full[:, [j for j, s in enumerate(sizes) if s > 1]] = factors
    return np.ravel_multi_index(full.T, sizes)


# --- dSprites ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shuffle", [False, True])
def test_dsprites_round_trip(tmp_path, shuffle):
    data = DSprites(write_dsprites(tmp_path / "d.npz", shuffle=shuffle))
    assert data.factor_sizes == [3, 2, 4, 2, 3]  # the constant colour is not a factor
    assert data.factor_names == ["shape", "scale", "orientation", "position_x", "position_y"]
    assert len(data) == np.prod(DSPRITES_SMALL) and data.image_shape == (64, 64, 1)
    factors = data.sample_factors(50, np.random.RandomState(0))
    images = data.render(factors)
    assert images.shape == (50, 64, 64, 1) and images.dtype == np.uint8
    assert set(np.unique(images)) == {0, 255}
    flat = images.reshape(50, -1)
    np.testing.assert_array_equal(np.argmax(flat, axis=1), expected_position(factors, DSPRITES_SMALL))
    assert (flat.sum(axis=1) == 255).all()
    np.testing.assert_array_equal(data.sample_observations_from_factors(factors, None), images)
    obs, f = data.sample(5, np.random.default_rng(1))
    assert obs.shape == (5, 64, 64, 1) and f.shape == (5, 5)


def test_dsprites_three_channels_and_uncompressed(tmp_path):
    data = DSprites(write_dsprites(tmp_path / "d.npz", compressed=False), channels=3)
    img = data.render([[2, 1, 3, 1, 2]])
    assert img.shape == (1, 64, 64, 3)
    assert (img[..., 0] == img[..., 2]).all() and img.sum() == 3 * 255


def test_dsprites_sampling_matches_disentanglement_lib(tmp_path):
    """One randint(size, size=n) per factor, in order, as disentanglement_lib's state space."""
    data = DSprites(write_dsprites(tmp_path / "d.npz"))
    rs = np.random.RandomState(7)
    expected = np.stack([rs.randint(s, size=9) for s in data.factor_sizes], axis=1)
    np.testing.assert_array_equal(data.sample_factors(9, np.random.RandomState(7)), expected)


def test_published_dsprites_layout_is_the_identity():
    grid = _Grid(grid_classes(DSPRITES_SIZES), ["color", "shape", "scale", "orientation", "x", "y"], "full")
    assert grid.lookup is None  # rows are already in mixed-radix order
    assert grid.factor_sizes == [3, 6, 40, 32, 32]
    assert list(grid.bases) == [737280, 245760, 40960, 1024, 32, 1]
    np.testing.assert_array_equal(grid.rows([[0, 0, 0, 0, 1], [2, 5, 39, 31, 31], [1, 0, 0, 1, 0]]),
                                  [1, 737279, 245760 + 32])


def test_dsprites_chunked_reading(tmp_path):
    path = write_dsprites(tmp_path / "d.npz")
    one, shape = _read_packed_imgs(path, int(np.prod(DSPRITES_SMALL)), chunk_bytes=3 * 4096)
    whole, _ = _read_packed_imgs(path, int(np.prod(DSPRITES_SMALL)))
    assert shape == (64, 64)
    np.testing.assert_array_equal(one, whole)
    assert whole.nbytes == np.prod(DSPRITES_SMALL) * 512  # 8 pixels a byte


def test_dsprites_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        DSprites(tmp_path / "missing.npz")
    np.savez(tmp_path / "nokey.npz", imgs=np.zeros((2, 64, 64), np.uint8))
    with pytest.raises(GroundTruthFileError, match="latents_classes"):
        DSprites(tmp_path / "nokey.npz")
    classes = grid_classes(DSPRITES_SMALL)
    np.savez(tmp_path / "partial.npz", imgs=np.zeros((len(classes) - 1, 64, 64), np.uint8),
             latents_classes=classes[1:])
    with pytest.raises(GroundTruthFileError, match="every combination"):
        DSprites(tmp_path / "partial.npz")
    np.savez(tmp_path / "grey.npz", imgs=np.full((len(classes), 64, 64), 3, np.uint8), latents_classes=classes)
    with pytest.raises(GroundTruthFileError, match="binary"):
        DSprites(tmp_path / "grey.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(GroundTruthFileError):
        DSprites(tmp_path / "junk.npz")
    data = DSprites(write_dsprites(tmp_path / "d.npz"))
    with pytest.raises(ValueError, match="outside"):
        data.render([[3, 0, 0, 0, 0]])
    with pytest.raises(ValueError, match="shape"):
        data.render([[0, 0, 0]])


# --- 3D Shapes -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("in_memory", [True, False])
@pytest.mark.parametrize("shuffle", [False, True])
def test_shapes3d_round_trip(tmp_path, in_memory, shuffle):
    data = Shapes3D(write_shapes3d(tmp_path / "s.h5", shuffle=shuffle), in_memory=in_memory)
    assert data.factor_sizes == [2, 3, 2, 4, 3]  # the constant object hue is not a factor
    assert data.factor_names == ["floor_hue", "wall_hue", "scale", "shape", "orientation"]
    assert data.image_shape == (64, 64, 3)
    factors = data.sample_factors(40, np.random.RandomState(0))
    factors[:3] = factors[0]  # repeated rows (h5py needs unique sorted reads)
    images = data.render(factors)
    assert images.shape == (40, 64, 64, 3) and images.dtype == np.uint8
    position = images[:, 0, 0, 0].astype(np.int64) + 256 * images[:, 0, 0, 1].astype(np.int64)
    np.testing.assert_array_equal(position, expected_position(factors, SHAPES_SMALL))
    assert (images[:, 5, 5, 2] == 7).all()
    np.testing.assert_allclose(data.label_values[3], [0.75, 0.75 + 0.5 / 7])
    data.close()


def test_shapes3d_bad_files(tmp_path):
    import h5py

    with pytest.raises(FileNotFoundError):
        Shapes3D(tmp_path / "missing.h5")
    with h5py.File(tmp_path / "nolabels.h5", "w") as f:
        f.create_dataset("images", data=np.zeros((2, 64, 64, 3), np.uint8))
    with pytest.raises(GroundTruthFileError, match="labels"):
        Shapes3D(tmp_path / "nolabels.h5")
    classes = grid_classes(SHAPES_SMALL)
    with h5py.File(tmp_path / "dupes.h5", "w") as f:
        f.create_dataset("images", data=np.zeros((len(classes), 64, 64, 3), np.uint8))
        labels = shapes_labels(classes)
        labels[1] = labels[0]
        f.create_dataset("labels", data=labels)
    with pytest.raises(GroundTruthFileError):
        Shapes3D(tmp_path / "dupes.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(GroundTruthFileError):
        Shapes3D(tmp_path / "junk.h5")


# --- the loaders drive the metrics -----------------------------------------------------------------------
def test_metrics_run_on_the_loaders(tmp_path):
    from facevae.metrics import beta_vae_score, factor_vae_score

    sprites = DSprites(write_dsprites(tmp_path / "d.npz"))

    def where_is_the_pixel(images):  # a perfect code for these marker images: the grid position
        p = np.argmax(images.reshape(len(images), -1), axis=1)
        return np.stack(np.unravel_index(p, DSPRITES_SMALL), axis=1)[:, 1:].astype(np.float64)

    r = beta_vae_score(sprites, where_is_the_pixel, 0, batch_size=16, num_train=60, num_eval=30)
    assert r["eval_accuracy"] == 1.0
    shapes = Shapes3D(write_shapes3d(tmp_path / "s.h5"), in_memory=False)

    def decode_position(images):
        p = images[:, 0, 0, 0].astype(np.int64) + 256 * images[:, 0, 0, 1].astype(np.int64)
        classes = np.stack(np.unravel_index(p, SHAPES_SMALL), axis=1).astype(np.float64)
        return np.c_[classes, np.zeros(len(p))]  # the constant object hue: a collapsed dimension

    r = factor_vae_score(shapes, decode_position, 0, batch_size=16, num_train=40, num_eval=20,
                         num_variance_estimate=100)
    assert r["eval_accuracy"] == 1.0 and r["num_active_dims"] == 5
    shapes.close()


def damage_imgs_member(path):
    """Flip bytes inside the compressed ``imgs.npy`` member, leaving the archive's directory intact."""
    import zipfile

    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("imgs.npy")
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2
    data[start: start + 16] = bytes(b ^ 0xFF for b in data[start: start + 16])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, message", [
    ("member", "unreadable imgs"),
    ("half-classes", "must be whole numbers"),
    ("text-classes", "must be whole numbers"),
    ("no-rows", r"expected \(N, 6\) factor classes, got \(0, 6\)"),
])
def test_dsprites_damaged_or_non_integer_files_are_file_errors(tmp_path, damage, message):
    path = tmp_path / "d.npz"
    classes = grid_classes(DSPRITES_SMALL)
    imgs = np.stack([marker_image(p) for p in range(len(classes))])
    if damage == "member":
        write_dsprites(path)
        damage_imgs_member(path)
    elif damage == "half-classes":
        np.savez(path, imgs=imgs, latents_classes=classes + 0.5)
    elif damage == "text-classes":
        np.savez(path, imgs=imgs, latents_classes=classes.astype(str))
    else:
        np.savez(path, imgs=imgs[:0], latents_classes=classes[:0])
    with pytest.raises(GroundTruthFileError, match=message) as caught:
        DSprites(path)
    assert str(path) in str(caught.value)
