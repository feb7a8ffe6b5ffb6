"""The ``facevae`` command. Each pipeline stage registers its subcommands from its own module."""

from __future__ import annotations

import argparse
import os
import re
import sys

from facevae import __version__
from facevae.cli import analyse as analyse_commands
from facevae.cli import classify as classify_commands
from facevae.cli import data as data_commands
from facevae.cli import demo as demo_commands
from facevae.cli import metrics as metrics_commands
from facevae.cli import report as report_commands
from facevae.cli import serve as serve_commands
from facevae.cli import sweep as sweep_commands
from facevae.cli import train as train_commands

GROUPS = [data_commands, train_commands, analyse_commands, classify_commands, report_commands, metrics_commands,
          sweep_commands, demo_commands, serve_commands]


NEGATIVE_NUMBER = re.compile(r"-\.?\d")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the examples' line breaks and shows defaults, but not a switch's (``--no-progress``: "default: True"
    would read as on) nor an empty one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.nargs == 0 or action.default in (None, "", []):
            return action.help or ""
        return super()._get_help_string(action)


def add_command(subparsers, name: str, func, help: str, example: str, description: str = "") -> argparse.ArgumentParser:
    """A subcommand whose --help ends with a runnable example."""
    parser = subparsers.add_parser(
        name,
        help=help,
        description=(description or help),
        epilog=f"example:\n  {example}",
        formatter_class=HelpFormatter,
    )
    parser.set_defaults(func=func, command_parser=parser)
    # Python 3.13's rule for what is a number, not a flag: before it, `--range -1e-3 1e-3` was "expected 2 arguments"
    parser._negative_number_matcher = NEGATIVE_NUMBER
    return parser


def add_group_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """--group: which latent group of a hierarchical model ``what`` looks at (a flat model has one)."""
    parser.add_argument("--group", default=None, metavar="NAME",
                        help=f"the latent group {what} (default: the model's top group; a flat VAE has one, z; "
                             "a hierarchical one's are named by scale, e.g. 4x4.0, 8x8.1)")


class DeferredFlagsParser(argparse.ArgumentParser):
    """A subcommand whose flags ``add_flags(parser)`` adds when it first parses or shows help: for flags read from
    a module that imports torch (facevae.recognition does, in its __init__), which ``facevae --help`` should not."""

    add_flags = None

    def _add_deferred_flags(self) -> None:
        add, self.add_flags = self.add_flags, None
        if add is not None:
            add(self)

    def parse_known_args(self, args=None, namespace=None):
        self._add_deferred_flags()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._add_deferred_flags()
        return super().format_help()


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
    from facevae.common.settings import given_dests

    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse's own parse_args names them under `facevae`'s usage, not the command's
        getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    args.typed_settings = given_dests(parser, argv)  # what was typed wins over a --preset
    from facevae.common.signals import Interrupted

    try:
        code = args.func(args) or 0
        sys.stdout.flush()  # inside the try: a closed pipe found at exit would be a traceback the shell prints
        return code
    except BrokenPipeError:  # `facevae data info d | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the flush at exit finds no pipe
        return 141  # what a shell reports for a writer stopped by SIGPIPE
    except (ValueError, ArithmeticError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        # A user's mistake gets one line; FACEVAE_DEBUG=1 brings the traceback back for developers.
        if os.environ.get("FACEVAE_DEBUG"):
            raise
        print(f"facevae: error: {exc}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as exc:
        message = _out_of_memory_message(exc)
        if message is None or os.environ.get("FACEVAE_DEBUG"):
            raise
        print(f"facevae: error: {message}", file=sys.stderr)
        return 2
    except OSError as exc:
        message = _write_failure_message(exc)
        if message is None or os.environ.get("FACEVAE_DEBUG"):
            raise
        print(f"facevae: error: {message}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"facevae: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("facevae: interrupted", file=sys.stderr)
        return 130


def _out_of_memory_message(exc: BaseException) -> str | None:
    """One line for settings too large for the machine (torch's allocator, on CPU or GPU, says it in a paragraph
    with a C++ location); None for any other RuntimeError, which is a bug to show."""
    text = str(exc)
    if not (isinstance(exc, MemoryError) or "can't allocate memory" in text or "out of memory" in text):
        return None
    tried = re.search(r"tried to allocate (\d+) bytes", text) or re.search(r"tried to allocate ([\d.]+ ?[KMGT]iB)", text, re.I)
    size = ""
    if tried:
        from facevae.common.files import rounded_bytes

        amount = tried.group(1)
        size = f" ({rounded_bytes(int(amount)) if amount.isdigit() else amount} at once)"
    return (f"out of memory{size}: these settings need more memory than this machine has; make them smaller: the "
            "model (--width, --latent-dim, --hvae-channels, --hvae-groups, ...), --batch-size, or the points asked for")


def _write_failure_message(exc: OSError) -> str | None:
    """One line for a full disk or a read-only folder that a write deep in a library ran into (facevae's own
    writes say it themselves, as a FileWriteError); None for any other OSError, which is a bug to show."""
    from facevae.common.files import WRITE_FAILURES, write_failure

    if exc.errno not in WRITE_FAILURES:
        return None
    if exc.filename is None:  # a write into a file that was already open: the library did not say which
        return f"a write failed: {WRITE_FAILURES[exc.errno]} ({exc.strerror})"
    return str(write_failure(exc.filename, exc))


if __name__ == "__main__":
    sys.exit(main())
