"""Ctrl-C and SIGTERM as one kind of stop, that says how to continue and exits as the shell expects.

A command stopped by a signal exits with 128 + the signal's number (130 for Ctrl-C, 143 for
SIGTERM), so that a scheduler or a shell script can tell it from success and from a user's error.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Interrupted(KeyboardInterrupt):
    """A stop asked for by a signal. A KeyboardInterrupt, so that ``except Exception`` (an Optuna study's
    ``catch``, a retry loop) never swallows it; the message says how to continue."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message or f"stopped by {signal_name(signum)}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        return str(self.args[0])


def signal_name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`Interrupted` in the main thread for the block, as Ctrl-C raises KeyboardInterrupt."""
    if not in_main_thread():
        yield  # only the main thread can have signal handlers; SIGTERM keeps its default
        return

    def on_sigterm(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM stops at once
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@contextmanager
def default_sigterm() -> Iterator[None]:
    """SIGTERM's default action for the block: for code that installs a handler of its own and would also call
    any handler it finds (Lightning's fit does, and ours would then raise in the middle of a step)."""
    if not in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
