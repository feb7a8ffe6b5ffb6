"""PackedDataModule: batched memmap reads, uint8 transfer, flips, on-device batches, Lightning."""

from __future__ import annotations

import pickle

import lightning as L
import numpy as np
import pytest
import torch

from facevae.common.errors import DatasetError
from facevae.data.datamodule import EpochShuffleSampler, PackedDataModule, PackedImageDataset, collate_batch
from facevae.data.packed import PackedDataset, write_packed

N, SIZE, A = 600, 16, 10


def coded_images(n: int, size: int) -> np.ndarray:
    """Channel 0/1 hold the row number (row % 256, row // 256) everywhere; channel 2 is a left-to-right
    ramp, so a horizontal flip is visible and never changes the row code."""
    rows = np.arange(n)
    images = np.empty((n, size, size, 3), np.uint8)
    images[..., 0] = (rows % 256)[:, None, None]
    images[..., 1] = (rows // 256)[:, None, None]
    images[..., 2] = (np.arange(size) * (255 // (size - 1)))[None, None, :]
    return images


def row_ids(x: torch.Tensor) -> np.ndarray:
    """Row numbers of a batch, uint8 (B, 3, H, W) or float in [0, 1]."""
    if x.dtype != torch.uint8:
        x = (x * 255).round().to(torch.uint8)
    x = x.cpu().long()
    return (x[:, 0, 0, 0] + 256 * x[:, 1, 0, 0]).numpy()


def is_flipped(x: torch.Tensor) -> np.ndarray:
    ramp = x[:, 2, 0, :].float().cpu()
    return (ramp[:, 0] > ramp[:, -1]).numpy()


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> PackedDataset:
    root = tmp_path_factory.mktemp("dm") / "ds"
    rng = np.random.default_rng(0)
    attrs = ((np.arange(N)[:, None] >> np.arange(A)[None, :]) & 1).astype(np.uint8)  # row bits
    partition = rng.permutation(np.repeat(np.array([0, 1, 2], np.int8), [400, 100, 100]))
    factors = np.stack([np.arange(N) % 3, np.arange(N) % 5], axis=1)
    ds = write_packed(root, coded_images(N, SIZE), attrs, [f"a{i}" for i in range(A)], partition=partition,
                      factors=factors, factor_names=["f3", "f5"], factor_sizes=[3, 5])
    ds.save_split("rnd", rng.permutation(np.repeat(np.array([0, 1, 2, -1], np.int8), [300, 150, 100, 50])))
    return ds


def collect(loader):
    ids, flips, xs = [], [], []
    for x, y in loader:
        ids.append(row_ids(x))
        flips.append(is_flipped(x))
        xs.append(x)
        bits = (y.cpu().numpy() > 0.5).astype(np.int64)
        assert (bits @ (1 << np.arange(y.shape[1])) == (ids[-1] & ((1 << y.shape[1]) - 1))).all() or y.shape[1] != A
    return np.concatenate(ids), np.concatenate(flips), xs


def test_batches_have_the_right_shapes_dtypes_and_range(packed):
    dm = PackedDataModule(packed.root, batch_size=64)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert len(loader) == 7  # ceil(400 / 64)
    x, y = next(iter(loader))
    assert x.dtype == torch.uint8 and x.shape == (64, 3, SIZE, SIZE)
    assert y.dtype == torch.float32 and y.shape == (64, A)
    xf, yf = dm.on_after_batch_transfer((x, y), 0)
    assert xf.dtype == torch.float32 and xf.is_contiguous() and xf.shape == (64, 3, SIZE, SIZE)
    assert 0.0 <= xf.min() and xf.max() <= 1.0 and xf.max() == 1.0
    torch.testing.assert_close(xf * 255, x.float())
    assert dm.image_shape == (3, SIZE, SIZE) and dm.num_attributes == A
    assert dm.attribute_names == [f"a{i}" for i in range(A)]


def test_images_and_attributes_belong_to_the_same_row(packed):
    dm = PackedDataModule(packed.root, batch_size=50)
    ids, _, _ = collect(dm.train_dataloader())  # collect() checks the attribute bits against the image code
    item_x, item_y = dm.dataset("train")[5]
    assert item_x.shape == (3, SIZE, SIZE) and item_x.dtype == torch.uint8
    row = dm.indices("train")[5]
    assert row_ids(item_x[None])[0] == row
    np.testing.assert_array_equal(item_y.numpy(), packed.attributes[row].astype(np.float32))


@pytest.mark.parametrize("split", ["official", "rnd"])
def test_parts_are_disjoint_and_match_the_stored_split(packed, split):
    dm = PackedDataModule(packed.root, split=split, batch_size=32)
    dm.setup("fit")
    dm.setup("test")
    stored = packed.load_split(split)
    seen = {}
    for part, loader in (("train", dm.train_dataloader()), ("valid", dm.val_dataloader()),
                         ("test", dm.test_dataloader())):
        ids, _, _ = collect(loader)
        assert len(ids) == len(set(ids))  # every row once per epoch
        np.testing.assert_array_equal(np.sort(ids), np.flatnonzero(stored == ("train", "valid", "test").index(part)))
        np.testing.assert_array_equal(dm.indices(part), np.sort(ids))
        seen[part] = set(ids)
    assert not (seen["train"] & seen["valid"] or seen["train"] & seen["test"] or seen["valid"] & seen["test"])
    if split == "rnd":
        assert len(seen["train"] | seen["valid"] | seen["test"]) == 550  # the 50 unused rows never appear


def test_val_and_test_are_in_row_order_and_train_is_shuffled(packed):
    dm = PackedDataModule(packed.root, batch_size=32)
    val_ids, _, _ = collect(dm.val_dataloader())
    np.testing.assert_array_equal(val_ids, dm.indices("valid"))
    train_ids, _, _ = collect(dm.train_dataloader())
    assert (train_ids != dm.indices("train")).mean() > 0.9


def test_seeded_order_is_reproducible(packed):
    first = PackedDataModule(packed.root, batch_size=32, seed=3)
    second = PackedDataModule(packed.root, batch_size=32, seed=3)
    other = PackedDataModule(packed.root, batch_size=32, seed=4)
    a0, _, _ = collect(first.train_dataloader())
    b0, _, _ = collect(second.train_dataloader())
    c0, _, _ = collect(other.train_dataloader())
    np.testing.assert_array_equal(a0, b0)
    assert (a0 != c0).mean() > 0.9
    a1, _, _ = collect(first.train_dataloader())  # the next epoch: a new order
    assert (a0 != a1).mean() > 0.9
    sampler = EpochShuffleSampler(400, seed=3)
    sampler.set_epoch(1)  # what Lightning does on resume
    np.testing.assert_array_equal(np.asarray(first.indices("train"))[list(sampler)], a1)


def test_flips_only_in_training(packed):
    dm = PackedDataModule(packed.root, batch_size=400, flip=True)
    x, y = next(iter(dm.train_dataloader()))
    torch.manual_seed(0)
    train_x, _ = dm.prepare_batch((x, y), train=True)
    flipped = is_flipped(train_x)
    assert 0.3 < flipped.mean() < 0.7
    np.testing.assert_array_equal(row_ids(train_x), row_ids(x))  # same images, some mirrored
    torch.testing.assert_close(train_x[flipped], x[flipped].float().flip(-1) / 255)
    eval_x, _ = dm.prepare_batch((x, y), train=False)
    assert not is_flipped(eval_x).any()
    eval_x, _ = dm.on_after_batch_transfer((x, y), 0)  # no trainer attached: not training
    assert not is_flipped(eval_x).any()
    no_flip = PackedDataModule(packed.root, batch_size=400, flip=False)
    assert not is_flipped(no_flip.prepare_batch((x, y), train=True)[0]).any()


def test_on_device_yields_the_same_batches_as_the_loader(packed):
    loader_dm = PackedDataModule(packed.root, batch_size=48, seed=11)
    device_dm = PackedDataModule(packed.root, batch_size=48, seed=11, on_device=True)
    device_dm.setup("fit")
    device_loader = device_dm.train_dataloader()
    assert not isinstance(device_loader, torch.utils.data.DataLoader)
    assert len(device_loader) == len(loader_dm.train_dataloader()) == 9
    for _ in range(2):  # two epochs: both paths draw the same per-epoch permutation
        ids_a, _, xs_a = collect(loader_dm.train_dataloader())
        ids_b, _, xs_b = collect(device_loader)
        np.testing.assert_array_equal(ids_a, ids_b)
        torch.testing.assert_close(torch.cat(xs_a), torch.cat(xs_b))
    val_ids, _, _ = collect(device_dm.val_dataloader())
    np.testing.assert_array_equal(val_ids, device_dm.indices("valid"))


def test_attribute_subset_and_resize(packed):
    dm = PackedDataModule(packed.root, batch_size=16, attributes=["a3", "a1"], image_size=32)
    assert dm.attribute_names == ["a3", "a1"] and dm.num_attributes == 2 and dm.image_shape == (3, 32, 32)
    x, y = next(iter(dm.val_dataloader()))
    rows = row_ids(x)
    np.testing.assert_array_equal(y.numpy(), packed.attributes[rows][:, [3, 1]].astype(np.float32))
    xf, _ = dm.prepare_batch((x, y))
    assert xf.shape == (16, 3, 32, 32) and 0.0 <= xf.min() and xf.max() <= 1.0
    small = PackedDataModule(packed.root, batch_size=16, image_size=8)
    xs, _ = small.prepare_batch((x, y))
    assert xs.shape == (16, 3, 8, 8)
    torch.testing.assert_close(xs[:, 0].mean(dim=(1, 2)), x[:, 0].float().mean(dim=(1, 2)) / 255, atol=1e-3, rtol=0)


def test_factors_and_analysis_accessors(packed):
    dm = PackedDataModule(packed.root, split="rnd")
    assert dm.factor_names == ["f3", "f5"] and dm.factor_sizes == [3, 5] and dm.has_factors
    test_rows = dm.indices("test")
    np.testing.assert_array_equal(dm.test_factors(), packed.factors[test_rows])
    np.testing.assert_array_equal(dm.part_attributes("val"), packed.attributes[dm.indices("valid")])
    xs = [x for x, _ in dm.batches("test", batch_size=40)]
    assert [len(x) for x in xs] == [40, 40, 20] and xs[0].dtype == torch.float32
    np.testing.assert_array_equal(np.concatenate([row_ids(x) for x in xs]), test_rows)


def test_clear_errors(packed):
    with pytest.raises(DatasetError, match="no split named 'nope'.*available: official, rnd"):
        PackedDataModule(packed.root, split="nope")
    with pytest.raises(ValueError, match="unknown attribute"):
        PackedDataModule(packed.root, attributes=["a1", "Smiling"])
    with pytest.raises(ValueError, match="batch_size"):
        PackedDataModule(packed.root, batch_size=0)
    with pytest.raises(ValueError, match="unknown part"):
        PackedDataModule(packed.root).indices("training-set")


def test_dataset_pickles_without_its_images(packed):
    ds = PackedImageDataset(packed, np.arange(100))
    _ = ds[0]  # the memmap is open in this process
    blob = pickle.dumps(ds)
    assert len(blob) < packed.images[:100].nbytes // 4
    clone = pickle.loads(blob)
    x, y = collate_batch(clone.__getitems__([7, 3, 99]))
    np.testing.assert_array_equal(row_ids(x), [7, 3, 99])  # the order asked for, read sorted


def test_two_workers(packed):
    dm = PackedDataModule(packed.root, batch_size=32, num_workers=2, seed=5)
    ids, _, _ = collect(dm.train_dataloader())
    np.testing.assert_array_equal(np.sort(ids), dm.indices("train"))
    single, _, _ = collect(PackedDataModule(packed.root, batch_size=32, num_workers=0, seed=5).train_dataloader())
    np.testing.assert_array_equal(ids, single)  # workers do not change the order


class TinyModule(L.LightningModule):
    """Records what reaches the model: dtypes, ranges, flips, rows."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(3 * SIZE * SIZE, A)
        self.train_flips, self.val_flips, self.train_rows, self.dtypes = [], [], [], set()

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.dtypes.add(x.dtype)
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        self.train_flips.append(is_flipped(x))
        self.train_rows.append(row_ids(x))
        return torch.nn.functional.binary_cross_entropy_with_logits(self.layer(x.reshape(len(x), -1)), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.dtypes.add(x.dtype)
        self.val_flips.append(is_flipped(x))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.parametrize("on_device", [False, True])
def test_inside_a_lightning_trainer(packed, on_device, tmp_path):
    torch.manual_seed(0)
    dm = PackedDataModule(packed.root, batch_size=32, flip=True, on_device=on_device)
    model = TinyModule()
    trainer = L.Trainer(max_epochs=1, limit_train_batches=5, limit_val_batches=2, accelerator="cpu",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    assert trainer.state.finished
    assert model.dtypes == {torch.float32}
    assert len(model.train_flips) == 5
    train_flips = np.concatenate(model.train_flips)
    assert 0.2 < train_flips.mean() < 0.8  # training batches are flipped at random
    assert not np.concatenate(model.val_flips).any()  # validation batches never
    assert set(np.concatenate(model.train_rows)) <= set(dm.indices("train"))
