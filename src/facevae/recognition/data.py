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

import numpy as np
import torch

from facevae.data.datamodule import EpochSampler, PackedDataModule, epoch_generator
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


class BalancedSampler(EpochSampler):
    """``n`` draws with replacement, weighted; a new draw each epoch fixed by ``(seed, epoch)``."""

    def __init__(self, weights: np.ndarray, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.weights = torch.as_tensor(np.asarray(weights, np.float64))
        super().__init__(len(self.weights), seed, rank, world_size)

    def order(self, epoch: int) -> torch.Tensor:
        generator = epoch_generator(self.seed, epoch, salt=7)
        return torch.multinomial(self.weights, self.n, replacement=True, generator=generator)


class ClassifierDataModule(PackedDataModule):
    """PackedDataModule whose training order can be :class:`BalancedSampler` (``balance="sampler"``)."""

    def __init__(self, *args, balance: str = "none", **kwargs):
        super().__init__(*args, **kwargs)
        self.balance = check_balance(balance)

    def train_attributes(self) -> np.ndarray:
        return self.part_attributes("train")

    def pos_weight(self) -> np.ndarray:
        return positive_weights(self.train_attributes())

    def make_train_sampler(self, n: int) -> EpochSampler:
        if self.balance != "sampler":
            return super().make_train_sampler(n)
        return BalancedSampler(balanced_sample_weights(self.dataset("train").attributes), self.seed, *self._rank())
