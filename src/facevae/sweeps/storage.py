"""The study's storage: any SQLAlchemy URL, with heartbeats so that a killed worker's trial is failed.

Every worker's storage beats every ``heartbeat_interval`` seconds for its running trial. A trial
whose last beat is older than ``grace_period`` belongs to a worker that died (SIGKILL, power cut,
lost node): Optuna's ``fail_stale_trials`` marks it FAIL, and ``retry_killed_trial`` queues its
parameters once more (on the same grid point), so the sweep still covers them. Workers run that
check when they start and before every trial, so a killed worker's trial is taken back by the next
worker to look after the grace period. A trial that fails by itself (NaN loss, a bad
configuration) is not retried.
"""

from __future__ import annotations

import warnings

import optuna
from optuna.trial import TrialState


def open_storage(url: str, heartbeat_interval: int = 60, grace_period: int | None = None):
    # SQLite serialises writers; several workers and their heartbeats wait for the lock instead of failing.
    engine_kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
            grace_period=grace_period or 2 * heartbeat_interval, heartbeat_stale_trial_callback=retry_killed_trial)


def retry_killed_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue a killed trial's point again, once; a retry that is killed too stays failed."""
    if "failed_trial" in trial.system_attrs:
        return
    # grid_id keeps GridSampler from handing this point (or a new one) to the retry a second time.
    system_attrs = {k: trial.system_attrs[k] for k in ("grid_id", "search_space") if k in trial.system_attrs}
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        system_attrs={**system_attrs, "failed_trial": trial.number}))
