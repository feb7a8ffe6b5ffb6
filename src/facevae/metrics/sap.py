"""Separated Attribute Predictability (Kumar et al. 2018, "Variational Inference of Disentangled
Latent Concepts from Unlabeled Observations", Sec. 3), as defined in disentanglement_lib
(``sap_score``).

A score matrix ``S (D, K)`` says how well each single code dimension predicts each factor:

* discrete factors (``continuous_factors=False``, the study default): the test accuracy of a
  ``LinearSVC(C=0.01, class_weight="balanced")`` trained on that one dimension (train rows) and
  scored on the test rows;
* continuous factors: the squared correlation ``cov(z_i, v_k)^2 / (var z_i var v_k)`` on the
  train rows (0 for a constant dimension); the test rows are not used.

SAP is the mean over factors of the gap between the two largest entries of the factor's column.
A factor constant in the training rows gets score 0 in every dimension (gap 0).
"""

from __future__ import annotations

import warnings

import numpy as np

from facevae.metrics import utils


def sap(codes_train, factors_train, codes_test, factors_test, continuous_factors: bool = False) -> dict:
    """SAP of ``codes (N, D)`` against ``factors (N, K)``.

    Returns ``{"SAP_score": float, "sap_per_factor": (K,) array, "score_matrix": (D, K) array}``.
    """
    codes_train, factors_train = utils.check_pair(codes_train, factors_train, "_train")
    codes_test, factors_test = utils.check_pair(codes_test, factors_test, "_test")
    if codes_train.shape[1] != codes_test.shape[1] or factors_train.shape[1] != factors_test.shape[1]:
        raise ValueError("train and test arrays must have the same number of columns")
    matrix = score_matrix(codes_train, factors_train, codes_test, factors_test, continuous_factors)
    per_factor = top_two_gap(matrix)
    return {"SAP_score": float(np.mean(per_factor)), "sap_per_factor": per_factor, "score_matrix": matrix}


def score_matrix(codes_train, factors_train, codes_test, factors_test, continuous_factors=False) -> np.ndarray:
    num_codes, num_factors = codes_train.shape[1], factors_train.shape[1]
    matrix = np.zeros((num_codes, num_factors))
    if continuous_factors:
        y = np.asarray(factors_train, dtype=np.float64)
        for i in range(num_codes):
            for k in range(num_factors):
                cov = np.cov(codes_train[:, i], y[:, k], ddof=1)
                if cov[0, 0] > 1e-12 and cov[1, 1] > 0:
                    matrix[i, k] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1])
        return matrix

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    for k in range(num_factors):
        y_train, y_test = factors_train[:, k], factors_test[:, k]
        if len(np.unique(y_train)) < 2:
            continue
        for i in range(num_codes):
            clf = LinearSVC(C=0.01, class_weight="balanced", random_state=0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(codes_train[:, i: i + 1], y_train)
            matrix[i, k] = np.mean(clf.predict(codes_test[:, i: i + 1]) == y_test)
    return matrix


def top_two_gap(matrix: np.ndarray) -> np.ndarray:
    """Per column, the largest entry minus the second largest."""
    if matrix.shape[0] < 2:
        return matrix[0].copy()
    s = np.sort(matrix, axis=0)
    return s[-1] - s[-2]
