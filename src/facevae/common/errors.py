"""The errors a user can fix: the command line prints their message as one line (exit 2)."""

from __future__ import annotations


class FacevaeError(ValueError):
    """Something the user gave cannot be used; the message says which file or setting and why."""


class DatasetError(FacevaeError):
    """A dataset folder or file that cannot be used."""


class RunError(FacevaeError):
    """A run directory (or one of its files) that cannot be used as asked."""


class FileWriteError(FacevaeError, OSError):
    """A file that could not be written (full disk, read-only filesystem, no permission).

    An OSError too, with the errno of the cause, so that code that handles OSError still does; the
    message names the file that was being written, never its temporary name. ``problem``: the message
    without its suggested fix, for a caller that knows a better one.
    """

    def __init__(self, message: str, errno: int | None = None, filename: str | None = None,
                 problem: str | None = None):
        super().__init__(message)
        self.errno, self.filename, self.problem = errno, filename, problem or message

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
