"""The β-VAE disentanglement score (Higgins et al. 2017, "beta-VAE: Learning Basic Visual
Concepts with a Constrained Variational Framework"), as defined in disentanglement_lib
(``beta_vae_sklearn``).

One training point: pick a factor ``k`` uniformly; sample two batches of ``batch_size`` factor
rows from the data's prior; copy factor ``k`` of the first batch into the second (so each pair
shares that factor); render and encode both; the feature is the mean over the batch of
``|z1 - z2|`` per code dimension, the label is ``k``. A scikit-learn ``LogisticRegression`` is
trained on ``num_train`` points and scored on them (train accuracy) and on ``num_eval`` fresh
points (eval accuracy). Chance level is ``1 / K``.

Defaults are disentanglement_lib's study defaults: ``batch_size=64, num_train=10000,
num_eval=5000``. The random draws are made in disentanglement_lib's order (per point: factor
index, first batch, second batch), so a data object that samples like disentanglement_lib's
gives the same points; the rendering and encoding are only grouped into larger calls.

The classifier is scikit-learn's ``LogisticRegression`` with the defaults disentanglement_lib
ran with (2019: liblinear, one-vs-rest, L2, ``C=1``; see
:func:`facevae.metrics.utils.logistic_regression`). Like disentanglement_lib's, fitting it
takes one ``randint(2**31 - 1)`` draw from ``random_state`` (liblinear's seed) between the
training and the evaluation points.
"""

from __future__ import annotations

import warnings

import numpy as np

from facevae.metrics import utils


def beta_vae_score(data, encode, random_state=0, batch_size: int = 64, num_train: int = 10000,
                   num_eval: int = 5000, *, encode_batch_size: int = 4096) -> dict:
    """β-VAE score of ``encode`` on the ground-truth ``data``.

    ``encode_batch_size``: about how many observations are rendered and encoded per call (it
    groups whole pairs of batches; it does not change the result).

    Returns ``{"train_accuracy": float, "eval_accuracy": float}``.
    """
    from sklearn.exceptions import ConvergenceWarning

    if batch_size < 1 or num_train < 1 or num_eval < 1:
        raise ValueError("batch_size, num_train and num_eval must be positive")
    random_state = utils.as_random_state(random_state)
    x_train, y_train = _generate_points(data, encode, batch_size, num_train, random_state, encode_batch_size)
    model = utils.logistic_regression(utils.seed_from(random_state))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train, y_train)
    train_accuracy = float(np.mean(model.predict(x_train) == y_train))
    x_eval, y_eval = _generate_points(data, encode, batch_size, num_eval, random_state, encode_batch_size)
    eval_accuracy = float(np.mean(model.predict(x_eval) == y_eval))
    return {"train_accuracy": train_accuracy, "eval_accuracy": eval_accuracy}


def _generate_points(data, encode, batch_size, num_points, random_state, encode_batch_size):
    """``(features (num_points, D), labels (num_points,))``."""
    num_factors = len(utils.factor_sizes(data))
    index = np.empty(num_points, np.int64)
    first, second = [], []
    for p in range(num_points):
        index[p] = utils.randint(random_state, num_factors)
        f1 = np.array(data.sample_factors(batch_size, random_state), copy=True)
        f2 = np.array(data.sample_factors(batch_size, random_state), copy=True)
        f2[:, index[p]] = f1[:, index[p]]
        first.append(f1)
        second.append(f2)
    # A group of points is encoded in one call: their first batches, then their second batches.
    per_group = max(1, int(encode_batch_size) // (2 * batch_size))
    groups = [(lo, min(lo + per_group, num_points)) for lo in range(0, num_points, per_group)]
    factors = np.concatenate([np.concatenate(first[lo:hi] + second[lo:hi]) for lo, hi in groups])
    codes = utils.encode_factors(data, encode, factors, random_state, 2 * per_group * batch_size)
    ends = np.cumsum([2 * (hi - lo) * batch_size for lo, hi in groups])
    pairs = [z.reshape(2, -1, batch_size, z.shape[-1]) for z in np.split(codes, ends[:-1])]
    return np.concatenate([np.mean(np.abs(z[0] - z[1]), axis=1) for z in pairs]), index
