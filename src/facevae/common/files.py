"""Files written through a temporary file and a rename, so a crash never leaves half a file.

A write that fails for a reason the user can fix (a full disk, a read-only filesystem, no
permission) raises :class:`FileWriteError` naming the file, and leaves neither half a file nor
its temporary behind. A temporary is named ``.NAME.PID.tmp`` after the process that writes it, so
that one left by a killed process can be told from one being written (see
:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from facevae.common.errors import FacevaeError, FileWriteError

# What each errno a user can do something about means, as the message says it.
WRITE_FAILURES = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the filesystem is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}
_TEMPORARY = re.compile(r"\..+\.(\d+)\.tmp")


def temporary_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_failure(path: str | os.PathLike, exc: OSError, fix: str = "") -> FileWriteError | None:
    """The one-line error of a failed write of ``path``; None when ``exc`` is no failure of that kind."""
    what = WRITE_FAILURES.get(exc.errno)
    if what is None:
        return None
    path = Path(path)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        what += f" ({_free_space(path)} free)"
        fix = fix or "free some space and run the command again"
    problem = f"{path}: could not be written: {what}"
    return FileWriteError(problem + (f"; {fix}" if fix else ""), exc.errno, str(path), problem)


def _free_space(path: Path) -> str:
    folder = next((p for p in (path, *path.parents) if p.is_dir()), Path("."))
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "unknown"
    return rounded_bytes(free)


def rounded_bytes(n: int) -> str:
    """``1.2 MiB``: a size to read."""
    if n < 1024:
        return f"{n} bytes"
    exponent = min((n.bit_length() - 1) // 10, 4)
    return f"{n / 1024**exponent:.1f} {('KiB', 'MiB', 'GiB', 'TiB')[exponent - 1]}"


@contextmanager
def writing(path: str | os.PathLike, fix: str = "") -> Iterator[None]:
    """A write of ``path`` (or a folder made for it) whose fixable failures become a FileWriteError."""
    try:
        yield
    except FileWriteError:
        raise
    except OSError as exc:
        error = write_failure(path, exc, fix)
        if error is None:
            raise
        raise error from None


@contextmanager
def atomic_path(path: str | os.PathLike, fix: str = "") -> Iterator[Path]:
    """Yields the temporary to write; renamed to ``path`` when the block ends, removed when it fails."""
    path = Path(path)
    if path.is_dir():  # the rename at the end would fail with the temporary's name in the message
        raise FileWriteError(f"{path}: is a folder, so no file can be written in its place; give a file's name "
                             f"({path}/NAME)", errno.EISDIR, str(path))
    tmp = temporary_path(path)
    with writing(path, fix):
        try:
            yield tmp
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def check_writable(path: str | os.PathLike, fix: str = "") -> None:
    """A FileWriteError now, before the work that would end in writing ``path``, if it cannot be written."""
    path = Path(path)
    with writing(path, fix):
        if path.exists():
            open(path, "ab").close()  # opened to append, nothing written: the file is left as it is
        else:
            tmp = temporary_path(path)
            open(tmp, "xb").close()
            tmp.unlink()


def file_in_the_way(folder: str | os.PathLike) -> Path | None:
    """A file at ``folder`` or at one of its parents, which keeps the folder from being made."""
    folder = Path(folder)
    return next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)


def make_dir(path: str | os.PathLike, fix: str = "") -> Path:
    """The folder ``path``, made with its parents; a FileWriteError naming a file that stands in the way."""
    path = Path(path)
    blocking = file_in_the_way(path)
    if blocking is not None:  # mkdir would say "File exists" or "Not a directory", naming neither
        where = "is a file" if blocking == path else f"{blocking} is a file"
        problem = f"{path}: {where}, so no folder can be made there"
        # not the caller's fix: that is for a folder that cannot be written (read-only, full), not one in the way
        raise FileWriteError(problem + "; move the file away, or choose another place", errno.ENOTDIR, str(path),
                             problem)
    with writing(path, fix):
        path.mkdir(parents=True, exist_ok=True)
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes, fix: str = "") -> Path:
    with atomic_path(path, fix) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, fix: str = "") -> Path:
    with atomic_path(path, fix) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj, fix: str = "") -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, default=_json_default) + "\n", fix)


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: np.save would add .npy to a name
        np.save(f, array)
    return Path(path)


def read_json(path: str | os.PathLike, error: type[FacevaeError] = FacevaeError, fix: str = "",
              expect: type = dict):
    """The JSON value in ``path``, which must be an ``expect``; ``error`` names the file and what is wrong."""
    path = Path(path)
    suffix = f"; {fix}" if fix else ""
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise error(f"{path}: empty ({path.stat().st_size} bytes): a write that never finished{suffix}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        cut = " (cut short)" if exc.pos >= len(text.rstrip()) else ""
        raise error(f"{path}: not valid JSON{cut}: {exc.msg} at line {exc.lineno} column {exc.colno}{suffix}") from None
    if not isinstance(value, expect):
        raise error(f"{path}: holds {_json_kind(value)}, not {_json_kind(expect())}{suffix}")
    return value


def _json_kind(value) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return next((name for kind, name in kinds.items() if isinstance(value, kind)), "a number")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the ``.NAME.PID.tmp`` files in ``folder`` whose writer no longer runs; returns them."""
    folder, removed = Path(folder), []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        found = _TEMPORARY.fullmatch(path.name)
        if found and path.is_file() and not _pid_alive(int(found.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
