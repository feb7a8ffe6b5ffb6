"""``facevae sweep`` and ``facevae sweep-report``: Optuna sweeps whose trials are full training runs."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from facevae.sweeps.objectives import OBJECTIVES

DIRECTIONS = ["maximize", "minimize"]


def register(subparsers) -> None:
    from facevae.cli import add_command
    from facevae.cli.train import add_train_arguments

    p = add_command(
        subparsers, "sweep", cmd_sweep, "sweep training settings (β, k, batch size, ...) with Optuna",
        "facevae sweep --data runs/demo/data --model vae --param beta=1,2,4,8,16 --param width=1,2 "
        "--objective betavae_score --metric-n 1000 --epochs 10 --out runs/sweep",
        description="Each trial is a full run directory OUT/trial-NNNN made as `facevae train` would, with the "
        "base training flags given here and the trial's --param values, scored by --objective (and --objective2: "
        "a Pareto front). The study lives in --storage (any SQLAlchemy URL; default sqlite:///OUT/sweep.db): "
        "--workers W runs W processes here, and a worker on another machine joins with the same --storage and "
        "--study. --trials is the study's total, shared by all workers. A killed worker's trial is marked "
        "failed after --grace-period seconds without a heartbeat and its point is queued once more. With "
        "--pruner auto, runs whose validation ELBO falls below the median are stopped early when the objective "
        "is an ELBO. --together trains all the points at once as one stacked model, in OUT/stack-NNNN (each trial's "
        "run directory as before). `facevae sweep-report OUT` shows the result.",
    )
    s = p.add_argument_group("sweep")
    s.add_argument("--param", action="append", default=[], metavar="NAME=V1,V2,...",
                   help="a training setting and its values, e.g. beta=1,2,4 or batch-size=64,128 (repeatable): "
                   "any flag of `facevae train` but --data and --run-dir, switches as true/false, --conditions "
                   "values with + between names (report,Male+Smiling); for --sampler tpe, a number setting may "
                   "be a range instead, both ends included: lr=1e-4..1e-2:log (log scale), latent-dim=4..32")
    s.add_argument("--objective", choices=list(OBJECTIVES), default="val_elbo")
    s.add_argument("--objective2", choices=list(OBJECTIVES), default=None, help="a second objective: Pareto front")
    s.add_argument("--direction", choices=DIRECTIONS, default="maximize")
    s.add_argument("--direction2", choices=DIRECTIONS, default="maximize")
    s.add_argument("--sampler", choices=["grid", "tpe"], default="grid")
    s.add_argument("--trials", type=int, default=None, help="trials in the study (default: the whole grid)")
    s.add_argument("--out", type=Path, required=True, help="sweep directory: sweep.json and the trials' runs")
    s.add_argument("--storage", default=None, help="SQLAlchemy URL of the study (default sqlite:///OUT/sweep.db)")
    s.add_argument("--study", default=None, help="study name (default: the name of OUT)")
    s.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    s.add_argument("--pruner", choices=["auto", "median", "none"], default="auto")
    s.add_argument("--metric-n", type=int, default=10000, help="training points of the disentanglement objectives")
    s.add_argument("--metric-n-eval", type=int, default=5000, help="evaluation points of those objectives")
    s.add_argument("--sampler-seed", type=int, default=0)
    s.add_argument("--seeds", type=int, default=1, help="repeat every point with this many training seeds "
                   "(0, 1, ...): the report shows each figure's spread over them")
    s.add_argument("--metrics", default="", help="disentanglement metrics every trial records beside the objectives "
                   "(all, or some of beta_vae,factor_vae,mig,dci,sap,modularity), for the report")
    s.add_argument("--together", action="store_true", help="train every point as one stacked model (torch.func.vmap): "
                   "the points may differ only in beta, beta-norm and seed, of a flat model with --loss beta; each "
                   "trial still gets its own run directory, metrics and checkpoints, as if trained alone")
    s.add_argument("--heartbeat-interval", type=int, default=60, help="seconds between a worker's heartbeats")
    s.add_argument("--grace-period", type=int, default=None, help="seconds without a heartbeat before a trial "
                   "counts as killed (default: twice the interval)")
    add_train_arguments(p, run_dir=False)

    r = add_command(
        subparsers, "sweep-report", cmd_sweep_report, "the table, figures and best run of a sweep",
        "facevae sweep-report runs/sweep",
        description="Reads the study recorded in DIR/sweep.json and writes into DIR: sweep_report.json, "
        "objective_vs_beta.png (the objective against β and β_norm = β·M/N), pareto.png (two objectives) and "
        "sweep_report.html (self-contained, the best run linked). Prints the trial table.",
    )
    r.add_argument("dir", type=Path, metavar="DIR", help="the --out folder of `facevae sweep`")


def sweep_config_from_args(args: argparse.Namespace):
    from facevae.cli.train import settings_from_args
    from facevae.metrics.run import parse_metric_names
    from facevae.sweeps.objectives import check_objectives
    from facevae.sweeps.search_space import base_settings, check_space, parse_params
    from facevae.sweeps.storage import check_storage_url
    from facevae.sweeps.study import SweepConfig
    from facevae.training.run import check_accelerator

    space = parse_params(args.param)
    if args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
    if args.seeds > 1:
        if "seed" in space:
            raise ValueError("give the seeds either as --seeds N or as --param seed=..., not both")
        space["seed"] = list(range(args.seeds))
    settings = settings_from_args(args)
    if not settings["data"]:
        raise ValueError("--data is needed: the packed dataset every trial trains on")
    objectives = check_objectives([args.objective] + ([args.objective2] if args.objective2 else []))
    # Several workers' progress bars would interleave on one terminal.
    settings["progress"] = settings["progress"] and args.workers == 1
    base = base_settings(settings)
    check_accelerator(settings["accelerator"], settings["devices"])
    for warning in check_space(space, base, args.conditions):
        print(f"facevae: warning: {warning}", file=sys.stderr)
    out = args.out.resolve()
    if args.together:
        check_together(space, base, args)
    check_storage_url(_storage_url(args.storage, out))
    return SweepConfig(
        out=str(out), storage=_storage_url(args.storage, out), study=args.study or out.name,
        space=space, objectives=objectives, directions=[args.direction, args.direction2][: len(objectives)],
        trials=_trials(args, space), sampler=args.sampler, pruner=args.pruner, metric_n=args.metric_n,
        metric_n_eval=args.metric_n_eval, sampler_seed=args.sampler_seed, heartbeat_interval=args.heartbeat_interval,
        grace_period=args.grace_period, base=base, conditions=args.conditions,
        metrics=parse_metric_names(args.metrics) if args.metrics else [], together=args.together)


def check_together(space: dict, base: dict, args: argparse.Namespace) -> None:
    """A one-line error, before anything starts, for a sweep whose points cannot train as one stack."""
    from facevae.sweeps.search_space import grid, trial_config
    from facevae.training.together import check_members

    if args.workers > 1:
        raise ValueError("--together trains the whole sweep in one process: leave out --workers")
    check_members([trial_config(base, params, args.conditions, "unused") for params in grid(space)])


def _storage_url(url: str | None, out: Path) -> str:
    """The given URL, or SQLite under OUT; a relative SQLite path made absolute, so sweep-report finds it."""
    if url is None:
        return f"sqlite:///{out / 'sweep.db'}"
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        return prefix + str(Path(url[len(prefix):]).resolve())
    return url


def _trials(args: argparse.Namespace, space: dict) -> int:
    from facevae.sweeps.search_space import grid_size, is_range, range_text

    size = grid_size(space)
    ranged = next((f"{name.replace('_', '-')}={range_text(v)}" for name, v in space.items() if is_range(v)), None)
    if ranged and args.sampler == "grid":
        raise ValueError(f"--param {ranged} is a range, which a grid cannot hold: list its values "
                         "(for example lr=1e-4,1e-3,1e-2), or search it with --sampler tpe --trials N")
    if args.trials is None:
        if args.sampler != "grid":
            raise ValueError(f"--trials is needed with --sampler {args.sampler}")
        return size
    if args.trials < 1:
        raise ValueError("--trials must be at least 1")
    if args.sampler == "grid" and args.trials > size:
        print(f"the grid has {size} points: --trials {args.trials} runs each once")
        return size
    return args.trials


def check_sweep_numbers(args: argparse.Namespace) -> None:
    """One line naming the flag, before a worker starts (Optuna's own messages name none)."""
    from facevae.common.settings import check_seed
    from facevae.metrics.run import check_point_counts

    if args.workers < 1 or args.heartbeat_interval < 1:
        raise ValueError("--workers and --heartbeat-interval must be at least 1")
    check_point_counts(metric_n=args.metric_n, metric_n_eval=args.metric_n_eval)
    if args.grace_period is not None and args.grace_period < 1:
        raise ValueError(f"--grace-period is a number of seconds, at least 1; got {args.grace_period}")
    if args.direction2 != "maximize" and not args.objective2:
        raise ValueError("--direction2 is the direction of --objective2, which is not given")
    check_seed(args.sampler_seed, "--sampler-seed")


def _workers_here(asked: int, trials: int) -> int:
    """Workers beyond the study's trials would each import torch only to find no trial left."""
    if asked > trials:
        print(f"the study has {trials} trial(s): {trials} worker(s) here, not {asked}")
        return trials
    return asked


def cmd_sweep(args: argparse.Namespace) -> int:
    from facevae.common.signals import Interrupted, signal_name, sigterm_as_interrupt
    from facevae.reporting.sweep_report import build_sweep_report, format_trials
    from facevae.sweeps.study import run_sweep

    check_sweep_numbers(args)
    config = sweep_config_from_args(args)
    workers = _workers_here(args.workers, config.trials)
    print(f"sweep {config.study!r}: {config.trials} trials over {', '.join(config.space)} "
          f"({config.sampler}), storage {config.storage}", flush=True)
    try:
        with sigterm_as_interrupt():  # a worker here stops at the next batch, its trial's point queued again
            run_sweep(config, workers=workers)
    except KeyboardInterrupt as exc:  # also Interrupted (SIGTERM): a stop, not an error
        signum = getattr(exc, "signum", signal.SIGINT)
        raise Interrupted(signum, f"sweep {config.study!r} stopped by {signal_name(signum)}; the points of the trials "
                          "it was training are queued again: run the same command to continue") from None
    report = build_sweep_report(config.out)
    print(format_trials(report))
    print(f"report: {report['files']['html']}")
    return 0


def cmd_sweep_report(args: argparse.Namespace) -> int:
    from facevae.reporting.sweep_report import build_sweep_report, format_trials

    report = build_sweep_report(args.dir)
    print(format_trials(report))
    print("written: " + ", ".join(report["files"].values()))
    return 0
