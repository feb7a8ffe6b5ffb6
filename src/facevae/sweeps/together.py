"""``facevae sweep --together``: every point the study's budget has left, trained as one stack of models.

The trials are asked for at once (Optuna's ask-and-tell), each with its own run directory
``OUT/trial-NNNN``; their models train together in ``OUT/stack-NNNN`` (NNNN: the first trial's number),
and each trial is told the objective values of its own run, scored as a trial alone is. A stack's trials
send heartbeats as a worker's trial does. A stopped stack queues its points again at once, a killed one
once its heartbeats are older than the grace period; running the same command then continues the stack
from its last checkpoint, in its folder and its members' run directories.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from facevae.sweeps import budget
from facevae.sweeps.objectives import objective_values
from facevae.sweeps.storage import Heartbeats, queue_again


def ask_points(study: optuna.Study, config, beats: Heartbeats) -> list[tuple[optuna.Trial, object]]:
    """(trial, RunConfig) of every place left in the budget, each trial beating from when it is asked."""
    from facevae.sweeps.study import take_place, trial_run

    asked = []
    while budget.budget_left(study, config.trials) > 0:
        with warnings.catch_warnings():  # that heartbeats are for optimize's trials: these get theirs from ``beats``
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
            trial = study.ask()
        beats.add(trial)
        try:
            params = take_place(trial, config)
        except optuna.TrialPruned:
            _told(study, trial, state=TrialState.PRUNED)
            break
        trial.set_user_attr("trained_together", True)
        asked.append((trial, trial_run(trial, config, params)[1]))
    return asked


def run_together(study: optuna.Study, config) -> None:
    """Train the points left in the study as stacks, and tell each trial its values (or its failure); then, as
    a worker does, wait for trials still running elsewhere and take back those of a killed process."""
    from facevae.sweeps.workers import work_on

    work_on(study, config, 0, lambda: _train_left(study, config))


def _train_left(study: optuna.Study, config) -> None:
    with Heartbeats(study) as beats:
        for stack_dir, resume, points in stacks_of(study, ask_points(study, config, beats), Path(config.out)):
            _train_stack(study, config, stack_dir, resume, points)


def stacks_of(study: optuna.Study, asked: list, out: Path) -> list[tuple[Path, bool, list]]:
    """(stack folder, whether it resumes, its (trial, RunConfig) in member order) for the asked points: the
    retries of every member of a stack stopped after its first checkpoint continue it; the rest make a new one."""
    from facevae.sweeps.study import continuable, resumable_runs

    killed_stacks: dict[str, dict[int, tuple]] = {}
    fresh = []
    for trial, run_config in asked:
        killed = continuable(trial)
        if killed is not None and "stack" in killed.user_attrs:
            killed_stacks.setdefault(killed.user_attrs["stack"], {})[killed.user_attrs["member"]] = (trial, run_config, killed)
        else:
            fresh.append((trial, run_config))
    stacks = []
    for stack, members in killed_stacks.items():
        size = len({t.user_attrs["member"] for t in study.get_trials(deepcopy=False) if t.user_attrs.get("stack") == stack})
        order = sorted(members)
        run_dirs = [Path(members[m][2].user_attrs["run_dir"]) for m in order]
        configs = resumable_runs(Path(stack), run_dirs, f"the stack in {stack}") if order == list(range(size)) else None
        if configs is not None:
            stacks.append((Path(stack), True, [(members[m][0], c) for m, c in zip(order, configs)]))
        else:
            fresh += [(trial, run_config) for trial, run_config, _ in members.values()]
    if fresh:
        stacks.append((out / f"stack-{fresh[0][0].number:04d}", False, fresh))
    return stacks


def _train_stack(study: optuna.Study, config, stack_dir: Path, resume: bool, points: list) -> None:
    from facevae.sweeps.study import report_trial
    from facevae.training.together import train_together

    trials = [trial for trial, _ in points]
    for m, (trial, run_config) in enumerate(points):
        for key, value in {"stack": str(stack_dir), "member": m, "run_dir": run_config.train.run_dir}.items():
            trial.set_user_attr(key, value)
    how = "continuing the stack of" if resume else "training"
    print(f"{how} {len(points)} trials together, in {stack_dir}", flush=True)
    try:
        results = train_together([c for _, c in points], stack_dir, resume=resume)
    except KeyboardInterrupt:  # also Interrupted (SIGTERM): the points are queued again, as a worker's trial's
        for trial in trials:
            queue_again(study, study._storage.get_trial(trial._trial_id))
            _told(study, trial, state=TrialState.FAIL)
        raise
    except Exception as exc:  # the stack failed as a whole: each trial failed with it, not retried
        results = [exc] * len(trials)
    for (trial, run_config), result in zip(points, results):
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
