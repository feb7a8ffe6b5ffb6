"""The errors a user can fix: the command line prints their message as one line (exit 2)."""

from __future__ import annotations


class FacevaeError(ValueError):
    """Something the user gave cannot be used; the message says which file or setting and why."""


class DatasetError(FacevaeError):
    """A dataset folder or file that cannot be used."""


class RunError(FacevaeError):
    """A run directory (or one of its files) that cannot be used as asked."""
