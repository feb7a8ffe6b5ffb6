"""Shared pieces of the disentanglement metrics.

Conventions (the same for every metric in :mod:`facevae.metrics`):

* arrays are **row-major**: ``codes`` is ``(N, D)`` (one row per observation, one column per code
  dimension), ``factors`` is ``(N, K)``. (disentanglement_lib stores them transposed; the
  numbers do not depend on that.)
* factor values may be any discrete labels (ints, floats of a finite grid, -1/1 or 0/1
  attributes, booleans): every column is re-coded to ``0 .. n_values-1`` before use.
* ``random_state``: a ``numpy.random.RandomState``, a ``numpy.random.Generator``, an int seed or
  ``None``. An int or ``None`` becomes a ``RandomState`` (as disentanglement_lib uses).

The ground-truth-data contract used by the sampling metrics (synthetic faces, dSprites,
3D Shapes, or any object of the disentanglement_lib family):

* ``factor_sizes`` (or ``factors_num_values``): number of values of every factor;
* ``sample_factors(n, random_state)`` -> int ``(n, K)``;
* ``render(factors)`` -> observations (for example uint8 ``(n, H, W, C)``), or
  ``sample_observations_from_factors(factors, random_state)`` (disentanglement_lib's name);
* optionally ``encode_batches(factors, encode, batch_size)`` -> the codes of consecutive
  ``batch_size`` rows, one batch at a time, as ``encode`` gives them for the batch's observations:
  a deterministic renderer may render and encode them in other processes (:func:`encode_factors`).

The sampling metrics make all their random draws first, in disentanglement_lib's order, and only
then render and encode; with a renderer that draws nothing (``render(factors)``) that gives the
same observations as interleaving the two.

and ``encode(observations) -> codes (n, D)`` (numpy, or a CPU/GPU torch tensor).
"""

from __future__ import annotations

import numpy as np

from facevae.common.information import coded_mutual_information, entropy, label_codes

#: Number of histogram bins of the discretiser (disentanglement_lib's study configs: 20).
NUM_BINS = 20


# --- random state ----------------------------------------------------------------------------------
def as_random_state(random_state):
    """A RandomState or Generator: ints and None become ``np.random.RandomState(seed)``."""
    if isinstance(random_state, (np.random.RandomState, np.random.Generator)):
        return random_state
    return np.random.RandomState(random_state)


def randint(random_state, high: int, size=None):
    """Uniform ints in ``0 .. high-1`` from a RandomState or a Generator."""
    if isinstance(random_state, np.random.Generator):
        return random_state.integers(0, high, size=size)
    return random_state.randint(high, size=size)


def seed_from(random_state) -> int:
    """A 31-bit int seed drawn from ``random_state`` (for scikit-learn estimators)."""
    return int(randint(random_state, 2**31 - 1))


def logistic_regression(seed=None):
    """disentanglement_lib's ``LogisticRegression()``, as scikit-learn defined it in 2019.

    Then the defaults were the liblinear solver and one-vs-rest for more than two classes (L2,
    ``C=1``, intercept, ``tol=1e-4``); today's default (lbfgs, multinomial) gives slightly
    different numbers (about a point of β-VAE accuracy, or 0.01 of explicitness AUC, on noisy
    codes). This is that classifier: liblinear binary problems, one per class, whose normalised
    probabilities and arg-max predictions are what the old ``LogisticRegression`` returned.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    return OneVsRestClassifier(LogisticRegression(solver="liblinear", random_state=seed))


# --- the ground-truth contract ------------------------------------------------------------------------
def factor_sizes(data) -> list[int]:
    """Number of values of each factor of a ground-truth data object."""
    sizes = getattr(data, "factor_sizes", None)
    if sizes is None:
        sizes = getattr(data, "factors_num_values", None)
    if sizes is None:
        raise TypeError(f"{type(data).__name__} has neither factor_sizes nor factors_num_values")
    return [int(s) for s in sizes]


def render(data, factors: np.ndarray, random_state):
    """Observations of ``factors``: ``data.render(factors)`` or disentanglement_lib's
    ``data.sample_observations_from_factors(factors, random_state)``."""
    fn = getattr(data, "render", None)
    if fn is not None:
        return fn(factors)
    fn = getattr(data, "sample_observations_from_factors", None)
    if fn is None:
        raise TypeError(f"{type(data).__name__} has neither render nor sample_observations_from_factors")
    return fn(factors, random_state)


def to_numpy(codes) -> np.ndarray:
    """A 2-d float64 numpy array from what ``encode`` returned (numpy, list, torch tensor)."""
    if hasattr(codes, "detach"):  # a torch tensor, possibly on a GPU
        codes = codes.detach().float().cpu().numpy()
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim == 1:
        codes = codes[:, None]
    if codes.ndim != 2:
        raise ValueError(f"encode must return (n, D) codes, got shape {codes.shape}")
    return codes


def _checked(codes, n: int) -> np.ndarray:
    codes = to_numpy(codes)
    if len(codes) != n:
        raise ValueError(f"encode returned {len(codes)} codes for {n} observations")
    return codes


def encode_factors(data, encode, factors: np.ndarray, random_state, batch_size: int) -> np.ndarray:
    """Codes ``(N, D)`` of the observations of ``factors`` ``(N, K)``, rendered and encoded
    ``batch_size`` rows at a time (by ``data.encode_batches`` where it has one)."""
    batch_size = max(1, int(batch_size))
    starts = range(0, len(factors), batch_size)
    elsewhere = getattr(data, "encode_batches", None)
    codes = (elsewhere(factors, encode, batch_size) if elsewhere is not None else
             (encode(render(data, factors[lo: lo + batch_size], random_state)) for lo in starts))
    out = [_checked(c, len(factors[lo: lo + batch_size])) for lo, c in zip(starts, codes)]
    if len(out) != len(starts):
        raise ValueError(f"{type(data).__name__}.encode_batches gave {len(out)} batches for {len(starts)}")
    return np.concatenate(out)


def sample_codes(data, encode, num_points: int, random_state, batch_size: int = 16):
    """``num_points`` codes and their factors: ``(codes (N, D), factors (N, K))``.

    disentanglement_lib's ``generate_batch_factor_code``: factors drawn from the data's prior
    ``batch_size`` at a time, rendered and encoded.
    """
    random_state = as_random_state(random_state)
    sizes = [min(batch_size, num_points - lo) for lo in range(0, num_points, batch_size)]
    factors = np.concatenate([np.asarray(data.sample_factors(n, random_state)) for n in sizes])
    return encode_factors(data, encode, factors, random_state, batch_size), factors


# --- discrete statistics ----------------------------------------------------------------------------
def check_pair(codes, factors, what: str = "") -> tuple[np.ndarray, np.ndarray]:
    codes = np.asarray(codes, dtype=np.float64)
    factors = np.asarray(factors)
    if codes.ndim == 1:
        codes = codes[:, None]
    if factors.ndim == 1:
        factors = factors[:, None]
    if codes.ndim != 2 or factors.ndim != 2:
        raise ValueError(f"codes{what} must be (N, D) and factors{what} (N, K)")
    if len(codes) != len(factors):
        raise ValueError(f"codes{what} has {len(codes)} rows but factors{what} has {len(factors)}")
    if len(codes) < 2:
        raise ValueError(f"need at least 2 rows of codes{what}")
    if not np.all(np.isfinite(codes)):
        raise ValueError(f"codes{what} contain NaN or infinite values")
    return codes, factors


def histogram_discretize(codes: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
    """Every column cut into ``num_bins`` equal-width bins over its range (int ``1 .. num_bins``).

    disentanglement_lib's ``histogram_discretizer``: ``np.digitize`` against the left edges of
    ``np.histogram(column, num_bins)``.
    """
    codes = np.asarray(codes, dtype=np.float64)
    out = np.empty(codes.shape, np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram(codes[:, j], num_bins)[1]
        out[:, j] = np.digitize(codes[:, j], edges[:-1])
    return out


def discrete_mutual_info(codes_discrete: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """``(D, K)`` mutual information (nats) between discretised codes and factors."""
    cs = [label_codes(codes_discrete[:, i]) for i in range(codes_discrete.shape[1])]
    fs = [label_codes(factors[:, j]) for j in range(factors.shape[1])]
    m = np.zeros((len(cs), len(fs)))
    for i, (a, na) in enumerate(cs):
        for j, (b, nb) in enumerate(fs):
            m[i, j] = coded_mutual_information(a, na, b, nb)
    return m


def discrete_entropy(factors: np.ndarray) -> np.ndarray:
    """``(K,)`` entropy (nats) of each discrete factor column."""
    return np.array([entropy(factors[:, j]) for j in range(factors.shape[1])])


def normalize(codes: np.ndarray, mean=None, std=None):
    """``(codes - mean) / std`` per column with the given (or the codes') statistics.

    Columns with zero spread are divided by 1 instead of 0.
    """
    if mean is None:
        mean = codes.mean(axis=0)
    if std is None:
        std = codes.std(axis=0)
    safe = np.where(std > 0, std, 1.0)
    return (codes - mean) / safe, mean, std


def as_binary_attributes(attrs) -> np.ndarray:
    """0/1 int attributes from -1/1, 0/1 or boolean columns (CelebA's files use -1/1)."""
    attrs = np.asarray(attrs)
    if attrs.ndim == 1:
        attrs = attrs[:, None]
    if attrs.dtype == bool:
        return attrs.astype(np.int64)
    values = np.unique(attrs)
    if not np.all(np.isin(values, (-1, 0, 1))):
        raise ValueError(f"attributes must be -1/1, 0/1 or boolean, found values {values[:5]}")
    return (attrs > 0).astype(np.int64)
