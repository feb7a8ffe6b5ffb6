"""A sweep: an Optuna study whose trials are full ``facevae train`` runs, shared by any number of workers.

The sweep's settings are kept twice: in ``OUT/sweep.json`` (what ``sweep-report`` reads) and in
the study's user attributes (what a worker joining from another machine, with the same
``--storage`` and ``--study``, is checked against, so that it cannot mix another search space in).
Each trial trains into ``OUT/trial-NNNN`` (NNNN: the trial's number in the study) and scores the
finished run with the objective(s).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import optuna
from optuna.trial import TrialState

from facevae.common.files import make_dir, read_json
from facevae.sweeps import budget
from facevae.sweeps.objectives import ELBO_OBJECTIVES, objective_values
from facevae.sweeps.search_space import suggest, trial_config, well_formed
from facevae.sweeps.storage import retried_trial

CONFIG_NAME = "sweep.json"
# The settings a joining worker must share with the study; the rest (base flags, sizes) may differ.
IDENTITY = ("space", "objectives", "directions", "sampler")


@dataclass
class SweepConfig:
    out: str
    storage: str
    study: str
    space: dict[str, list | dict]  # a setting's values, or a range (search_space.parse_param)
    objectives: list[str]
    directions: list[str]
    trials: int
    sampler: str = "grid"
    pruner: str = "auto"  # auto: median pruning on the validation ELBO only when the objective is an ELBO
    metric_n: int = 10000
    metric_n_eval: int = 5000
    sampler_seed: int = 0
    heartbeat_interval: int = 60
    grace_period: int | None = None
    base: dict = field(default_factory=dict)  # the base settings, {"model": ..., "train": ...} (see base_settings)
    conditions: str = "all"  # --conditions of the trials whose model is conditional
    metrics: list[str] = field(default_factory=list)  # suite metrics every trial records beside the objectives
    together: bool = False  # the trials' models trained as one stack (facevae.training.together)

    def save(self) -> Path:
        from facevae.common.files import write_json_atomic

        path = Path(self.out) / CONFIG_NAME
        make_dir(path.parent)
        write_json_atomic(path, asdict(self))
        return path

    @classmethod
    def load(cls, out: str | Path) -> "SweepConfig":
        path = Path(out) / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{out}: not a sweep directory (no {CONFIG_NAME}); make one with `facevae sweep`")
        saved = read_json(path)
        known = {f.name for f in fields(cls)}
        try:
            config = cls(**{k: v for k, v in saved.items() if k in known})  # an older sweep's leftovers are not read
        except TypeError:
            missing = [f.name for f in fields(cls) if f.name not in saved and f.default is MISSING
                       and f.default_factory is MISSING]
            raise ValueError(f"{path}: lacks {', '.join(missing)} (cut short?)") from None
        if not isinstance(config.space, dict) or not all(map(well_formed, config.space.values())):
            raise ValueError(f"{path}: its space is not lists of values and ranges, as `facevae sweep` writes it")
        return config

    def identity(self) -> dict:
        return {k: getattr(self, k) for k in IDENTITY}


# --- the study -----------------------------------------------------------------------------------------
def open_study(config: SweepConfig, worker: int = 0) -> optuna.Study:
    """Creates the study, or joins it after checking it is the same sweep."""
    from facevae.sweeps.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress lines replace its per-trial ones
    storage = open_storage(config.storage, config.heartbeat_interval, config.grace_period)
    study = optuna.create_study(storage=storage, study_name=config.study, directions=config.directions,
                                sampler=_sampler(config, worker), pruner=_pruner(config), load_if_exists=True)
    identity = json.loads(json.dumps(config.identity()))  # as the storage gives it back
    stored = study.user_attrs.get("sweep")
    if stored is None:
        study.set_user_attr("sweep", identity)
    elif stored != identity:
        changed = [k for k in IDENTITY if stored.get(k) != identity[k]]
        raise ValueError(f"study {config.study!r} in {config.storage} is another sweep (its {', '.join(changed)} "
                         "differ); use another --study")
    return study


def _sampler(config: SweepConfig, worker: int) -> optuna.samplers.BaseSampler:
    if config.sampler == "grid":
        # One seed for every worker: they must agree on the order of the shuffled grid.
        return optuna.samplers.GridSampler(config.space, seed=config.sampler_seed)
    # TPE proposals depend only on the seed until results arrive: workers must not share it.
    return optuna.samplers.TPESampler(seed=config.sampler_seed + worker)


def _pruner(config: SweepConfig) -> optuna.pruners.BasePruner:
    # Pruning compares validation ELBOs; with a disentanglement objective that would drop the large-β
    # runs whose worse ELBO is the point of the sweep, so "auto" prunes only when the ELBO is the objective.
    single_elbo = len(config.objectives) == 1 and config.objectives[0] in ELBO_OBJECTIVES
    if config.pruner == "median" or (config.pruner == "auto" and single_elbo):
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


# --- one trial -------------------------------------------------------------------------------------------
def take_place(trial: optuna.Trial, config: SweepConfig) -> dict:
    """The trial's point, once it holds a place in the budget (TrialPruned, marked surplus, if none is left)."""
    budget.claim_place(trial, config.trials)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    return {name: suggest(trial, name, values) for name, values in config.space.items()}


def run_trial(trial: optuna.Trial, config: SweepConfig) -> float | list[float]:
    params = take_place(trial, config)
    twin = _finished_twin(trial.study, params)
    if twin is not None:  # TPE may propose a finished point again: reuse it rather than train it twice
        trial.set_user_attr("duplicate_of", twin.number)
        for key in ("run_dir", "beta", "beta_norm"):
            trial.set_user_attr(key, twin.user_attrs.get(key))
        return _value(twin.values)
    try:
        return _value(_train_and_score(trial, config, params))
    except optuna.TrialPruned:
        raise
    except Exception as exc:
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
        raise


def _train_and_score(trial: optuna.Trial, config: SweepConfig, params: dict) -> list[float]:
    from facevae.sweeps.pruning import ReportValidationElbo
    from facevae.training.run import train

    run_dir, run_config = trial_run(trial, config, params)
    continued = continued_run(trial)
    if continued is not None:
        run_dir, run_config = continued
        trial.set_user_attr("run_dir", str(run_dir))
        print(f"trial {trial.number:04d} continues {run_dir} from its last checkpoint", flush=True)
    # Multi-objective studies cannot prune (Optuna refuses intermediate values there).
    callbacks = [ReportValidationElbo(trial)] if len(config.objectives) == 1 else []
    metrics = train(run_config, resume=continued is not None, callbacks=callbacks)
    return objective_values(run_dir, metrics, config.objectives, config.metric_n, config.metric_n_eval,
                            extra=config.metrics)


def _digest(run_config) -> str:
    """What a trial's run is made with, but for its folder: a retry continues its killed trial's run only when
    these agree (a sweep rerun with other base flags trains its retries afresh)."""
    settings = run_config.to_dict()
    settings["train"].pop("run_dir")
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def continuable(trial: optuna.Trial):
    """The stopped or killed trial whose run the retried ``trial`` may continue (made with the same settings)."""
    killed = retried_trial(trial.study, trial)
    if killed is None or killed.user_attrs.get("settings") == trial.user_attrs.get("settings"):
        return killed
    print(f"facevae sweep: trial {trial.number:04d} starts again: the sweep's settings changed since trial "
          f"{killed.number:04d}, which it retries, began", file=sys.stderr)
    return None


def continued_run(trial: optuna.Trial):
    """(run directory, RunConfig) of the run a retried trial continues: its stopped or killed trial's, when that
    run trained alone and reached a checkpoint that can be resumed from; else None (it starts again)."""
    killed = continuable(trial)
    if killed is None or "stack" in killed.user_attrs or "run_dir" not in killed.user_attrs:
        return None
    run_dir = Path(killed.user_attrs["run_dir"])
    configs = resumable_runs(run_dir, [run_dir], f"trial {trial.number:04d}")
    return None if configs is None else (run_dir, configs[0])


def resumable_runs(folder: Path, run_dirs: list[Path], what: str):
    """The RunConfigs ``run_dirs`` were trained with (each to resume where it is), when ``folder`` holds a
    checkpoint to resume them from; else None, said on stderr when there was one but it is damaged."""
    from facevae.common.errors import RunError
    from facevae.training.config import RunConfig
    from facevae.training.run import check_resumable

    if not (folder / "checkpoints" / "last.ckpt").is_file():
        return None  # stopped before its first checkpoint
    try:
        check_resumable(folder)
        configs = [RunConfig.load(run / "config.yaml") for run in run_dirs]
    except (RunError, OSError) as exc:
        print(f"facevae sweep: {what} starts again: {exc}", file=sys.stderr)
        return None
    for run_config, run in zip(configs, run_dirs):
        run_config.train.run_dir = str(run)
    return configs


def trial_run(trial: optuna.Trial, config: SweepConfig, params: dict):
    """(run directory, RunConfig) of a trial at ``params``, recorded in its user attributes."""
    run_dir = Path(config.out) / f"trial-{trial.number:04d}"
    run_config = trial_config(config.base, params, config.conditions, run_dir)
    model = run_config.model
    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("settings", _digest(run_config))
    trial.set_user_attr("beta", model.effective_beta)
    trial.set_user_attr("beta_norm", model.effective_beta * model.latent_units / model.input_dim)
    return run_dir, run_config


def _value(values):
    return values[0] if len(values) == 1 else list(values)


def _finished_twin(study: optuna.Study, params: dict):
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return next((t for t in complete if t.params == params and "duplicate_of" not in t.user_attrs), None)


# --- workers ---------------------------------------------------------------------------------------------
def run_worker(config: SweepConfig, worker: int = 0, workers_here: int = 1) -> None:
    """Runs trials of the study until its budget is used up (``workers_here``: the workers on this machine,
    which share its cores)."""
    from facevae.common.threads import share_cores

    if workers_here > 1:  # one worker keeps the process's own setting (OMP_NUM_THREADS, or every core)
        share_cores(workers_here)
    from facevae.sweeps.workers import work_on

    work_on(open_study(config, worker), config, worker)


def report_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, config: SweepConfig, worker: int = 0) -> None:
    """The progress line of a trial that ended."""
    if not trial.user_attrs.get("surplus"):
        values = ", ".join(f"{n}={v:.4g}" for n, v in zip(config.objectives, trial.values or []))
        detail = values or trial.user_attrs.get("error", "")
        print(f"[worker {worker}] trial {trial.number:04d} {trial.state.name.lower()} {detail} "
              f"({budget.finished(study)}/{config.trials} finished)", flush=True)


class _Progress:
    """After each trial: a progress line, and stop when no trial is left to ask for."""

    def __init__(self, config: SweepConfig, worker: int):
        self.config, self.worker = config, worker

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        report_trial(study, trial, self.config, self.worker)
        if budget.budget_left(study, self.config.trials) == 0:
            study.stop()


def run_sweep(config: SweepConfig, workers: int = 1) -> optuna.Study:
    """Saves the config, creates the study, and runs ``workers`` worker processes on it (1: this one)."""
    make_dir(Path(config.out))  # the default SQLite file goes there
    study = open_study(config)  # created once here, so that the workers only ever join it
    config.save()  # only once the study is known to be this sweep's
    if config.together:
        from facevae.sweeps.together import run_together

        run_together(study, config)
        return study
    if workers == 1:
        run_worker(config)
        return study
    from facevae.sweeps.workers import run_worker_processes

    failed = run_worker_processes(config, workers)
    if failed:
        done = budget.finished(study) >= config.trials  # the others retried what the failed ones left
        print(f"facevae sweep: {', '.join(failed)} stopped with an error; "
              + ("the other workers finished the study" if done else "rerun the command to finish"), file=sys.stderr)
    return study
