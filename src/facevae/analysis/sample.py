"""Samples from the prior, and for a conditional model samples with chosen attributes.

``sample(run, n=64, settings={"Smiling": 1}, temperature=0.8, seed=0)`` draws every latent unit from
the model's prior at temperature T (``model.prior_codes``, seeded) and decodes it (to the mean image). For a conditional model each sample also
needs a condition: it is an attribute row of a test image drawn at random (seeded), so that the
attribute combinations are realistic; ``settings`` then fixes the named attributes in every row.
Settings must name attributes of the data, and, for a conditional model, attributes of its
condition; an unconditional model takes no settings (edit a face with ``facevae edit`` to move
along an attribute's latent direction instead).

Writes ``RUN/analysis/sample[_Smiling1_Eyeglasses0].png`` (captioned with each sample's positive
condition attributes, rarest first) and the JSON of the same name, which lists the conditions used:

    {"n": 64, "temperature": 0.8, "seed": 0, "settings": {"Smiling": 1}, "condition_names": [...],
     "conditions": [[0, 1, ...], ...], "condition_rows": [dataset rows the conditions came from],
     "png": ..., "compare_png": ..., "json": ...}

With settings on a conditional model it also writes ``..._compare.png``: the first samples with
every set attribute at the opposite value above the same z and conditions with the settings, so
the effect of the settings is visible at a glance.
"""

from __future__ import annotations

import math
import os
import re

import numpy as np
import torch

from facevae.analysis.shared import (
    as_run,
    check_at_most,
    check_positive,
    decode_images,
    run_label,
    write_result,
)
from facevae.common.grids import attribute_caption, save_comparison_grid, save_labelled_grid
from facevae.common.settings import check_seed
from facevae.data.attributes import check_attribute_names
from facevae.training.rundir import Run

GRID_COLUMNS = 8
COMPARE_COLUMNS = 8
MAX_SAMPLES = 1024  # one sheet: 128 rows of 8; more would take minutes and gigabytes to draw


# --- attribute settings ("--set Smiling=1"), shared with edit -----------------------------------------
def parse_settings(items: list[str] | None) -> dict[str, int]:
    """['Smiling=1', 'Bangs=0'] → {'Smiling': 1, 'Bangs': 0}; a one-line ValueError for anything else."""
    settings: dict[str, int] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip().lower()
        if not sep or not name:
            raise ValueError(f"--set {item!r}: expected NAME=0 or NAME=1, e.g. --set Smiling=1")
        if value in ("1", "true", "yes"):
            number = 1
        elif value in ("0", "-1", "false", "no"):  # -1 is CelebA's own "absent"
            number = 0
        else:
            raise ValueError(f"--set {item!r}: the value must be 0 or 1, e.g. --set {name}=1")
        if name in settings:
            raise ValueError(f"--set {name} is given twice")
        settings[name] = number
    return settings


def check_settings(run: Run, settings: dict[str, int]) -> dict[str, int]:
    """Settings whose names are attributes of the run's data and values 0/1 (ValueError otherwise)."""
    settings = {str(k): int(v) for k, v in (settings or {}).items()}
    check_attribute_names(list(settings), run.data.attribute_names)
    bad = [f"{k}={v}" for k, v in settings.items() if v not in (0, 1)]
    if bad:
        raise ValueError(f"attribute values must be 0 or 1, got {', '.join(bad)}")
    return settings


def settings_slug(settings: dict[str, int]) -> str:
    """'Smiling1_Eyeglasses0' for file names ('' for none)."""
    return "_".join(re.sub(r"[^A-Za-z0-9]+", "", k) + str(v) for k, v in settings.items())


def settings_text(settings: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())


# --- sampling ---------------------------------------------------------------------------------------------
@torch.no_grad()
def sample_images(run: Run | str | os.PathLike, n: int = 64, settings: dict[str, int] | None = None, temperature: float = 1.0,
                  seed: int = 0) -> dict:
    """Decoded prior samples without writing anything.

    Returns ``images`` (n, C, H, W) in [0, 1], ``z`` (n, D), ``conditions`` (n, A) float or None,
    ``drawn_conditions`` (the same before the settings were applied), ``condition_rows`` (dataset
    rows the conditions were drawn from) or None, and the checked ``settings``. The same seed gives
    the same z and condition rows whatever the settings, so two calls that differ only in settings
    show the same faces with different attributes.
    """
    run = as_run(run)
    check_positive("n", n)
    check_at_most("n", n, MAX_SAMPLES, "the samples of one sheet")
    if not 0 < temperature < math.inf:  # an infinite one decodes z = inf·ε into NaN images
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    seed = check_seed(seed)
    settings = check_settings(run, settings or {})
    model = run.model
    if settings and not run.conditional:
        raise ValueError(f"{run.root}: this model is unconditional, so samples cannot be given attributes "
                         f"({settings_text(settings)}); use `facevae edit` to move a face along an "
                         "attribute's latent direction")
    if run.conditional:
        missing = [k for k in settings if k not in run.condition_names]
        if missing:
            raise ValueError(f"attribute(s) {', '.join(missing)} are not part of this model's condition "
                             f"({', '.join(run.condition_names)}); a sample can only fix those")
    z = model.prior_codes(n, temperature, torch.Generator().manual_seed(int(seed)))
    conditions = drawn = rows = None
    if run.conditional:
        pool = run.data.indices("test")
        if len(pool) == 0:
            pool = run.data.indices("train")
        if len(pool) == 0:
            raise ValueError(f"{run.root}: no test or train images to draw conditions from")
        rng = np.random.default_rng(int(seed))
        rows = np.sort(rng.choice(pool, size=n, replace=n > len(pool)))
        full = torch.from_numpy(run.data.packed.attributes[rows][:, run.data.attribute_idx].astype(np.float32))
        drawn = run.condition_of(full.clone())
        for name, value in settings.items():
            full[:, run.data.attribute_names.index(name)] = float(value)
        conditions = run.condition_of(full)
    with model.sampling(temperature):
        images = decode_images(run, z, None if conditions is None else conditions.to(z.device)).cpu()
    return {"images": images, "z": z.cpu(), "conditions": conditions, "drawn_conditions": drawn,
            "condition_rows": rows, "settings": settings}


def sample(run: Run | str | os.PathLike, n: int = 64, settings: dict[str, int] | None = None, temperature: float = 1.0,
           seed: int = 0, ncol: int = GRID_COLUMNS) -> dict:
    """Write the sample sheet (and, with settings, the comparison) and its JSON; return the JSON dict."""
    run = as_run(run)
    drawn = sample_images(run, n, settings, temperature, seed)
    settings = drawn["settings"]
    out = run.analysis_dir
    stem = "sample" + (f"_{settings_slug(settings)}" if settings else "")
    png, json_path = out / f"{stem}.png", out / f"{stem}.json"
    what = f"{n} samples, z ~ N(0, {temperature:g}²·I), seed {seed}"
    labels = None
    if run.conditional:
        names = run.condition_names
        train = run.data.part_attributes("train")
        rates = train.mean(axis=0)[run.config.model.condition_index(run.data.attribute_names)] if len(train) else None
        labels = [attribute_caption(row.numpy() > 0.5, names, rates) for row in drawn["conditions"]]
        fixed = f"; fixed: {settings_text(settings)}" if settings else ""
        title = (f"{run_label(run)}: {what}; conditions = attribute rows of random test images{fixed} "
                 "— captions: positive condition attributes, rarest first")
    else:
        title = f"{run_label(run)}: {what} (unconditional prior samples)"
    save_labelled_grid(drawn["images"], png, ncol=min(ncol, n), labels=labels, title=title)

    result = {"run": str(run.root), "n": n, "temperature": float(temperature), "seed": int(seed),
              "settings": settings, "conditional": run.conditional,
              "condition_names": run.condition_names if run.conditional else [],
              "conditions": None if drawn["conditions"] is None else drawn["conditions"].round().int().tolist(),
              "condition_rows": None if drawn["condition_rows"] is None else [int(r) for r in drawn["condition_rows"]],
              "png": str(png), "compare_png": None, "json": str(json_path)}
    if settings:
        k = min(n, COMPARE_COLUMNS)
        flipped = {name: 1 - value for name, value in settings.items()}
        opposite = sample_images(run, n, flipped, temperature, seed)  # same seed: the same z and rows
        compare = out / f"{stem}_compare.png"
        save_comparison_grid(
            [opposite["images"][:k], drawn["images"][:k]], [settings_text(flipped), settings_text(settings)], compare,
            title=f"{run_label(run)}: the same z (seed {seed}, temperature {temperature:g}) and test-row conditions, "
                  f"decoded with {settings_text(flipped)} (top) and {settings_text(settings)} (bottom)",
            col_labels=[f"sample {i}" for i in range(k)])
        result["compare_png"] = str(compare)
    write_result(json_path, result)
    return result


TEMPERATURES = (0.5, 0.7, 0.85, 1.0)


def temperature_sheet(run: Run | str | os.PathLike, temperatures=TEMPERATURES, n: int = 8, seed: int = 0) -> dict:
    """One row of samples per temperature, the same draws scaled (and the same conditions), so that what the
    temperature trades (detail and variety against plausibility) is seen at a glance. Writes
    RUN/analysis/sample_temperatures.png and .json."""
    run = as_run(run)
    check_positive("n", n)
    temperatures = [float(t) for t in temperatures]
    if not temperatures or min(temperatures) <= 0:
        raise ValueError(f"temperatures must be > 0, got {temperatures}")
    rows = [sample_images(run, n, temperature=t, seed=seed)["images"] for t in temperatures]
    out = run.analysis_dir
    png, json_path = out / "sample_temperatures.png", out / "sample_temperatures.json"
    readjusted = "; BatchNorm statistics re-estimated at each temperature" if run.config.model.model == "hvae" else ""
    save_comparison_grid(rows, [f"T = {t:g}" for t in temperatures], png,
                         title=f"{run_label(run)}: prior samples at several temperatures (the same draws, seed "
                               f"{seed}, scaled by T){readjusted}",
                         col_labels=[f"sample {i}" for i in range(n)])
    result = {"run": str(run.root), "n": n, "seed": seed, "temperatures": temperatures, "png": str(png),
              "json": str(json_path)}
    write_result(json_path, result)
    return result
