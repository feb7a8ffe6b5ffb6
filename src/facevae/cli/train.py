"""``facevae train``: fit a model of the VAE family on a packed dataset, or resume a run.

Its flags are the fields of ModelConfig and TrainConfig (facevae.common.settings derives them), and
one that is not a field: ``--conditions``, which becomes condition_names once the data is known.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

# The command line's default model is the report's CVAE; ModelConfig's own default stays "vae", the
# one model that needs no condition names.
CLI_DEFAULTS = {"model": "cvae"}
CONDITIONS_HELP = ("a conditional model's condition: 'all' attributes, 'report' (hair colour, beard, gender, "
                   "pale skin) or names A,B,C")


def register(subparsers) -> None:
    from facevae.cli import add_command
    from facevae.common.settings import argument_group

    p = add_command(
        subparsers, "train", cmd_train, "train a VAE / conditional VAE / β-VAE (Lightning)",
        "facevae train --data runs/demo/data --model cvae --run-dir runs/cvae --epochs 10 --split stratified",
        description="Train into a run directory (config.yaml, checkpoints, logs, figures, metrics.json, "
        "model.safetensors). --resume RUN continues a killed run from its last checkpoint, with the settings "
        "of RUN/config.yaml; --epochs or --max-time beside it train a finished run longer.",
    )
    argument_group(p, "run").add_argument("--resume", type=Path, metavar="RUN",
                                          help="continue this run from checkpoints/last.ckpt (only --epochs and "
                                          "--max-time may be given with it)")
    add_train_arguments(p, run_dir=True)


def add_train_arguments(p: argparse.ArgumentParser, run_dir: bool) -> None:
    """The flags that make a RunConfig (see run_config_from_args); `facevae sweep` shares them, but --run-dir."""
    from facevae.common.settings import add_arguments, argument_group
    from facevae.models.config import ModelConfig
    from facevae.training.config import TrainConfig
    from facevae.training.presets import presets_help

    argument_group(p, "run")  # the sections in the order the help shows them
    add_arguments(p, ModelConfig, group="model", skip={"condition_names"}, defaults=CLI_DEFAULTS)
    argument_group(p, "model").add_argument("--conditions", default="all", help=CONDITIONS_HELP)
    argument_group(p, "run").add_argument("--preset", default=None, metavar="NAME", help="model and training settings "
                                          f"for a purpose, under the ones typed: {presets_help()}")
    add_arguments(p, TrainConfig, group="training", skip=set() if run_dir else {"run_dir"})


def settings_from_args(args: argparse.Namespace) -> dict:
    """Every ModelConfig and TrainConfig setting the command line holds, by field name, with the --preset's
    values where the user typed none."""
    from facevae.common.settings import values_from_args
    from facevae.models.config import ModelConfig
    from facevae.training.config import TrainConfig
    from facevae.training.presets import apply_preset

    settings = values_from_args(args, ModelConfig) | values_from_args(args, TrainConfig)
    return apply_preset(settings, getattr(args, "preset", None), getattr(args, "typed_settings", set()))


def run_config_from_args(args: argparse.Namespace):
    from facevae.training.config import RunConfig
    from facevae.training.presets import preset_warning

    settings = settings_from_args(args)
    if not settings["data"] or not settings["run_dir"]:
        raise ValueError("--data and --run-dir are needed (or --resume RUN)")
    config = RunConfig.from_settings(settings, args.conditions)
    warnings = [preset_warning(getattr(args, "preset", None), config.train.accelerator), *config.warnings()]
    for warning in filter(None, warnings):
        print(f"facevae: warning: {warning}", file=sys.stderr)
    return config


# What may change when a run is resumed: how long it trains, and how it reports. Anything else would make
# the checkpoint continue under settings it was not trained with.
RESUME_OVERRIDES = ("epochs", "max_time")
RESUME_CONSOLE = ("progress", "verbose")


def resume_overrides(args: argparse.Namespace, settings: dict | None = None, cls=None,
                     what: str = "the run") -> dict:
    """The --epochs / --max-time typed beside --resume; a one-line error for any other setting typed there,
    instead of ignoring it. ``settings``: the command's settings from ``args`` (default: train's), ``cls``: their
    dataclass, for the flags' names."""
    from facevae.common.settings import flag_name

    settings = settings_from_args(args) if settings is None else settings
    typed = set(getattr(args, "typed_settings", set())) & set(settings)
    refused = sorted(typed - set(RESUME_OVERRIDES) - set(RESUME_CONSOLE))
    if refused:
        raise ValueError(f"--resume RUN continues {what} with the settings in RUN/config.yaml; "
                         f"{', '.join(flag_name(name, cls) for name in refused)} cannot change them (only --epochs and "
                         "--max-time can: train longer); start a new run for other settings")
    return {name: settings[name] for name in RESUME_OVERRIDES if name in typed}


def cmd_train(args: argparse.Namespace) -> int:
    from facevae.common.signals import sigterm_as_interrupt
    from facevae.training.run import TrainingInterrupted, resume, train

    run_dir = args.resume if args.resume is not None else Path(args.run_dir or ".")
    try:
        with sigterm_as_interrupt():  # outside Lightning's fit too: a stop that says how to go on
            if args.resume is not None:
                metrics = resume(args.resume, progress=args.progress, verbose=args.verbose, **resume_overrides(args))
            else:
                config = run_config_from_args(args)
                metrics = train(config)
    except TrainingInterrupted:
        raise
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM, before or after Lightning's fit
        raise TrainingInterrupted(getattr(exc, "signum", signal.SIGINT), run_dir) from None
    if metrics:
        test = metrics.get("test", {})
        print(json.dumps({"best_epoch": metrics.get("best_epoch"), "best_val_elbo": metrics.get("best_val_elbo"),
                          **{k: round(v, 4) if isinstance(v, float) else v for k, v in test.items()}}, indent=2))
        print(f"run directory: {run_dir}  (model.safetensors, metrics.json, figures/, logs/)")
    return 0
