"""What a sweep optimises: a run's number, read from its metrics or computed by the disentanglement suite."""

from __future__ import annotations

import math
from pathlib import Path

# objective name → (key in the scores, suite metric that computes it; None: read from metrics.json)
OBJECTIVES = {
    "val_elbo": ("best_val_elbo", None),
    "test_elbo": ("test_elbo", None),
    "betavae_score": ("beta_vae_eval", "beta_vae"),
    "factorvae_score": ("factor_vae_eval", "factor_vae"),
    "mig": ("mig", "mig"),
    "dci": ("dci_disentanglement", "dci"),
    "sap": ("sap", "sap"),
    "modularity": ("modularity", "modularity"),
}
ELBO_OBJECTIVES = ("val_elbo", "test_elbo")


def check_objectives(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        raise ValueError(f"unknown objective {unknown[0]!r}; choose from {', '.join(OBJECTIVES)}")
    if len(set(names)) != len(names):
        raise ValueError("the two objectives are the same")
    return list(names)


def objective_values(run_dir: str | Path, metrics: dict, names: list[str], n: int, n_eval: int,
                     seed: int = 0, extra: list[str] = ()) -> list[float]:
    """The objectives of a finished run; the suite (stored in its metrics.json) only when one needs it, with the
    ``extra`` suite metrics the sweep report shows beside them."""
    from facevae.metrics.run import compute_disentanglement

    suite = list(dict.fromkeys([OBJECTIVES[o][1] for o in names if OBJECTIVES[o][1]] + list(extra)))
    scores = dict(metrics.get("test", {}), best_val_elbo=metrics.get("best_val_elbo"))
    if suite:
        scores |= compute_disentanglement(run_dir, suite, n=n, n_eval=n_eval, seed=seed)["scores"]
    values = [scores.get(OBJECTIVES[o][0]) for o in names]
    for name, value in zip(names, values):
        if value is None or not math.isfinite(value):
            raise ArithmeticError(f"{run_dir}: objective {name} is {value}")
    return [float(v) for v in values]
