"""The whole suite at once: on arrays, or sampled from a ground-truth data object."""

from __future__ import annotations

from facevae.metrics import utils
from facevae.metrics.beta_vae import beta_vae_score
from facevae.metrics.dci import dci
from facevae.metrics.factor_vae import factor_vae_score
from facevae.metrics.mig import mig
from facevae.metrics.modularity import modularity_explicitness
from facevae.metrics.sap import sap

ARRAY_METRICS = ("mig", "dci", "sap", "modularity")
SAMPLING_METRICS = ("beta_vae", "factor_vae")


def array_metrics(codes_train, factors_train, codes_test, factors_test, *, metrics=ARRAY_METRICS,
                  continuous_factors: bool = False, n_jobs: int | None = -1) -> dict:
    """MIG (on the train rows), DCI, SAP and modularity/explicitness as one flat dict of floats.

    Keys: ``mig``, ``dci_disentanglement``, ``dci_completeness``, ``dci_informativeness_train``,
    ``dci_informativeness_test``, ``sap``, ``modularity``, ``explicitness_train``,
    ``explicitness_test`` (for the metrics asked for).
    """
    unknown = set(metrics) - set(ARRAY_METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {ARRAY_METRICS}")
    out = {}
    if "mig" in metrics:
        out["mig"] = mig(codes_train, factors_train)["discrete_mig"]
    if "dci" in metrics:
        r = dci(codes_train, factors_train, codes_test, factors_test, n_jobs=n_jobs)
        out |= {"dci_disentanglement": r["disentanglement"], "dci_completeness": r["completeness"],
                "dci_informativeness_train": r["informativeness_train"],
                "dci_informativeness_test": r["informativeness_test"]}
    if "sap" in metrics:
        out["sap"] = sap(codes_train, factors_train, codes_test, factors_test, continuous_factors)["SAP_score"]
    if "modularity" in metrics:
        r = modularity_explicitness(codes_train, factors_train, codes_test, factors_test)
        out |= {"modularity": r["modularity_score"], "explicitness_train": r["explicitness_score_train"],
                "explicitness_test": r["explicitness_score_test"]}
    return out


def ground_truth_metrics(data, encode, random_state=0, *, metrics=SAMPLING_METRICS + ARRAY_METRICS,
                         num_train: int = 10000, num_test: int = 5000, batch_size: int = 16,
                         sampling_batch_size: int = 64, n_jobs: int | None = -1) -> dict:
    """Every metric of ``encode`` on a ground-truth data object, with the standard sizes.

    The defaults are disentanglement_lib's for every metric: the β-VAE score trains on
    ``num_train`` points and evaluates on ``num_test``, each from two batches of
    ``sampling_batch_size`` observations; the FactorVAE score likewise, with ``num_train``
    observations for the global variances; the array metrics share one sample of
    ``num_train`` train and ``num_test`` test codes drawn from the prior ``batch_size`` at a
    time (disentanglement_lib draws a fresh sample per metric, of the same sizes and
    distribution).

    Returns a flat dict: ``beta_vae_train``, ``beta_vae_eval``, ``factor_vae_train``,
    ``factor_vae_eval``, ``factor_vae_active_dims`` and the keys of :func:`array_metrics`.
    """
    random_state = utils.as_random_state(random_state)
    out = {}
    if "beta_vae" in metrics:
        r = beta_vae_score(data, encode, random_state, sampling_batch_size, num_train, num_test)
        out |= {"beta_vae_train": r["train_accuracy"], "beta_vae_eval": r["eval_accuracy"]}
    if "factor_vae" in metrics:
        r = factor_vae_score(data, encode, random_state, sampling_batch_size, num_train, num_test, num_train)
        out |= {"factor_vae_train": r["train_accuracy"], "factor_vae_eval": r["eval_accuracy"],
                "factor_vae_active_dims": r["num_active_dims"]}
    array = [m for m in metrics if m in ARRAY_METRICS]
    if array:
        codes_train, factors_train = utils.sample_codes(data, encode, num_train, random_state, batch_size)
        codes_test, factors_test = utils.sample_codes(data, encode, num_test, random_state, batch_size)
        out |= array_metrics(codes_train, factors_train, codes_test, factors_test, metrics=array, n_jobs=n_jobs)
    return out
