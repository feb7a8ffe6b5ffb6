"""Feeding the classifier: PackedDataModule plus class-imbalance handling.

Two remedies for rare attributes (CelebA's Bald is 2 % positive):

* ``pos-weight``: BCE's ``pos_weight`` per attribute = negatives / positives on the training part
  (clamped to [1/100, 100]), so each attribute's positives and negatives weigh the same in total.
* ``sampler``: training images are drawn with replacement, image i with probability proportional
  to ``mean_j 1 / (2 · P_j(y_ij))`` (P_j the training frequency of the image's value of attribute j).
  Images that carry rare values are seen more often. With many attributes at once no sampler can
  balance all of them exactly; this one balances each attribute on average. The draw is fixed by
  ``(seed, epoch)``, like the plain training order.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from facevae.data.datamodule import PackedDataModule, collate_batch
from facevae.recognition.config import BALANCING

POS_WEIGHT_LIMIT = 100.0


def check_balance(name: str) -> str:
    if name not in BALANCING:
        raise ValueError(f"unknown balancing {name!r}; use one of {', '.join(BALANCING)}")
    return name


def positive_weights(attributes: np.ndarray, limit: float = POS_WEIGHT_LIMIT) -> np.ndarray:
    """negatives / positives per column of a 0/1 matrix, clamped to [1/limit, limit]; 1 where undefined."""
    y = np.asarray(attributes, np.float64)
    pos = y.sum(0)
    neg = len(y) - pos
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where((pos > 0) & (neg > 0), neg / np.maximum(pos, 1), 1.0)
    return np.clip(w, 1.0 / limit, limit).astype(np.float32)


def balanced_sample_weights(attributes: np.ndarray) -> np.ndarray:
    """Per-image weights mean_j 1 / (2 · P_j(y_ij)) (see the module docstring); they average to about 1."""
    y = np.asarray(attributes, np.float64)
    n = max(len(y), 1)
    rate = y.mean(0) if len(y) else np.zeros(y.shape[1])
    p_value = np.where(y > 0.5, rate, 1.0 - rate)
    p_value = np.maximum(p_value, 1.0 / n)
    return (1.0 / (2.0 * p_value)).mean(1)


class BalancedSampler(Sampler[int]):
    """``n`` draws with replacement, weighted; a new draw each epoch fixed by ``(seed, epoch)``."""

    def __init__(self, weights: np.ndarray, seed: int = 0):
        self.weights = torch.as_tensor(np.asarray(weights, np.float64))
        self.n, self.seed, self.epoch = len(self.weights), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        mixed = int(np.random.SeedSequence([self.seed, self.epoch, 7]).generate_state(1, np.uint64)[0] >> 1)
        generator = torch.Generator().manual_seed(mixed)
        self.epoch += 1
        return iter(torch.multinomial(self.weights, self.n, replacement=True, generator=generator).tolist())


class ClassifierDataModule(PackedDataModule):
    """PackedDataModule whose training loader can use :class:`BalancedSampler` (``balance="sampler"``)."""

    def __init__(self, *args, balance: str = "none", **kwargs):
        super().__init__(*args, **kwargs)
        self.balance = check_balance(balance)
        self._balanced_sampler: BalancedSampler | None = None

    def train_attributes(self) -> np.ndarray:
        return self.part_attributes("train")

    def pos_weight(self) -> np.ndarray:
        return positive_weights(self.train_attributes())

    def train_dataloader(self):
        if self.balance != "sampler":
            return super().train_dataloader()
        ds = self.dataset("train")
        if self._balanced_sampler is None:
            self._balanced_sampler = BalancedSampler(balanced_sample_weights(ds.attributes), self.seed)
        return DataLoader(ds, batch_size=self.batch_size, sampler=self._balanced_sampler,
                          num_workers=self.num_workers, collate_fn=collate_batch, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0, drop_last=False)
