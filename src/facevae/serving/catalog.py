"""The runs one server offers: found under the folder it was given, named by ids of its own.

A client only ever names a run by one of these ids; the path behind it never leaves the server's
own list, so nothing a client sends becomes a file path.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from facevae.common.errors import RunError
from facevae.training.config import RunConfig
from facevae.training.rundir import Run, open_run

SEARCH_DEPTH = 3  # runs/demo/cvae, runs/sweep/trial-0001: a runs folder holds runs a level or two down
MAX_OPEN_RUNS = 8  # a sweep folder may hold hundreds of trials; only the ones in use stay in memory


@dataclass(frozen=True)
class RunEntry:
    id: str
    path: Path
    relative: str  # shown in the menu
    model: str
    image_size: int


RUN_FILES = ("config.yaml", "model.safetensors", "model.json")  # what a finished run holds


def _finished_runs(root: Path, depth: int, skipped: list[str]) -> list[Path]:
    missing = [name for name in RUN_FILES if not (root / name).is_file()]
    if not missing:
        return [root]
    if len(missing) < len(RUN_FILES):  # a run in training, or a damaged one: left out, but never in silence
        why = "not finished: still training, or stopped before its end" if "config.yaml" not in missing else \
            "not a whole run (copied in part?)"
        skipped.append(f"{root}: no {', '.join(missing)}: {why}")
        return []
    if depth == 0:
        return []
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []
    return [run for child in children for run in _finished_runs(child, depth - 1, skipped)]


def _slug(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "run"
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    return slug


def find_runs(root: str | Path) -> tuple[list[RunEntry], list[str]]:
    """The finished VAE runs at or under ``root`` (in path order) and, for each folder skipped, why."""
    root = Path(root)
    if not root.is_dir():
        raise RunError(f"{root}: no such folder")
    entries, skipped, taken = [], [], set()
    for path in _finished_runs(root, SEARCH_DEPTH, skipped):
        try:
            config = RunConfig.load(path / "config.yaml")
        except (RunError, OSError, ValueError) as exc:  # a classifier's run, or a damaged config
            skipped.append(f"{path}: {exc}")
            continue
        relative = path.name if path == root else path.relative_to(root).as_posix()
        run_id = _slug(relative, taken)
        taken.add(run_id)
        entries.append(RunEntry(run_id, path, relative, config.model.model, config.model.image_size))
    if not entries:
        raise RunError(f"{root}: no finished run here or in the folders below it (a run has config.yaml and "
                       "model.safetensors); train one with `facevae train`" +
                       (f"; skipped {'; '.join(skipped)}" if skipped else ""))
    return entries, skipped


class RunCatalog:
    """The runs by id, each opened on first use and kept while it is among the MAX_OPEN_RUNS used last."""

    def __init__(self, entries: list[RunEntry], make_explorer):
        self.entries = {e.id: e for e in entries}
        self._make_explorer = make_explorer
        self._open: OrderedDict[str, object] = OrderedDict()
        self._lock, self._opening = threading.Lock(), threading.Lock()

    def ids(self) -> list[str]:
        return list(self.entries)

    def explorer(self, run_id: str):
        """The explorer of run ``run_id`` (KeyError for an id not in the list; RunError if it cannot be opened)."""
        entry = self.entries[run_id]
        with self._lock:
            if run_id in self._open:
                self._open.move_to_end(run_id)
                return self._open[run_id]
        with self._opening:  # the page's first requests come together: each would load the run again
            with self._lock:
                if run_id in self._open:
                    return self._open[run_id]
            explorer = self._make_explorer(entry, open_run_checked(entry.path))
            with self._lock:
                self._open[run_id] = explorer
                while len(self._open) > MAX_OPEN_RUNS:
                    self._open.popitem(last=False)
        return explorer


def open_run_checked(path: Path) -> Run:
    """The run with its data; a RunError saying what is missing (the data folder of a copied run, say)."""
    try:
        return open_run(path)
    except (OSError, ValueError) as exc:
        raise RunError(f"{path.name}: cannot be opened: {exc}") from None
