"""``facevae sweep --together``: every point the study's budget has left, trained as one stack of models.

The trials are asked for at once (Optuna's ask-and-tell), each with its own run directory
``OUT/trial-NNNN``; their models train together in ``OUT/stack-NNNN`` (NNNN: the first trial's number),
and each trial is told the objective values of its own run, scored as a trial alone is. A stopped stack
queues its points again, as a stopped worker's trial is, so running the same command trains them again.
"""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState

from facevae.sweeps import budget
from facevae.sweeps.objectives import objective_values
from facevae.sweeps.storage import queue_again


def ask_points(study: optuna.Study, config) -> list[tuple[optuna.Trial, object]]:
    """(trial, RunConfig) of every place left in the budget."""
    from facevae.sweeps.study import take_place, trial_run

    asked = []
    while budget.budget_left(study, config.trials) > 0:
        trial = study.ask()
        try:
            params = take_place(trial, config)
        except optuna.TrialPruned:
            _told(study, trial, state=TrialState.PRUNED)
            break
        trial.set_user_attr("trained_together", True)
        asked.append((trial, trial_run(trial, config, params)[1]))
    return asked


def run_together(study: optuna.Study, config) -> None:
    """Train the points left in the study as one stack, and tell each trial its values (or its failure)."""
    from facevae.sweeps.study import report_trial
    from facevae.sweeps.workers import fail_stale
    from facevae.training.together import train_together

    fail_stale(study)
    asked = ask_points(study, config)
    if not asked:
        return
    trials = [trial for trial, _ in asked]
    stack_dir = Path(config.out) / f"stack-{trials[0].number:04d}"
    print(f"training {len(asked)} trials together, in {stack_dir}", flush=True)
    try:
        results = train_together([c for _, c in asked], stack_dir)
    except KeyboardInterrupt:  # also Interrupted (SIGTERM): the points are queued again, as a worker's trial's
        for trial in trials:
            queue_again(study, study._storage.get_trial(trial._trial_id))
            _told(study, trial, state=TrialState.FAIL)
        raise
    except Exception as exc:  # the stack failed as a whole: each trial failed with it, not retried
        results = [exc] * len(trials)
    for (trial, run_config), result in zip(asked, results):
        _tell(study, trial, run_config, result, config)
        report_trial(study, study._storage.get_trial(trial._trial_id), config)


def _tell(study: optuna.Study, trial: optuna.Trial, run_config, result, config) -> None:
    if not isinstance(result, Exception):
        try:
            values = objective_values(Path(run_config.train.run_dir), result, config.objectives, config.metric_n,
                                      config.metric_n_eval, extra=config.metrics)
            _told(study, trial, values)
            return
        except Exception as exc:
            result = exc
    trial.set_user_attr("error", f"{type(result).__name__}: {result}"[:500])
    print(f"facevae sweep: trial {trial.number:04d} failed: {result}", file=sys.stderr)
    _told(study, trial, state=TrialState.FAIL)


def _told(study: optuna.Study, trial: optuna.Trial, values=None, state=None) -> None:
    """study.tell. The GridSampler asks the study to stop once its grid is used up, which only an optimize loop
    can; ask-and-tell has none, and Optuna has stored the trial's values before it asks."""
    try:
        study.tell(trial, values, state=state)
    except RuntimeError as exc:
        if "Study.stop" not in str(exc):
            raise
