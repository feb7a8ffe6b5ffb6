"""Optuna pruning from inside Lightning training (``optuna.integration`` is a separate package)."""

from __future__ import annotations

import math

import lightning as L
import optuna


class ReportValidationElbo(L.Callback):
    """Reports each epoch's validation ELBO to the trial, and stops the run when the pruner says so.

    Non-finite values are not reported: a diverged run fails on its own (NonFiniteLossError, or no
    finite validation ELBO to export), which marks the trial failed rather than merely pruned.
    """

    def __init__(self, trial: optuna.Trial, monitor: str = "val_elbo"):
        self.trial, self.monitor = trial, monitor

    def on_validation_epoch_end(self, trainer, pl_module):
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None or not math.isfinite(float(value)):
            return
        epoch = trainer.current_epoch
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}: {self.monitor} {float(value):.2f}")
