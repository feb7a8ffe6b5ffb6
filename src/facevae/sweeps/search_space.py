"""What a sweep varies: ``--param NAME=V1,V2,...`` over the flags of ``facevae train``.

A parameter is any training flag (``beta``, ``beta-norm``, ``width``, ``latent-dim``,
``batch-size``, ``lr``, ``model``, ...), read with that flag's own type and choices, so a sweep
trial is exactly the run ``facevae train`` would make with those flags.
"""

from __future__ import annotations

import argparse
import itertools
import math
from functools import lru_cache
from pathlib import Path

# --data is the sweep's own and each trial gets its own run directory.
NOT_SWEPT = {"data", "help"}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@lru_cache(maxsize=1)
def train_parser() -> argparse.ArgumentParser:
    from facevae.cli.train import add_train_arguments

    parser = argparse.ArgumentParser(add_help=False)
    add_train_arguments(parser)
    return parser


def train_defaults() -> dict:
    """Every training flag's default, by its argparse dest."""
    return vars(train_parser().parse_args([]))


def _flags() -> dict[str, argparse.Action]:
    """Sweepable flags by name without dashes (``batch-size``)."""
    return {opt.lstrip("-"): a for a in train_parser()._actions if a.dest not in NOT_SWEPT for opt in a.option_strings}


def parse_param(spec: str) -> tuple[str, list]:
    """``"beta=1,2,4"`` → ``("beta", [1.0, 2.0, 4.0])``, typed and checked like the train flag."""
    name, sep, text = spec.partition("=")
    name = name.strip().lstrip("-").replace("_", "-")
    values = [v.strip() for v in text.split(",")]
    if not sep or not name or not all(values):
        raise ValueError(f"--param {spec!r}: expected NAME=V1,V2,... (for example beta=1,2,4)")
    action = _flags().get(name)
    if action is None:
        raise ValueError(f"--param {name!r}: not a flag of facevae train; choose from {', '.join(sorted(_flags()))}")
    typed = [_convert(action, name, v) for v in values]
    if len(set(typed)) != len(typed):
        raise ValueError(f"--param {name!r}: a value is listed twice")
    return action.dest, typed


def _convert(action: argparse.Action, name: str, text: str):
    if action.nargs == 0:  # a switch such as --flip
        if text.lower() not in _TRUE | _FALSE:
            raise ValueError(f"--param {name!r}: {text!r} is not true/false")
        return text.lower() in _TRUE
    convert = action.type or str
    try:
        value = convert(text)
    except (TypeError, ValueError):
        raise ValueError(f"--param {name!r}: {text!r} is not a valid {getattr(convert, '__name__', 'value')}") from None
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"--param {name!r}: {text!r} is not one of {', '.join(map(str, action.choices))}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"--param {name!r}: {text!r} is not a finite number")
    return str(value) if isinstance(value, Path) else value


def parse_params(specs: list[str]) -> dict[str, list]:
    """Several ``--param`` specs → ``{dest: values}``; a name may appear once."""
    if not specs:
        raise ValueError("give at least one --param NAME=V1,V2,... (for example --param beta=1,2,4)")
    space: dict[str, list] = {}
    for spec in specs:
        dest, values = parse_param(spec)
        if dest in space:
            raise ValueError(f"--param {dest!r} is given twice")
        space[dest] = values
    return space


def grid_size(space: dict[str, list]) -> int:
    return math.prod(len(v) for v in space.values())


def grid(space: dict[str, list]):
    """Every combination of the values, as ``{dest: value}`` dicts."""
    names = list(space)
    for combination in itertools.product(*space.values()):
        yield dict(zip(names, combination))


def trial_args(train_args: dict, params: dict, run_dir) -> argparse.Namespace:
    """The ``facevae train`` arguments of one trial: the sweep's base flags with the trial's values."""
    return argparse.Namespace(**{**train_args, **params, "run_dir": Path(run_dir)})


def check_space(space: dict[str, list], train_args: dict, limit: int = 10000) -> None:
    """Fails, naming the combination, on a point ``facevae train`` would refuse (e.g. betavae with β = 1)."""
    from facevae.cli.train import run_config_from_args

    for params in itertools.islice(grid(space), limit):
        try:
            run_config_from_args(trial_args(train_args, params, "unused"))
        except ValueError as exc:
            point = ", ".join(f"{k}={v}" for k, v in params.items())
            raise ValueError(f"the sweep point {point} is not a valid run: {exc}") from None
