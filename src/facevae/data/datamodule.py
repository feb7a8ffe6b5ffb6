"""A Lightning DataModule that feeds training straight from a packed dataset.

Design, for speed:

* Images stay uint8 and memory-mapped. A batch is read with **one** sorted fancy index into the
  memmap (``images[np.sort(rows)]``), through the dataset's ``__getitems__``, which PyTorch's
  DataLoader calls with the whole batch of indices; that is far faster than one read per item.
* Batches travel (worker → main process → device) as uint8, 4x smaller than float32; they
  become float in [0, 1], are flipped (training only) and resized (``image_size``) on the
  device, in :meth:`PackedDataModule.on_after_batch_transfer`.
* ``on_device=True`` skips DataLoaders altogether: the whole train (and valid/test) part is held
  as one uint8 tensor on the model's device and batches are slices of a seeded permutation.

Batches are ``(images, attributes)``: the loaders yield ``uint8 (B, 3, H, W)`` and ``float32 (B, A)``;
after ``on_after_batch_transfer`` (which Lightning calls; call :meth:`PackedDataModule.prepare_batch`
yourself outside a Trainer) images are ``float32`` in [0, 1]. :meth:`PackedDataModule.batches`
yields ready-to-use float batches for analysis code.

The DataLoader path keeps PyTorch's standard samplers, so Lightning's DDP replaces them with
``DistributedSampler`` as usual; the on-device path shards its permutation by rank itself.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from facevae.common.errors import DatasetError
from facevae.data.attributes import PARTITION_NAMES, check_attribute_names
from facevae.data.packed import PackedDataset

_PART_ALIASES = {"train": "train", "fit": "train", "valid": "valid", "val": "valid", "validation": "valid",
                 "validate": "valid", "test": "test"}


def _part_name(part: str) -> str:
    try:
        return _PART_ALIASES[part]
    except KeyError:
        raise ValueError(f"unknown part {part!r}; use one of {', '.join(PARTITION_NAMES)}") from None


class PackedImageDataset(Dataset):
    """Rows ``indices`` of a packed dataset: ``(uint8 CHW image, float32 attributes)`` per item.

    ``__getitems__`` reads a whole batch with one sorted fancy index into the memmap and returns
    the already-collated pair ``(uint8 (B, 3, H, W), float32 (B, A))`` (use :func:`collate_batch`).
    The memmap is opened lazily and never pickled, so the dataset is cheap to send to worker
    processes under any start method (fork, spawn, forkserver).
    """

    def __init__(self, packed: PackedDataset | str | os.PathLike, indices: Sequence[int] | np.ndarray,
                 attribute_idx: Sequence[int] | np.ndarray | None = None):
        if not isinstance(packed, PackedDataset):
            packed = PackedDataset(packed)
        self.root = Path(packed.root)
        self.indices = np.asarray(indices, np.int64)
        if self.indices.ndim != 1:
            raise ValueError(f"indices must be one-dimensional, got shape {self.indices.shape}")
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= len(packed)):
            raise IndexError(f"indices out of range for a dataset of {len(packed)} images")
        if attribute_idx is None:
            attribute_idx = np.arange(packed.attributes.shape[1])
        self.attribute_idx = np.asarray(attribute_idx, np.int64)
        # Small: (n, A) uint8 in memory, converted to float per batch.
        self.attributes = np.ascontiguousarray(packed.attributes[self.indices][:, self.attribute_idx])
        self.image_shape = (3, packed.meta.height, packed.meta.width)
        self._images = packed.images

    # The memmap is reopened in each process that needs it, never pickled (pickling an np.memmap
    # would copy the whole array into the pickle).
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_images"] = None
        return state

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            self._images = np.load(self.root / "images.npy", mmap_mode="r")
        return self._images

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        if np.ndim(i) != 0:  # a list / array of positions: a whole batch
            return self.__getitems__(i)
        i = int(i)
        row = self.indices[i]
        image = torch.from_numpy(np.array(self.images[row])).permute(2, 0, 1)  # a writable copy
        return image, torch.from_numpy(self.attributes[i].astype(np.float32))

    def __getitems__(self, items) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch ``items`` (positions in this dataset), in the order given, read at once."""
        items = np.asarray(items, np.int64).reshape(-1)
        rows = self.indices[items]
        order = np.argsort(rows, kind="stable")
        block = self.images[rows[order]]  # one sorted fancy index: sequential-ish reads
        images = np.empty_like(block)
        images[order] = block
        x = torch.from_numpy(images).permute(0, 3, 1, 2)  # (B, 3, H, W) view; made contiguous on device
        y = torch.from_numpy(self.attributes[items].astype(np.float32))
        return x, y


def collate_batch(data):
    """Pass through a batch made by ``__getitems__``; collate a list of items otherwise."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor) and data[0].ndim == 4:
        return data
    return torch.utils.data.default_collate(data)


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The training order of ``epoch``: a permutation of ``n`` fixed by ``(seed, epoch)``."""
    return torch.randperm(n, generator=epoch_generator(seed, epoch))


def epoch_generator(seed: int, epoch: int, salt: int | None = None) -> torch.Generator:
    """A torch generator fixed by ``(seed, epoch[, salt])``, independent of the global RNG."""
    entropy = [int(seed), int(epoch)] + ([] if salt is None else [int(salt)])
    mixed = int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(mixed)


class EpochSampler(Sampler[int]):
    """An order per epoch fixed by ``(seed, epoch)``, this rank's share of it, and a resumable start.

    Subclasses give :meth:`order`. With several processes (DDP) the order is padded by its own
    start to a multiple of ``world_size`` and each rank takes every ``world_size``-th item, as
    ``DistributedSampler`` does. ``skip`` items of the next epoch are left out once: what a run
    killed mid-epoch had already trained on (see :class:`ResumableDataLoader`).
    Lightning calls ``set_epoch`` before each epoch; without a trainer, each ``iter`` moves on.
    """

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.n, self.seed, self.epoch = int(n), int(seed), 0
        self.rank, self.world_size = int(rank), int(world_size)
        self.skip = 0

    def order(self, epoch: int) -> torch.Tensor:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) != self.epoch:
            self.skip = 0  # a resume position belongs to the epoch it was saved in
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(self.n / self.world_size)

    def indices(self) -> torch.Tensor:
        """This rank's positions for the current epoch, past ``skip``; then moves to the next epoch."""
        order = self.order(self.epoch)
        if self.world_size > 1:
            total = len(self) * self.world_size
            order = torch.cat([order, order[: total - self.n]])[self.rank :: self.world_size]
        order, self.skip = order[self.skip :], 0
        self.epoch += 1
        return order

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())


class EpochShuffleSampler(EpochSampler):
    """A new permutation each epoch, fixed by ``(seed, epoch)``: the same order on every run."""

    def order(self, epoch: int) -> torch.Tensor:
        return epoch_permutation(self.n, self.seed, epoch)


class ShardSampler(Sampler[int]):
    """Positions ``rank, rank + world_size, ...`` in order: one process's share of an evaluation part."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1):
        self.n, self.rank, self.world_size = int(n), int(rank), int(world_size)

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))


class ResumableIteration:
    """Counts the batches an iteration has handed out, so Lightning can store where an epoch stands.

    Lightning saves ``state_dict()`` of a training loader in every checkpoint and, on resume, calls
    ``load_state_dict`` before the interrupted epoch continues: the sampler then leaves out the
    batches already trained on, and the epoch goes on at the batch after the last checkpointed one.
    Needs ``self.sampler`` (an :class:`EpochSampler`) and ``self.batch_size``.
    """

    _epoch = 0
    _served = 0

    def _counted(self, batches: Iterator) -> Iterator:
        self._epoch, self._served = self.sampler.epoch, 0
        for batch in batches:
            self._served += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": int(self._epoch), "batches": int(self._served)}

    def load_state_dict(self, state: dict) -> None:
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if batches >= len(self):  # saved at the end of an epoch: the next one starts afresh
            epoch, batches = epoch + 1, 0
        self.sampler.set_epoch(epoch)
        self.sampler.skip = batches * self.batch_size


class ResumableDataLoader(ResumableIteration, DataLoader):
    """A DataLoader over an :class:`EpochSampler` that a mid-epoch resume continues where it stopped."""

    def __iter__(self):
        # A generator: its body (and so the sampler's order) runs at the first batch, after set_epoch.
        yield from self._counted(super().__iter__())


class OnDeviceLoader(ResumableIteration):
    """Batches sliced from one uint8 tensor held on the training device.

    An iterable with ``__len__`` that Lightning consumes like a DataLoader. The tensors move to
    ``device_fn()`` (the model's device, when a Trainer is attached) on first iteration. With a
    ``sampler`` (training) the order and the share of each rank are the sampler's, the same as the
    DataLoader path's, and the loader resumes mid-epoch like :class:`ResumableDataLoader`; without
    one, batches are in row order.
    """

    def __init__(self, images: torch.Tensor, attributes: torch.Tensor, batch_size: int, *,
                 sampler: EpochSampler | None = None, drop_last: bool = False, device_fn=None):
        self.images, self.attributes = images, attributes
        self.batch_size = int(batch_size)
        self.drop_last = drop_last
        self.sampler = sampler
        self.batch_sampler = None  # Lightning inspects both, as on a DataLoader
        self.device_fn = device_fn or (lambda: images.device)

    def _items(self) -> int:
        return len(self.images) if self.sampler is None else len(self.sampler)

    def __len__(self) -> int:
        n = self._items()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _to_device(self) -> torch.device:
        device = torch.device(self.device_fn())
        if self.images.device != device:
            self.images = self.images.to(device)
            self.attributes = self.attributes.to(device)
        return device

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        device = self._to_device()
        order = torch.arange(len(self.images)) if self.sampler is None else self.sampler.indices()
        order = order.to(device)
        stop = len(order) - (len(order) % self.batch_size if self.drop_last else 0)
        for lo in range(0, stop, self.batch_size):
            idx = order[lo : lo + self.batch_size]
            yield self.images[idx], self.attributes[idx]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.sampler is None:
            yield from self._batches()
        else:
            yield from self._counted(self._batches())


def _load_part_tensor(dataset: PackedImageDataset, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """A part as uint8 (n, 3, H, W) and float32 (n, A) CPU tensors, read chunk by chunk."""
    n = len(dataset)
    c, h, w = dataset.image_shape
    images = torch.empty((n, c, h, w), dtype=torch.uint8)
    for lo in range(0, n, chunk):
        x, _ = dataset.__getitems__(np.arange(lo, min(lo + chunk, n)))
        images[lo : lo + len(x)] = x
    return images, torch.from_numpy(dataset.attributes.astype(np.float32))


def prepare_images(x: torch.Tensor, image_size: int | None) -> torch.Tensor:
    """``(N, C, H, W)`` images → float32 in [0, 1] (from uint8), resized to ``image_size`` square."""
    if x.dtype == torch.uint8:
        x = x.contiguous().float().div_(255.0)
    if image_size is not None and tuple(x.shape[-2:]) != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False,
                          antialias=True).clamp_(0.0, 1.0)
    return x


class PackedDataModule(L.LightningDataModule):
    """Train/valid/test loaders over a packed dataset folder and one of its stored splits.

    Parameters
    ----------
    data_dir: the packed dataset folder.
    split: a stored split's name (``official`` = the source's partition).
    batch_size, num_workers, pin_memory: as for DataLoader.
    flip: random horizontal flips of training batches (never valid/test).
    on_device: hold each part as one uint8 tensor on the model's device; no workers.
    attributes: names of the attributes to return (default all, in file order).
    image_size: resize batches to this side (antialiased) when it differs from the stored size.
    seed: the training order's seed (same seed, same order).

    ``num_workers=0`` is usually the fastest choice here: reading a batch is one memory copy
    from the page cache, and worker processes only add inter-process transfer on top of it.
    """

    def __init__(self, data_dir: str | os.PathLike, split: str = "official", batch_size: int = 128,
                 num_workers: int = 0, flip: bool = False, on_device: bool = False,
                 attributes: list[str] | None = None, image_size: int | None = None, seed: int = 0,
                 pin_memory: bool = False):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers cannot be negative, got {num_workers}")
        if image_size is not None and image_size < 1:
            raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")
        self.save_hyperparameters()
        if num_workers == 0:
            # Lightning's generic advice to add workers does not apply to memory-mapped batches.
            warnings.filterwarnings("ignore", message=r".*does not have many workers which may be a bottleneck.*")
        self.data_dir = Path(data_dir)
        self.packed = PackedDataset(self.data_dir)
        self.split = split
        self.assignment = self.packed.load_split(split)  # DatasetError names the available splits
        names = self.packed.attribute_names
        selected = names if attributes is None else check_attribute_names(list(attributes), names)
        self._attribute_names = list(selected)
        self.attribute_idx = np.array([names.index(a) for a in selected], np.int64)
        self.batch_size, self.num_workers, self.pin_memory = int(batch_size), int(num_workers), bool(pin_memory)
        self.flip, self.on_device, self.seed = bool(flip), bool(on_device), int(seed)
        self.image_size = image_size
        self._datasets: dict[str, PackedImageDataset] = {}
        self._device_loaders: dict[str, OnDeviceLoader] = {}
        self._train_sampler: EpochSampler | None = None

    # --- what the model needs to know -----------------------------------------------------------
    @property
    def attribute_names(self) -> list[str]:
        return list(self._attribute_names)

    @property
    def num_attributes(self) -> int:
        return len(self._attribute_names)

    @property
    def stored_image_shape(self) -> tuple[int, int, int]:
        return (3, self.packed.meta.height, self.packed.meta.width)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the batches the model sees (after any resize)."""
        if self.image_size is None:
            return self.stored_image_shape
        return (3, self.image_size, self.image_size)

    @property
    def factor_names(self) -> list[str]:
        return self.packed.factor_names

    @property
    def factor_sizes(self) -> list[int]:
        return self.packed.factor_sizes

    @property
    def has_factors(self) -> bool:
        return self.packed.factors is not None and bool(self.packed.factor_names)

    # --- rows of each part, for later analysis ----------------------------------------------------
    def indices(self, part: str) -> np.ndarray:
        """Dataset rows of ``part`` ('train', 'valid'/'val', 'test') in this split, ascending."""
        return np.flatnonzero(self.assignment == PARTITION_NAMES.index(_part_name(part)))

    def part_attributes(self, part: str) -> np.ndarray:
        """uint8 (n, A) selected attributes of ``part``, in the order of :meth:`indices`."""
        return self.packed.attributes[self.indices(part)][:, self.attribute_idx]

    def part_factors(self, part: str) -> np.ndarray | None:
        """int64 (n, F) ground-truth factors of ``part`` (None without factors)."""
        if not self.has_factors:
            return None
        return self.packed.factors[self.indices(part)]

    def test_factors(self) -> np.ndarray | None:
        return self.part_factors("test")

    def dataset(self, part: str) -> PackedImageDataset:
        part = _part_name(part)
        if part not in self._datasets:
            self._datasets[part] = PackedImageDataset(self.packed, self.indices(part), self.attribute_idx)
        return self._datasets[part]

    # --- Lightning hooks ----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        parts = {"fit": ("train", "valid"), "validate": ("valid",), "test": ("test",), "predict": ("test",)}
        for part in parts.get(stage, PARTITION_NAMES):
            ds = self.dataset(part)
            if part == "train" and len(ds) == 0:
                raise DatasetError(f"{self.data_dir}: split {self.split!r} has no training images")
            if part == "valid" and stage == "fit" and len(ds) == 0:
                # Early stopping and best.ckpt are chosen on the validation ELBO: a run without one has no model.
                raise DatasetError(f"{self.data_dir}: split {self.split!r} has no validation images "
                                   f"({len(self.packed):,} images in all); use more images, or store a split "
                                   "with a validation part (`facevae data split DATA --ratios ...`)")

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("valid", shuffle=False)

    def test_dataloader(self):
        return self._loader("test", shuffle=False)

    def predict_dataloader(self):
        return self._loader("test", shuffle=False)

    def make_train_sampler(self, n: int) -> EpochSampler:
        """The training order (a subclass may draw another, e.g. a class-balanced one)."""
        return EpochShuffleSampler(n, self.seed, *self._rank())

    def _loader(self, part: str, shuffle: bool):
        ds = self.dataset(part)
        sampler = None
        if shuffle:  # one sampler for the module's life, so a new loader continues the epoch count
            if self._train_sampler is None or self._train_sampler.n != len(ds):
                self._train_sampler = self.make_train_sampler(len(ds))
            sampler = self._train_sampler
        if self.on_device:
            if part not in self._device_loaders:
                images, attributes = _load_part_tensor(ds)
                self._device_loaders[part] = OnDeviceLoader(images, attributes, self.batch_size, sampler=sampler,
                                                            device_fn=self._device)
            return self._device_loaders[part]
        # Lightning's own sampler replacement is off (see training.run.lightning_trainer): the samplers
        # shard by rank themselves, and the training one can then resume mid-epoch.
        loader = ResumableDataLoader if shuffle else DataLoader
        return loader(
            ds, batch_size=self.batch_size, sampler=sampler or ShardSampler(len(ds), *self._rank()),
            num_workers=self.num_workers, collate_fn=collate_batch, pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0, drop_last=False,
            # its own generator: the workers' base seed is then not drawn from the global RNG, which
            # a resumed run restores from its checkpoint and must find as it was left
            generator=torch.Generator().manual_seed(self.seed),
        )

    def _device(self) -> torch.device:
        trainer = self.trainer
        if trainer is not None:
            try:
                return trainer.strategy.root_device
            except Exception:  # noqa: BLE001 - a trainer without a strategy yet
                pass
        return torch.device("cpu")

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            return trainer.global_rank, trainer.world_size
        return 0, 1

    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        training = self.trainer is not None and self.trainer.training
        return self.prepare_batch(batch, train=training)

    def prepare_batch(self, batch, train: bool = False):
        """uint8 images → float32 in [0, 1], random flips if ``train`` and ``flip``, resize."""
        x, y = batch
        if train and self.flip:
            x = prepare_images(x, None)
            mask = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(mask[:, None, None, None], x.flip(-1), x)
        return prepare_images(x, self.image_size), y

    def batches(self, part: str, device: str | torch.device | None = None, batch_size: int | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Float batches of ``part`` in row order, on ``device``, for evaluation and analysis code."""
        ds = self.dataset(part)
        device = torch.device(device) if device is not None else torch.device("cpu")
        bs = batch_size or self.batch_size
        for lo in range(0, len(ds), bs):
            x, y = ds.__getitems__(np.arange(lo, min(lo + bs, len(ds))))
            yield self.prepare_batch((x.to(device), y.to(device)), train=False)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{p} {len(self.indices(p))}" for p in PARTITION_NAMES)
        return (f"PackedDataModule({str(self.data_dir)!r}, split={self.split!r}, {sizes}, "
                f"batch_size={self.batch_size}, image_shape={self.image_shape})")
