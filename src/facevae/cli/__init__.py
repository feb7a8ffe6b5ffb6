"""The ``facevae`` command. Each pipeline stage registers its subcommands from its own module."""

from __future__ import annotations

import argparse
import os
import sys

from facevae import __version__
from facevae.cli import analyse as analyse_commands
from facevae.cli import classify as classify_commands
from facevae.cli import data as data_commands
from facevae.cli import demo as demo_commands
from facevae.cli import metrics as metrics_commands
from facevae.cli import report as report_commands
from facevae.cli import sweep as sweep_commands
from facevae.cli import train as train_commands

GROUPS = [data_commands, train_commands, analyse_commands, classify_commands, report_commands, metrics_commands,
          sweep_commands, demo_commands]


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the examples' line breaks and shows defaults."""


def add_command(subparsers, name: str, func, help: str, example: str, description: str = "") -> argparse.ArgumentParser:
    """A subcommand whose --help ends with a runnable example."""
    parser = subparsers.add_parser(
        name,
        help=help,
        description=(description or help),
        epilog=f"example:\n  {example}",
        formatter_class=HelpFormatter,
    )
    parser.set_defaults(func=func)
    return parser


def add_scale_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The Lightning Trainer's scale flags, shared by every training command; returns the group."""
    s = parser.add_argument_group("scale")
    s.add_argument("--accelerator", default="auto", help="cpu, gpu, auto")
    s.add_argument("--devices", default="auto", help="count or list, e.g. 2 or 0,1")
    s.add_argument("--num-nodes", type=int, default=1)
    s.add_argument("--strategy", default="auto", help="auto, ddp, ddp_spawn, ...")
    s.add_argument("--precision", default="32-true", help="32-true, bf16-mixed, 16-mixed")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    return s


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facevae",
        description="Learn and measure what variational autoencoders learn about faces.",
        epilog="example:\n  facevae data synth data/synth --n 2000 && facevae data explore data/synth --out runs/explore",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"facevae {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for group in GROUPS:
        group.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except (ValueError, ArithmeticError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        # A user's mistake gets one line; FACEVAE_DEBUG=1 brings the traceback back for developers.
        if os.environ.get("FACEVAE_DEBUG"):
            raise
        print(f"facevae: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("facevae: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
