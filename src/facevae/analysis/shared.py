"""Small helpers every analysis command shares: opening a run, naming it, writing results, decoding."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from facevae.common.files import write_json_atomic
from facevae.common.settings import flag_name
from facevae.training.rundir import Run, open_run

DECODE_BATCH = 256
MAX_STEPS = 64  # strengths or values across one sheet, decoded together


def as_run(run: Run | str | os.PathLike) -> Run:
    """A Run as it is, or the run directory opened (so callers may pass either)."""
    return run if isinstance(run, Run) else open_run(run)


def run_label(run: Run) -> str:
    """'cvae run "name" (latent 64)': how figure titles name the run."""
    m = run.config.model
    kind = f"{m.model}, β={m.effective_beta:g}" if m.effective_beta != 1 else m.model
    return f"{run.root.name} ({kind}, latent {m.latent_units}, {m.image_size}x{m.image_size})"


def image_id(run: Run, row: int) -> str | None:
    ids = run.data.packed.image_ids
    return str(ids[row]) if ids is not None and 0 <= row < len(ids) else None


def write_result(path: Path, result: dict) -> Path:
    """JSON next to the figures (atomically), with the paths as strings."""
    write_json_atomic(path, result)
    return path


@torch.no_grad()
def decode_images(run: Run, z: torch.Tensor, c: torch.Tensor | None = None, batch_size: int = DECODE_BATCH) -> torch.Tensor:
    """Mean images (n, C, H, W) of ``z`` (and ``c``) decoded a batch at a time, so memory stays bounded."""
    parts = [run.model.decode(z[i:i + batch_size], None if c is None else c[i:i + batch_size]).image()
             for i in range(0, len(z), batch_size)]
    return torch.cat(parts) if parts else torch.zeros((0, 3, run.config.model.image_size, run.config.model.image_size))


def check_positive(name: str, value, minimum: int = 1) -> None:
    if value < minimum:
        raise ValueError(f"{flag_name(name)} must be at least {minimum}, got {value}")


def check_at_most(name: str, value, maximum: int, why: str) -> None:
    """A one-line error for a count that would only fill the memory: every image of a sheet is decoded at once."""
    if value > maximum:
        raise ValueError(f"{flag_name(name)} must be at most {maximum:,} ({why}), got {value:,}")


def group_stem(run: Run, stem: str, group: str | None) -> str:
    """File stem of an analysis of a latent group: ``stem`` for the model's top group, ``stem_GROUP`` otherwise."""
    chosen = run.group(group).name
    return stem if chosen == run.model.latent_groups[0].name else f"{stem}_{chosen}"
