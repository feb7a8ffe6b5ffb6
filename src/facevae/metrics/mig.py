"""Mutual Information Gap (Chen et al. 2018, "Isolating Sources of Disentanglement in VAEs"),
as defined in disentanglement_lib (``mig`` with the 20-bin ``histogram_discretizer``).

Every code dimension is cut into 20 equal-width bins over its range; ``I(z_i; v_k)`` is the
plug-in mutual information between the binned dimension and factor ``k`` (nats, as
``sklearn.metrics.mutual_info_score``); for each factor the gap between its two most informative
dimensions is divided by the factor's entropy ``H(v_k)``; MIG is the mean over factors.

disentanglement_lib computes it on ``num_train=10000`` sampled points. A factor that is
constant in the given rows (zero entropy) has no defined gap: it is left out of the mean (its
per-factor value is NaN) instead of making the whole score NaN.
"""

from __future__ import annotations

import numpy as np

from facevae.metrics import utils


def mig(codes, factors, num_bins: int = utils.NUM_BINS) -> dict:
    """MIG of ``codes (N, D)`` against discrete ``factors (N, K)``.

    Returns ``{"discrete_mig": float, "mig_per_factor": (K,) array, "mutual_info": (D, K)
    array (nats), "entropy": (K,) array (nats)}``.
    """
    codes, factors = utils.check_pair(codes, factors)
    m = utils.discrete_mutual_info(utils.histogram_discretize(codes, num_bins), factors)
    entropy = utils.discrete_entropy(factors)
    per_factor = mig_from_mutual_info(m, entropy)
    valid = np.isfinite(per_factor)
    score = float(per_factor[valid].mean()) if valid.any() else float("nan")
    return {"discrete_mig": score, "mig_per_factor": per_factor, "mutual_info": m, "entropy": entropy}


def mig_from_mutual_info(m: np.ndarray, entropy: np.ndarray) -> np.ndarray:
    """Per-factor normalised gap ``(I_top1 - I_top2) / H`` from a ``(D, K)`` MI matrix (NaN where H = 0)."""
    sorted_m = np.sort(m, axis=0)[::-1]
    second = sorted_m[1] if len(sorted_m) > 1 else np.zeros(m.shape[1])
    gap = sorted_m[0] - second
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(entropy > 0, gap / np.where(entropy > 0, entropy, 1.0), np.nan)
