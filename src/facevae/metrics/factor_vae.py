"""The FactorVAE disentanglement score (Kim & Mnih 2018, "Disentangling by Factorising"), as
defined in disentanglement_lib (``factor_vae_score``).

1. Global scale: encode ``num_variance_estimate`` observations drawn from the prior and take the
   variance of every code dimension (``ddof=1``). Dimensions whose standard deviation is below
   ``prune_threshold`` (0.05, the study configs' ``prune_dims.threshold``) are dropped as
   collapsed to the prior. If none is left, both accuracies are 0.
2. One vote: pick a factor ``k`` uniformly; sample ``batch_size`` factor rows and set factor
   ``k`` of all of them to the value of the first; render and encode; divide the per-dimension
   variances (``ddof=1``) by the global variances; the vote is (``k``, the arg-min dimension
   among the kept ones).
3. The classifier maps each dimension to the factor with most votes for it (majority vote).
   Train accuracy is the fraction of the ``num_train`` votes it gets right, eval accuracy the
   fraction of ``num_eval`` fresh votes. Chance level is about ``1 / K``.

Defaults: ``batch_size=64, num_train=10000, num_eval=5000, num_variance_estimate=10000``.
The random draws follow disentanglement_lib's order (variance batch, then per vote: factor
index, batch); rendering and encoding are only grouped into larger calls.
"""

from __future__ import annotations

import numpy as np

from facevae.metrics import utils

#: disentanglement_lib's ``prune_dims.threshold`` in its study configs (on the standard deviation).
PRUNE_THRESHOLD = 0.05


def factor_vae_score(data, encode, random_state=0, batch_size: int = 64, num_train: int = 10000,
                     num_eval: int = 5000, num_variance_estimate: int = 10000, *,
                     prune_threshold: float = PRUNE_THRESHOLD, encode_batch_size: int = 4096) -> dict:
    """FactorVAE score of ``encode`` on the ground-truth ``data``.

    Returns ``{"train_accuracy", "eval_accuracy", "num_active_dims"}`` (the last is the number
    of kept dimensions; disentanglement_lib reports the code size there by mistake).
    """
    if batch_size < 2 or num_train < 1 or num_eval < 1 or num_variance_estimate < 2:
        raise ValueError("batch_size and num_variance_estimate must be at least 2, num_train and num_eval positive")
    random_state = utils.as_random_state(random_state)
    factors = np.asarray(data.sample_factors(num_variance_estimate, random_state))
    codes = utils.encode_factors(data, encode, factors, random_state, encode_batch_size)
    global_variances = np.var(codes, axis=0, ddof=1)
    active = np.sqrt(global_variances) >= prune_threshold
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}
    train_votes = _votes(data, encode, batch_size, num_train, random_state, global_variances, active,
                         encode_batch_size)
    classifier = np.argmax(train_votes, axis=0)  # the factor each kept dimension stands for
    columns = np.arange(train_votes.shape[1])
    train_accuracy = float(train_votes[classifier, columns].sum() / train_votes.sum())
    eval_votes = _votes(data, encode, batch_size, num_eval, random_state, global_variances, active,
                        encode_batch_size)
    eval_accuracy = float(eval_votes[classifier, columns].sum() / eval_votes.sum())
    return {"train_accuracy": train_accuracy, "eval_accuracy": eval_accuracy,
            "num_active_dims": int(active.sum())}


def _votes(data, encode, batch_size, num_points, random_state, global_variances, active, encode_batch_size):
    """``(K, num_active)`` vote counts."""
    num_factors = len(utils.factor_sizes(data))
    index = np.empty(num_points, np.int64)
    batches = []
    for p in range(num_points):
        index[p] = utils.randint(random_state, num_factors)
        f = np.array(data.sample_factors(batch_size, random_state), copy=True)
        f[:, index[p]] = f[0, index[p]]
        batches.append(f)
    per_group = max(1, int(encode_batch_size) // batch_size)  # votes encoded in one call
    codes = utils.encode_factors(data, encode, np.concatenate(batches), random_state, per_group * batch_size)
    local = np.var(codes.reshape(num_points, batch_size, -1), axis=1, ddof=1)
    argmin = np.argmin(local[:, active] / global_variances[active], axis=1)
    votes = np.zeros((num_factors, int(active.sum())), np.int64)
    np.add.at(votes, (index, argmin), 1)
    return votes
