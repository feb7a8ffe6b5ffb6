"""A trial budget shared by every worker of a study, wherever the workers run.

``--trials N`` means N trials take a place in the study: running, waiting, finished. Two kinds do
not: a killed trial whose point was queued again (its retry takes the place), and a *surplus*
trial, one a worker created while the last places were being taken by others (the storage numbers
trials atomically, so the check "fewer than N places before my number" is race-free). A surplus
trial is pruned at once, marked ``surplus``, and left out of reports.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState


def counted(trials) -> list:
    retried = {t.system_attrs.get("failed_trial") for t in trials}
    return [t for t in trials
            if not t.user_attrs.get("surplus") and not (t.state == TrialState.FAIL and t.number in retried)]


def places_taken(trials, below: int | None = None) -> int:
    """Places in the budget held by trials (numbered below ``below``, if given)."""
    return sum(1 for t in counted(trials) if below is None or t.number < below)


def claim_place(trial: optuna.Trial, budget: int) -> None:
    """Raises TrialPruned (marking the trial surplus) when the budget was full before this trial."""
    trials = trial.study.get_trials(deepcopy=False)
    if places_taken(trials, below=trial.number) >= budget:
        trial.set_user_attr("surplus", True)
        raise optuna.TrialPruned("the study's trial budget is used up")


def budget_left(study: optuna.Study, budget: int) -> int:
    """Trials still to ask for; waiting ones (queued retries) are asked for without a new place."""
    trials = study.get_trials(deepcopy=False)
    waiting = sum(1 for t in counted(trials) if t.state == TrialState.WAITING)
    return max(0, budget - places_taken(trials)) + waiting


def finished(study: optuna.Study) -> int:
    return sum(1 for t in counted(study.get_trials(deepcopy=False)) if t.state.is_finished())
