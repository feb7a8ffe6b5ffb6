"""Disentanglement metrics with their standard definitions and defaults.

disentanglement_lib (Locatello et al. 2019) is the reference for every definition and default,
so that the numbers are comparable with published ones.

Sampling-based, on a ground-truth data object (``factor_sizes``, ``sample_factors(n,
random_state)``, ``render(factors)``; see :mod:`facevae.metrics.utils`) and an
``encode(observations) -> codes`` function:

* :func:`beta_vae_score` -- Higgins et al. 2017 (train / eval accuracy);
* :func:`factor_vae_score` -- Kim & Mnih 2018 (train / eval accuracy).

On arrays ``codes (N, D)`` and discrete ``factors (N, K)``:

* :func:`mig` -- Chen et al. 2018, 20-bin histogram discretisation;
* :func:`dci` -- Eastwood & Williams 2018, gradient-boosted-tree importances;
* :func:`sap` -- Kumar et al. 2018;
* :func:`modularity_explicitness` -- Ridgeway & Mozer 2018.

And :func:`weak_label_metrics` (the array metrics against binary attributes such as CelebA's),
:func:`array_metrics` and :func:`ground_truth_metrics` (the whole suite as one flat dict),
:func:`sample_codes` (codes and factors sampled from a ground-truth data object).
:func:`facevae.metrics.run.compute_disentanglement` runs the suite on a trained run (``facevae metrics``);
it is not imported here, so that the metrics stay usable without torch.
"""

from facevae.metrics.beta_vae import beta_vae_score
from facevae.metrics.dci import dci
from facevae.metrics.factor_vae import factor_vae_score
from facevae.metrics.mig import mig
from facevae.metrics.modularity import modularity_explicitness
from facevae.metrics.sap import sap
from facevae.metrics.suite import array_metrics, ground_truth_metrics
from facevae.metrics.utils import sample_codes
from facevae.metrics.weak_labels import weak_label_metrics

__all__ = [
    "array_metrics",
    "beta_vae_score",
    "dci",
    "factor_vae_score",
    "ground_truth_metrics",
    "mig",
    "modularity_explicitness",
    "sample_codes",
    "sap",
    "weak_label_metrics",
]
