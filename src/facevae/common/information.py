"""Entropy and mutual information of discrete labels (plug-in estimates, nats).

One implementation for the dimension naming (facevae.analysis.dims) and the disentanglement
metrics (facevae.metrics), which must agree with disentanglement_lib: the contingency-table
estimate of ``sklearn.metrics.mutual_info_score``, clipped at 0 like it.
"""

from __future__ import annotations

import numpy as np


def label_codes(column) -> tuple[np.ndarray, int]:
    """Any discrete column re-coded to ``0 .. n-1``: ``(codes, n)``."""
    values, inverse = np.unique(np.asarray(column), return_inverse=True)
    return inverse.reshape(-1).astype(np.int64), len(values)


def coded_mutual_information(a: np.ndarray, na: int, b: np.ndarray, nb: int) -> float:
    """Mutual information of two columns already coded ``0..na-1`` and ``0..nb-1`` (one bincount)."""
    n = len(a)
    table = np.bincount(a * nb + b, minlength=na * nb).reshape(na, nb).astype(np.float64)
    pa, pb = table.sum(axis=1), table.sum(axis=0)
    i, j = np.nonzero(table)
    nij = table[i, j]
    mi = np.sum(nij / n * (np.log(nij) + np.log(n) - np.log(pa[i]) - np.log(pb[j])))
    return float(max(mi, 0.0))


def mutual_information(a, b) -> float:
    """Mutual information of two discrete label vectors of any kind."""
    return coded_mutual_information(*label_codes(a), *label_codes(b))


def entropy(labels) -> float:
    """Entropy of a discrete label vector of any kind."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    p = counts / counts.sum()
    return float(max(-np.sum(p * np.log(p)), 0.0))
