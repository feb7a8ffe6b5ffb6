"""One holder at a time for a folder: a locked file that names its holder.

``with hold(folder, what="preparing a dataset"):`` takes an exclusive ``fcntl.flock`` on
``folder/.facevae.lock`` and writes the holder's pid, host and ``what`` into it. A second
holder, in another process or in this one, gets :class:`LockedError` naming the first.

The kernel drops a flock when its holder dies, however it dies, so the file of a killed holder
is found unlocked but still naming it. When that pid no longer runs on this host, the lock is
taken over with a note; a holder on another host, or one whose pid still runs, cannot be told
apart from a live holder on a filesystem without working locks, so it is refused with the file
to delete. Forked children (worker pools) close their copy of the lock at fork: an orphaned
worker never keeps a dead holder's lock alive. POSIX only (``fcntl``).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from facevae.common.errors import FacevaeError

LOCK_NAME = ".facevae.lock"


class LockedError(FacevaeError):
    """The folder is held by someone else (the message names the holder and the lock file)."""


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    what: str

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host} ({self.what})"


# lock file descriptors this process holds, by the pid that took them (a forked child is not it)
_held: dict[int, int] = {}


def _close_inherited_locks() -> None:
    for fd in _held:
        os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


def _print_note(message: str) -> None:
    print(f"facevae: note: {message}", file=sys.stderr)


@contextmanager
def hold(
    folder: str | os.PathLike,
    what: str = "using this folder",
    *,
    name: str = LOCK_NAME,
    note: Callable[[str], None] = _print_note,
) -> Iterator[Path]:
    """Hold ``folder`` (which must exist) for the ``with`` block; yields the lock file's path.

    Raises :class:`LockedError` when another holder has it. ``note`` receives the one-line
    notes (a stale lock taken over, a filesystem without locks); by default they go to stderr.
    """
    path = Path(folder) / name
    fd = _acquire(path, note)
    if fd is None:  # no locking on this filesystem: carry on, as without this module
        yield path
        return
    try:
        previous = _read_holder(fd)
        if previous is not None:
            _check_stale(path, previous, note)
        me = Holder(os.getpid(), socket.gethostname(), what)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me.__dict__) + "\n").encode(), 0)
    except BaseException:
        _release(path, fd, unlink=False)
        raise
    try:
        yield path
    finally:
        _release(path, fd, unlink=True)


def read_holder(folder: str | os.PathLike, name: str = LOCK_NAME) -> Holder | None:
    """Who the lock file in ``folder`` names (whether or not it still holds it); None without one."""
    try:
        fd = os.open(Path(folder) / name, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        return _read_holder(fd)
    finally:
        os.close(fd)


def _acquire(path: Path, note: Callable[[str], None]) -> int | None:
    """The locked descriptor of ``path``; None where the filesystem has no locks."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            by = holder.describe() if holder else "another process"
            raise LockedError(
                f"{path.parent}: in use by {by}; wait for it to finish or stop it (lock file {path})"
            ) from None
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            note(f"{path.parent}: the filesystem does not support locks; make sure no other process uses it")
            return None
        # A holder that was releasing unlinked the file between our open and our flock: that
        # file is no lock any more, the next holder makes a new one.
        if _is_file_of(path, fd):
            _held[fd] = os.getpid()
            return fd
        os.close(fd)


def _check_stale(path: Path, previous: Holder, note: Callable[[str], None]) -> None:
    """The lock file names a holder that no longer holds the flock: take over only from the dead."""
    if previous.host == socket.gethostname() and previous.pid == os.getpid():
        return  # an earlier hold of this very process that could not remove its file
    if previous.host == socket.gethostname() and not _pid_alive(previous.pid):
        note(f"took over the lock of {path.parent} from {previous.describe()}, which is no longer running")
        return
    where = "on another host" if previous.host != socket.gethostname() else "still running"
    raise LockedError(
        f"{path.parent}: the lock file {path} names {previous.describe()}, {where}; "
        "if that process is not using the folder, delete the lock file"
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _read_holder(fd: int) -> Holder | None:
    try:
        raw = json.loads(os.pread(fd, 4096, 0) or b"null")
        return Holder(int(raw["pid"]), str(raw["host"]), str(raw.get("what", "")))
    except (ValueError, TypeError, KeyError):  # empty (just created) or not ours
        return None


def _release(path: Path, fd: int, *, unlink: bool) -> None:
    if _held.get(fd) != os.getpid():  # closed at fork: this is a child, the parent holds the lock
        return
    del _held[fd]
    try:
        if unlink and _is_file_of(path, fd):
            # unlinked while still locked, so that no one locks the old file after we let go
            path.unlink()
    finally:
        os.close(fd)


def _is_file_of(path: Path, fd: int) -> bool:
    """Whether ``path`` is still the file open as ``fd`` (not deleted, not replaced by another)."""
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev)


__all__ = ["LOCK_NAME", "Holder", "LockedError", "hold", "read_holder"]
