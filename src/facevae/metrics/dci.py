"""Disentanglement, Completeness and Informativeness (Eastwood & Williams 2018, "A Framework for
the Quantitative Evaluation of Disentangled Representations"), as defined in disentanglement_lib
(``dci``).

For each factor ``k`` a scikit-learn ``GradientBoostingClassifier`` with default parameters
(100 depth-3 trees per class, learning rate 0.1) is trained to predict ``v_k`` from all codes;
its ``feature_importances_`` form column ``k`` of the importance matrix ``R (D, K)``.

* disentanglement: per code dimension ``1 - H_K(R_i. / sum R_i.)`` (entropy in base ``K``),
  averaged with weights ``sum_k R_ik / sum R``;
* completeness: per factor ``1 - H_D(R_.k / sum R_.k)`` (base ``D``), weighted by
  ``sum_i R_ik / sum R``;
* informativeness: the classifiers' mean **accuracy** (not an error) on the training rows
  (``informativeness_train``) and on the held-out rows (``informativeness_test``);
  disentanglement_lib uses ``num_train=10000, num_test=5000``.

A small ``1e-11`` is added to the importances before the entropies, as disentanglement_lib
does. A factor that is constant in the training rows cannot be fitted: its importance column is
zero and its accuracy is 1 (it is trivially predicted).

The classifiers of different factors are independent, so they are trained in parallel
(``n_jobs``, joblib processes); ``random_state`` only fixes the trees' tie-breaking.
"""

from __future__ import annotations

import numpy as np
import scipy.stats

from facevae.metrics import utils


def dci(codes_train, factors_train, codes_test, factors_test, *, n_jobs: int | None = -1,
        random_state: int = 0) -> dict:
    """DCI of ``codes (N, D)`` against discrete ``factors (N, K)``.

    ``n_jobs``: worker processes for the per-factor classifiers (-1: all cores, None or 1: none).

    Returns ``{"disentanglement", "completeness", "informativeness_train",
    "informativeness_test", "importance_matrix" (D, K), "disentanglement_per_code" (D,),
    "completeness_per_factor" (K,), "informativeness_per_factor" (K,) (test accuracy)}``.
    """
    codes_train, factors_train = utils.check_pair(codes_train, factors_train, "_train")
    codes_test, factors_test = utils.check_pair(codes_test, factors_test, "_test")
    if codes_train.shape[1] != codes_test.shape[1] or factors_train.shape[1] != factors_test.shape[1]:
        raise ValueError("train and test arrays must have the same number of columns")
    importance, train_acc, test_acc = importance_gbt(codes_train, factors_train, codes_test, factors_test,
                                                     n_jobs=n_jobs, random_state=random_state)
    return {
        "disentanglement": disentanglement(importance),
        "completeness": completeness(importance),
        "informativeness_train": float(np.mean(train_acc)),
        "informativeness_test": float(np.mean(test_acc)),
        "importance_matrix": importance,
        "disentanglement_per_code": disentanglement_per_code(importance),
        "completeness_per_factor": completeness_per_factor(importance),
        "informativeness_per_factor": np.asarray(test_acc),
    }


def _fit_one(x_train, y_train, x_test, y_test, seed):
    from sklearn.ensemble import GradientBoostingClassifier

    if len(np.unique(y_train)) < 2:
        return np.zeros(x_train.shape[1]), 1.0, float(np.mean(y_test == y_train[0]))
    model = GradientBoostingClassifier(random_state=seed)
    model.fit(x_train, y_train)
    return (np.abs(model.feature_importances_), float(np.mean(model.predict(x_train) == y_train)),
            float(np.mean(model.predict(x_test) == y_test)))


def importance_gbt(codes_train, factors_train, codes_test, factors_test, *, n_jobs=-1, random_state=0):
    """``(importance (D, K), train accuracies (K,), test accuracies (K,))`` of per-factor GBTs."""
    num_factors = factors_train.shape[1]
    # the biggest fits first, so that the workers finish together
    order = sorted(range(num_factors), key=lambda k: -len(np.unique(factors_train[:, k])))
    jobs = [(codes_train, factors_train[:, k], codes_test, factors_test[:, k], random_state) for k in order]
    workers = _workers(n_jobs, num_factors)
    if workers > 1:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=workers)(delayed(_fit_one)(*job) for job in jobs)
    else:
        results = [_fit_one(*job) for job in jobs]
    importance = np.zeros((codes_train.shape[1], num_factors))
    train_acc = np.zeros(num_factors)
    test_acc = np.zeros(num_factors)
    for k, (imp, tr, te) in zip(order, results):
        importance[:, k], train_acc[k], test_acc[k] = imp, tr, te
    return importance, train_acc, test_acc


def _workers(n_jobs, tasks: int) -> int:
    import os

    if n_jobs is None or tasks < 2:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = cores if n_jobs < 0 else int(n_jobs)
    return max(1, min(n, tasks))


def disentanglement_per_code(importance: np.ndarray) -> np.ndarray:
    """``1 - H_K`` of each code dimension's importance distribution over factors."""
    if importance.shape[1] < 2:
        return np.ones(importance.shape[0])
    return 1.0 - scipy.stats.entropy(importance.T + 1e-11, base=importance.shape[1])


def disentanglement(importance: np.ndarray) -> float:
    per_code = disentanglement_per_code(importance)
    if importance.sum() == 0.0:
        importance = np.ones_like(importance)
    weights = importance.sum(axis=1) / importance.sum()
    return float(np.sum(per_code * weights))


def completeness_per_factor(importance: np.ndarray) -> np.ndarray:
    """``1 - H_D`` of each factor's importance distribution over code dimensions."""
    return disentanglement_per_code(importance.T)  # the same entropy, with the roles of codes and factors swapped


def completeness(importance: np.ndarray) -> float:
    return disentanglement(importance.T)
