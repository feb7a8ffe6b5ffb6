"""Settings declared once, as dataclass fields: their flags, help and checks all come from the field.

    @dataclass
    class TrainConfig:
        epochs: int = setting(20, "passes over the training split", at_least=1)

        def __post_init__(self):
            check_settings(self)          # types, choices and bounds, naming the flag: "--epochs must be >= 1"

    add_arguments(parser, TrainConfig, group="training")   # --epochs N, an int, its help and default shown
    TrainConfig(**values_from_args(args, TrainConfig))

A field's flag is ``--kebab-case`` of its name (``flag=`` gives another). Its type is the annotation:
int, float (finite only), str, bool (a switch: ``--name`` when the default is False, ``--no-name``
when it is True), ``X | None`` (the text "none" is None) and ``list[str]`` / ``list[int]`` (a comma list). Choices
are checked by the dataclass, not by argparse, so a bad value is the same one-line error whether it
comes from a flag, a sweep or a config file.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from functools import lru_cache

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class SettingTypeError(TypeError, ValueError):
    """A setting of the wrong type: a TypeError for Python callers, a one-line error for the command line."""


def setting(default, help: str, *, choices=None, at_least=None, above=None, flag: str | None = None,
            metavar: str | None = None, group: str | None = None):
    """A dataclass field with what its flag and its checks need (``group``: the help section, if not the caller's)."""
    metadata = {"help": help, "choices": tuple(choices) if choices is not None else None, "at_least": at_least,
                "above": above, "flag": flag, "metavar": metavar, "group": group}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag_name(name: str, cls=None) -> str:
    """The flag of a setting, as the user types it: ``max_time`` → ``--max-time``; with the dataclass ``cls``,
    the field's own ``flag`` if it has one, and ``--no-progress`` for a switch that is on by default."""
    f = next((f for f in dataclasses.fields(cls) if f.name == name), None) if cls is not None else None
    if f is not None and f.metadata.get("flag"):
        return f.metadata["flag"]
    return ("--no-" if f is not None and f.default is True else "--") + name.replace("_", "-")


@lru_cache(maxsize=None)
def type_hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _parts(hint) -> tuple[type, bool, bool]:
    """(scalar type, optional, list) of an annotation such as ``float | None`` or ``list[str]``."""
    args = typing.get_args(hint)
    optional = type(None) in args
    if optional:
        hint = next(a for a in args if a is not type(None))
    if typing.get_origin(hint) is list:
        return typing.get_args(hint)[0], optional, True
    return hint, optional, False


def parse_text(text: str, hint, choices=None):
    """A setting's value from its text (a flag's or a ``--param`` value); ValueError says why it is not one."""
    scalar, optional, is_list = _parts(hint)
    text = text.strip()
    if optional and text.lower() == "none":
        return None
    if is_list:
        parts = [part.strip() for part in text.split(",") if part.strip()]
        try:
            return [scalar(part) for part in parts]
        except ValueError:
            raise ValueError(f"{text!r} is not a comma list of {scalar.__name__}s") from None
    if scalar is bool:
        if text.lower() not in _TRUE + _FALSE:
            raise ValueError(f"{text!r} is not true/false")
        return text.lower() in _TRUE
    try:
        value = scalar(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a valid {scalar.__name__}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    if choices is not None and value not in choices:
        raise ValueError(f"{text!r} is not one of {', '.join(map(str, choices))}")
    return value


def add_arguments(parser: argparse.ArgumentParser, cls, *, group: str, skip=(), defaults: dict | None = None) -> None:
    """One flag per field of the dataclass ``cls`` (but ``skip``), in the help section ``group`` or the field's own.

    ``defaults`` replaces a field's default on the command line only (e.g. ``{"model": "cvae"}``).
    """
    hints, defaults = type_hints(cls), defaults or {}
    argument_group(parser, group)  # the caller's section before any a field names
    # The class's own fields before those it inherits: a command's flags first, the shared ones after.
    own = cls.__dict__.get("__annotations__", {})
    for f in sorted(dataclasses.fields(cls), key=lambda f: f.name not in own):
        if f.name in skip:
            continue
        meta, hint = f.metadata, hints[f.name]
        default = defaults.get(f.name, f.default if f.default_factory is dataclasses.MISSING else f.default_factory())
        target = argument_group(parser, meta.get("group") or group)
        help_text = (meta.get("help") or "").replace("%", "%%")
        if hint is bool:
            target.add_argument(flag_name(f.name, cls), dest=f.name, default=default, help=help_text,
                                action="store_false" if f.default is True else "store_true")
            continue
        choices = meta.get("choices")
        metavar = meta.get("metavar") or ("{" + ",".join(map(str, choices)) + "}" if choices else None)
        # A list's default goes in as its text: argparse converts a text default with ``type`` as it would a flag's.
        text_or_default = ",".join(map(str, default)) if isinstance(default, list) else default
        target.add_argument(flag_name(f.name, cls), dest=f.name, type=_converter(hint), default=text_or_default,
                            metavar=metavar, help=help_text)


def values_from_args(args: argparse.Namespace, cls) -> dict:
    """The settings of ``cls`` that ``add_arguments`` put on the command line (the skipped are absent), by name."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


def argument_group(parser: argparse.ArgumentParser, title: str):
    """The help section called ``title``, made the first time it is asked for."""
    found = next((g for g in parser._action_groups if g.title == title), None)
    return found or parser.add_argument_group(title)


def _converter(hint):
    scalar, optional, is_list = _parts(hint)
    if not optional and not is_list:
        return scalar  # argparse names the type in its message: "invalid int value"

    def convert(text: str):
        return parse_text(text, hint)

    convert.__name__ = "list" if is_list else scalar.__name__
    return convert


def check_settings(config) -> None:
    """Each field of the dataclass instance ``config`` has its type (ints widen to float), choices and bounds."""
    cls = type(config)
    for f in dataclasses.fields(config):
        value = _typed(cls, f.name, getattr(config, f.name), type_hints(cls)[f.name])
        setattr(config, f.name, value)
        if value is None:
            continue
        meta, flag = f.metadata, flag_name(f.name, cls)
        if meta.get("choices") is not None and value not in meta["choices"]:
            raise ValueError(f"{flag} must be one of {', '.join(map(str, meta['choices']))}; got {value!r}")
        if meta.get("at_least") is not None and value < meta["at_least"]:
            raise ValueError(f"{flag} must be >= {meta['at_least']}, got {value}")
        if meta.get("above") is not None and value <= meta["above"]:
            raise ValueError(f"{flag} must be > {meta['above']}, got {value}")


def _typed(cls, name: str, value, hint):
    scalar, optional, is_list = _parts(hint)
    if value is None and optional:
        return None
    if is_list:
        if isinstance(value, (list, tuple)) and all(isinstance(v, scalar) and not isinstance(v, bool) for v in value):
            return list(value)
    elif scalar is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"{flag_name(name, cls)} must be a finite number, got {value}")
        return float(value)
    elif isinstance(value, scalar) and (scalar is bool or not isinstance(value, bool)):
        return value
    expected = str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")
    raise SettingTypeError(f"{cls.__name__}.{name} must be {expected}, got {value!r} ({type(value).__name__})")


def given_dests(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """The settings the user typed (not defaulted): ``argv`` parsed once more with every default suppressed."""
    saved = []

    def suppress(p: argparse.ArgumentParser) -> None:
        saved.append((p, None, p._defaults))
        p._defaults = {}
        for action in p._actions:
            saved.append((p, action, action.default))
            action.default = argparse.SUPPRESS
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    suppress(sub)

    suppress(parser)
    try:
        return set(vars(parser.parse_args(argv)))
    finally:
        for p, action, default in saved:
            if action is None:
                p._defaults = default
            else:
                action.default = default


MAX_SEED = 2**32 - 1  # numpy's and scikit-learn's seeds stop here (torch's go further)


def check_seed(seed, flag: str = "--seed") -> int:
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{flag} must be between 0 and {MAX_SEED} (2**32 - 1), got {seed}")
    return int(seed)
