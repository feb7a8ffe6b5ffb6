"""What a sweep varies: ``--param NAME=V1,V2,...`` or ``--param NAME=LOW..HIGH[:log]`` over the settings
of ``facevae train``.

A parameter is any field of ModelConfig or TrainConfig (``beta``, ``beta-norm``, ``width``,
``latent-dim``, ``batch-size``, ``lr``, ``model``, ...; written as the field or as its flag), read
with that field's type and choices, or ``conditions`` (what ``--conditions`` says, names joined by
``+``). A trial's run is the sweep's base settings with the trial's values, built as ``facevae
train`` builds its run, so it is exactly the run ``facevae train`` would make with those flags.

A number setting may instead be given a range, ``lr=1e-4..1e-2:log`` (both ends included; ``:log``
samples it on a log scale), which TPE searches as Optuna's ``suggest_float`` / ``suggest_int`` do;
in the space it is ``{"low", "high", "log", "type"}`` where a list of values would be. A grid
cannot hold a range.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import typing

# --data is the sweep's own, each trial gets its own run directory, condition_names come from conditions, and a
# --note is one text for every trial (a point's settings are in its config.yaml already).
NOT_SWEPT = {"data", "run_dir", "condition_names", "note"}
CONDITIONS = "conditions"
RANGE = re.compile(r"(?P<low>.+?)\.\.(?P<high>[^:]+)(?::(?P<scale>\w*))?")


def sweepable() -> dict[str, tuple]:
    """(type annotation, choices) of each setting a sweep can vary, by field name."""
    from facevae.common.settings import type_hints
    from facevae.models.config import ModelConfig
    from facevae.training.config import TrainConfig

    settings = {f.name: (type_hints(cls)[f.name], f.metadata.get("choices"))
                for cls in (ModelConfig, TrainConfig) for f in dataclasses.fields(cls) if f.name not in NOT_SWEPT}
    return settings | {CONDITIONS: (str, None)}


def parse_param(spec: str) -> tuple[str, list | dict]:
    """``"beta=1,2,4"`` → ``("beta", [1.0, 2.0, 4.0])``, typed and checked like the setting; a list setting's
    values are its items joined by "+" (``hvae_groups=2+2,4+2+1``); ``"lr=1e-4..1e-2:log"`` → a range."""
    from facevae.common.settings import parse_text

    name, sep, text = spec.partition("=")
    name = name.strip().lstrip("-").replace("-", "_")
    values = [v.strip() for v in text.split(",")]
    if not sep or not name or not all(values):
        raise ValueError(f"--param {spec!r}: expected NAME=V1,V2,... or NAME=LOW..HIGH (for example beta=1,2,4 "
                         "or lr=1e-4..1e-2:log)")
    settings, shown = sweepable(), name.replace("_", "-")
    if name not in settings:
        names = ", ".join(sorted(n.replace("_", "-") for n in settings))
        raise ValueError(f"--param {shown!r}: not a flag of facevae train; choose from {names}")
    hint, choices = settings[name]
    try:
        if len(values) == 1 and ".." in values[0]:
            return name, _parse_range(values[0], hint, choices)
        typed = [parse_text(v.replace("+", ","), hint, choices) for v in values]
    except ValueError as exc:
        raise ValueError(f"--param {shown!r}: {exc}") from None
    if typing.get_origin(hint) is list:
        # a list setting's value is one point of the grid: its items joined by "+" (Optuna's choices are scalars)
        typed = ["+".join(map(str, value)) for value in typed]
    if len(set(typed)) != len(typed):
        raise ValueError(f"--param {shown!r}: a value is listed twice")
    return name, typed


def _parse_range(text: str, hint, choices) -> dict:
    """``"LOW..HIGH"`` or ``"LOW..HIGH:log"`` of a number setting → ``{"low", "high", "log", "type"}``."""
    from facevae.common.settings import parse_text

    match = RANGE.fullmatch(text)
    if match is None or match["scale"] not in (None, "log", "linear"):
        raise ValueError(f"{text!r} is not a range LOW..HIGH, LOW..HIGH:log or LOW..HIGH:linear")
    low, high = (parse_text(match[end], hint) for end in ("low", "high"))
    if choices is not None or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise ValueError("only a number setting without fixed choices takes a range; list its values instead")
    log = match["scale"] == "log"
    if not low < high:
        raise ValueError(f"a range's low end must be below its high end, got {text!r}")
    if log and low <= 0:
        raise ValueError(f"a log range must be above 0, got {text!r}")
    return {"low": low, "high": high, "log": log, "type": type(low).__name__}


RANGE_KEYS = {"low", "high", "log", "type"}


def is_range(values) -> bool:
    return isinstance(values, dict)


def well_formed(values) -> bool:
    """Whether a parameter's entry of a stored space is what parse_param makes: a non-empty list or a range."""
    if is_range(values):
        return set(values) == RANGE_KEYS and values["type"] in ("int", "float")
    return isinstance(values, list) and bool(values)


def suggest(trial, name: str, values):
    """The trial's value of one parameter: a choice among listed values, or a draw from a range."""
    if not is_range(values):
        return trial.suggest_categorical(name, values)
    draw = trial.suggest_int if values["type"] == "int" else trial.suggest_float
    return draw(name, values["low"], values["high"], log=values["log"])


def range_text(bounds: dict) -> str:
    """A range as ``--param`` takes it."""
    return f"{bounds['low']:g}..{bounds['high']:g}" + (":log" if bounds["log"] else "")


def parse_params(specs: list[str]) -> dict[str, list | dict]:
    """Several ``--param`` specs → ``{setting: values}``; a name may appear once."""
    if not specs:
        raise ValueError("give at least one --param NAME=V1,V2,... (for example --param beta=1,2,4)")
    space: dict[str, list | dict] = {}
    for spec in specs:
        name, values = parse_param(spec)
        if name in space:
            raise ValueError(f"--param {name!r} is given twice")
        space[name] = values
    return space


def grid_size(space: dict[str, list | dict]) -> float:
    """Points of the grid: infinite when a parameter is a range."""
    return math.inf if any(map(is_range, space.values())) else math.prod(len(v) for v in space.values())


def grid(space: dict[str, list | dict]):
    """Every combination of the values, as ``{setting: value}`` dicts; a range contributes its two ends, which is
    what a check of every point needs (the settings' limits are bounds)."""
    names = list(space)
    values = [[v["low"], v["high"]] if is_range(v) else v for v in space.values()]
    for combination in itertools.product(*values):
        yield dict(zip(names, combination))


def base_settings(settings: dict) -> dict:
    """The sweep's base settings (by field name) as a run config's two parts, ``{"model": ..., "train": ...}``.

    Not a RunConfig: the base alone need not be a valid run (betavae with the default β = 1 while β is swept).
    """
    from facevae.models.config import ModelConfig

    model = {f.name for f in dataclasses.fields(ModelConfig)}
    return {"model": {k: v for k, v in settings.items() if k in model},
            "train": {k: v for k, v in settings.items() if k not in model}}


def trial_config(base: dict, params: dict, conditions: str, run_dir):
    """The RunConfig of one trial: the base settings with the trial's values, trained into ``run_dir``."""
    from facevae.common.settings import parse_text
    from facevae.training.config import RunConfig

    lists = {name for name, (hint, _) in sweepable().items() if typing.get_origin(hint) is list}
    params = {k: parse_text(v.replace("+", ","), sweepable()[k][0]) if k in lists else v for k, v in params.items()}
    settings = {**base["model"], **base["train"], **params, "run_dir": str(run_dir)}
    conditions = settings.pop(CONDITIONS, conditions)
    return RunConfig.from_settings(settings, conditions.replace("+", ","))


def check_space(space: dict[str, list | dict], base: dict, conditions: str, limit: int = 10000) -> list[str]:
    """Fails, naming the combination, on a point ``facevae train`` would refuse (e.g. betavae with β = 1);
    returns the warnings of the points (e.g. a latent size that makes huge checkpoints, images upsampled from
    smaller data), each once."""
    warnings = set()
    for params in itertools.islice(grid(space), limit):
        try:
            found = trial_config(base, params, conditions, "unused").warnings()
        except ValueError as exc:
            point = ", ".join(f"{k}={v}" for k, v in params.items())
            raise ValueError(f"the sweep point {point} is not a valid run: {exc}") from None
        warnings.update(found)
    return sorted(warnings)
