"""Modularity and explicitness (Ridgeway & Mozer 2018, "Learning Deep Disentangled Embeddings
With the F-Statistic Loss"), as defined in disentanglement_lib (``modularity_explicitness``).

* modularity: from the ``(D, K)`` mutual information between the 20-bin discretised training
  codes and the factors, per code dimension ``1 - (sum_k m_ik^2 - max_k m_ik^2) /
  (max_k m_ik^2 (K - 1))`` (0 for a dimension with no information at all), averaged over
  dimensions. Note that it scores how *few* factors a dimension talks about, not how much: noise
  codes whose small spurious informations happen to be unequal still score well above 0.
* explicitness: codes standardised with the training mean and standard deviation; per factor a
  logistic regression predicts it from all codes; the score is the ROC-AUC of its class
  probabilities against the one-hot labels (macro average over classes), on the training rows
  (``explicitness_score_train``) and on the test rows (``explicitness_score_test``), averaged
  over factors. 0.5 is chance, 1 perfect. The logistic regression is the one
  disentanglement_lib ran with (scikit-learn's 2019 defaults: liblinear, one-vs-rest, ``C=1``;
  :func:`facevae.metrics.utils.logistic_regression`).

Deviations, for robustness only: classes that are all-positive or all-negative in an evaluation
set are left out of the macro average (disentanglement_lib raises there), and a factor constant
in the training rows gets explicitness 1 (it is perfectly predicted).
"""

from __future__ import annotations

import warnings

import numpy as np

from facevae.metrics import utils


def modularity_explicitness(codes_train, factors_train, codes_test, factors_test,
                            num_bins: int = utils.NUM_BINS) -> dict:
    """Modularity and explicitness of ``codes (N, D)`` against discrete ``factors (N, K)``.

    Returns ``{"modularity_score", "explicitness_score_train", "explicitness_score_test",
    "modularity_per_code" (D,), "explicitness_per_factor" (K,) (test), "mutual_info" (D, K)}``.
    """
    codes_train, factors_train = utils.check_pair(codes_train, factors_train, "_train")
    codes_test, factors_test = utils.check_pair(codes_test, factors_test, "_test")
    if codes_train.shape[1] != codes_test.shape[1] or factors_train.shape[1] != factors_test.shape[1]:
        raise ValueError("train and test arrays must have the same number of columns")
    m = utils.discrete_mutual_info(utils.histogram_discretize(codes_train, num_bins), factors_train)
    per_code = modularity_per_code(m)
    x_train, mean, std = utils.normalize(codes_train)
    x_test, _, _ = utils.normalize(codes_test, mean, std)
    num_factors = factors_train.shape[1]
    train, test = np.zeros(num_factors), np.zeros(num_factors)
    for k in range(num_factors):
        train[k], test[k] = explicitness_per_factor(x_train, factors_train[:, k], x_test, factors_test[:, k])
    return {
        "modularity_score": float(np.mean(per_code)),
        "explicitness_score_train": float(np.mean(train)),
        "explicitness_score_test": float(np.mean(test)),
        "modularity_per_code": per_code,
        "explicitness_per_factor": test,
        "mutual_info": m,
    }


def modularity_per_code(mutual_info: np.ndarray) -> np.ndarray:
    squared = np.square(mutual_info)
    top = squared.max(axis=1)
    num_factors = squared.shape[1]
    if num_factors < 2:
        return np.where(top > 0, 1.0, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = (squared.sum(axis=1) - top) / (top * (num_factors - 1.0))
    return np.where(top == 0.0, 0.0, 1.0 - delta)


def modularity(mutual_info: np.ndarray) -> float:
    """Modularity score from a ``(D, K)`` mutual information matrix."""
    return float(np.mean(modularity_per_code(mutual_info)))


def explicitness_per_factor(x_train, y_train, x_test, y_test) -> tuple[float, float]:
    """``(train AUC, test AUC)`` of a logistic regression predicting one factor from all codes."""
    from sklearn.exceptions import ConvergenceWarning

    classes = np.unique(y_train)
    if len(classes) < 2:
        return 1.0, 1.0
    clf = utils.logistic_regression()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_train, y_train)
    return _macro_auc(clf, x_train, y_train), _macro_auc(clf, x_test, y_test)


def _macro_auc(clf, x, y) -> float:
    from sklearn.metrics import roc_auc_score

    proba = clf.predict_proba(x)
    aucs = []
    for c, cls in enumerate(clf.classes_):
        target = y == cls
        if target.all() or not target.any():
            continue
        aucs.append(roc_auc_score(target, proba[:, c]))
    return float(np.mean(aucs)) if aucs else float("nan")
