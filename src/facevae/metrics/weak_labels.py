"""The array metrics against weak labels: binary attributes (CelebA's 40) instead of factors.

CelebA has no generative factors, only 40 binary attributes per image, which are neither
independent nor complete. Taking them as the "factors" of MIG, DCI, SAP and
modularity/explicitness still says which code dimensions carry which attribute and how
separately; the numbers are *not* comparable with the published ground-truth figures (the
attributes are imbalanced and correlated: a perfectly disentangled model cannot reach 1 when
two attributes are strongly correlated, and informativeness accuracy is inflated for rare
attributes, which is why the per-attribute table also gives the balanced explicitness AUC).

Attributes are given as -1/1 (CelebA's files), 0/1 or booleans.
"""

from __future__ import annotations

import numpy as np

from facevae.metrics import utils
from facevae.metrics.dci import dci as _dci
from facevae.metrics.mig import mig as _mig
from facevae.metrics.modularity import modularity_explicitness as _modex
from facevae.metrics.sap import sap as _sap
from facevae.metrics.suite import ARRAY_METRICS


def weak_label_metrics(codes_train, attrs_train, codes_test, attrs_test, names=None, *,
                       metrics=ARRAY_METRICS, n_jobs: int | None = -1) -> dict:
    """MIG, DCI, SAP and modularity/explicitness of codes against binary attributes.

    ``metrics``: a subset of ``("mig", "dci", "sap", "modularity")``; DCI is by far the slowest
    (one gradient-boosted classifier per attribute: about 1-3 s per attribute per 10,000 codes
    of 10 dimensions on one core, more with more dimensions).

    Returns a flat dict of overall scores (``mig``, ``dci_disentanglement``,
    ``dci_completeness``, ``dci_informativeness_train``, ``dci_informativeness_test``,
    ``sap``, ``modularity``, ``explicitness_train``, ``explicitness_test``, for the metrics
    asked for) and ``"attributes"``: one dict per attribute with ``name``, ``positive_rate``
    (train), ``best_dim`` (the dimension with the most mutual information with it), and its
    per-attribute ``mig``, ``sap``, ``dci_completeness``, ``dci_accuracy`` (test),
    ``explicitness_auc`` (test), where computed.
    """
    unknown = set(metrics) - set(ARRAY_METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {ARRAY_METRICS}")
    a_train = utils.as_binary_attributes(attrs_train)
    a_test = utils.as_binary_attributes(attrs_test)
    codes_train, a_train = utils.check_pair(codes_train, a_train, "_train")
    codes_test, a_test = utils.check_pair(codes_test, a_test, "_test")
    num_attrs = a_train.shape[1]
    if names is None:
        names = [f"attribute_{k}" for k in range(num_attrs)]
    names = [str(n) for n in names]
    if len(names) != num_attrs:
        raise ValueError(f"{len(names)} names for {num_attrs} attribute columns")

    rows = [{"name": n, "positive_rate": float(a_train[:, k].mean())} for k, n in enumerate(names)]
    out: dict = {}
    mi = None
    if "mig" in metrics:
        r = _mig(codes_train, a_train)
        out["mig"] = r["discrete_mig"]
        mi = r["mutual_info"]
        for k, row in enumerate(rows):
            row["mig"] = float(r["mig_per_factor"][k])
    if "dci" in metrics:
        r = _dci(codes_train, a_train, codes_test, a_test, n_jobs=n_jobs)
        out["dci_disentanglement"] = r["disentanglement"]
        out["dci_completeness"] = r["completeness"]
        out["dci_informativeness_train"] = r["informativeness_train"]
        out["dci_informativeness_test"] = r["informativeness_test"]
        for k, row in enumerate(rows):
            row["dci_completeness"] = float(r["completeness_per_factor"][k])
            row["dci_accuracy"] = float(r["informativeness_per_factor"][k])
    if "sap" in metrics:
        r = _sap(codes_train, a_train, codes_test, a_test)
        out["sap"] = r["SAP_score"]
        for k, row in enumerate(rows):
            row["sap"] = float(r["sap_per_factor"][k])
    if "modularity" in metrics:
        r = _modex(codes_train, a_train, codes_test, a_test)
        out["modularity"] = r["modularity_score"]
        out["explicitness_train"] = r["explicitness_score_train"]
        out["explicitness_test"] = r["explicitness_score_test"]
        mi = r["mutual_info"]
        for k, row in enumerate(rows):
            row["explicitness_auc"] = float(r["explicitness_per_factor"][k])
    if mi is None:
        mi = utils.discrete_mutual_info(utils.histogram_discretize(codes_train), a_train)
    for k, row in enumerate(rows):
        row["best_dim"] = int(np.argmax(mi[:, k]))
    out["attributes"] = rows
    return out
