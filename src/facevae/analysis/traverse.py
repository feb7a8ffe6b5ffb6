"""Latent traversals: move one latent dimension across a range, everything else held, and look.

``traverse(run, dims="all", faces=5, value_range=(-3, 3), steps=9)``:

* base faces: the posterior means z of the first ``faces`` test images (from ``offset``), each
  decoded with its own attributes as the condition for a conditional model;
* for each dimension d, ``z_d`` is *set* to each of ``steps`` values spaced evenly over
  ``value_range`` (prior standard deviations; the prior is N(0, 1)), the other dimensions keep
  the face's posterior mean; one sheet per dimension, rows = faces, columns = values;
* an overview: one row per latent dimension (the first face), sorted by KL (most active first),
  every dimension of the model whatever ``dims`` says;
* ``dims="all"`` means every *active* dimension (as ``dims.json`` says, or else by the criterion
  it uses, Burda et al. 2016: the variance over the test split of the dimension's posterior mean
  exceeds ACTIVE_VARIANCE); when none is active, every dimension (and the JSON says so). A list of
  dimensions gives exactly those sheets.

Dimensions are labelled with what ``facevae dims`` found when ``RUN/analysis/dims.json`` exists
(``{"dims": [{"dim": 0, "kl": 1.2, "active": true, "name": "rotation", "score": 0.71, ...}]}``):
"dim 12 · rotation (0.71)"; without it, "dim 12". KL and activity come from that file where it gives
them, otherwise they are computed here from the test split's posteriors.

Writes ``RUN/analysis/traverse/dim_012.png`` per dimension, ``RUN/analysis/traverse_overview.png``
and ``RUN/analysis/traverse.json``::

    {"dims": [{"dim": 12, "kl": 1.2, "active": true, "name": "rotation", "score": 0.71,
               "label": "dim 12 · rotation (0.71)", "png": ".../traverse/dim_012.png"}, ...],
     "overview": {"png": ..., "order": [dims by KL]}, "values": [...], "faces": [{"position", "row"}],
     "names_from": ".../dims.json" | null, "all_inactive": false, ...}
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from facevae.analysis.reconstruct import as_run, check_positive, decode_images, run_label, write_result
from facevae.common.grids import save_comparison_grid
from facevae.training.rundir import Run

ACTIVE_VARIANCE = 0.01  # Burda et al. 2016: Var_x(E[z_d|x]) below this, dimension d carries no information
OVERVIEW_CELL_PIXELS = 64  # cells of the overview when it has many rows (a 64-row overview stays readable)
OVERVIEW_BIG_ROWS = 16


def parse_dims(text: str | list[int] | None, latent_dim: int) -> list[int] | None:
    """'all' (or None) → None; '2,9,12' / '0-3' / [2, 9] → checked, de-duplicated list, in the given order."""
    if text is None or (isinstance(text, str) and text.strip().lower() == "all"):
        return None
    if isinstance(text, str):
        dims: list[int] = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            lo, sep, hi = part.partition("-") if not part.startswith("-") else (part, "", "")
            try:
                dims += list(range(int(lo), int(hi) + 1)) if sep else [int(part)]
            except ValueError:
                raise ValueError(f"--dims {text!r}: expected 'all' or dimension numbers like 2,9,12 or 0-7") from None
    else:
        dims = [int(d) for d in text]
    if not dims:
        raise ValueError("no dimension given; use 'all' or numbers like 2,9,12")
    bad = [d for d in dims if not 0 <= d < latent_dim]
    if bad:
        raise ValueError(f"dimension {', '.join(map(str, bad))} out of range: this model's latent has "
                         f"{latent_dim} dimensions (0 to {latent_dim - 1})")
    return list(dict.fromkeys(dims))


def load_dims_json(run: Run) -> tuple[dict[int, dict], Path | None]:
    """What ``facevae dims`` wrote, by dimension ({} and None when there is no dims.json)."""
    path = run.root / "analysis" / "dims.json"
    if not path.is_file():
        return {}, None
    try:
        raw = json.loads(path.read_text())
        entries = raw["dims"] if isinstance(raw, dict) else raw
        table = {int(e["dim"]): e for e in entries}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: cannot read the dimension names ({type(exc).__name__}: {exc}); "
                         "run `facevae dims` again or delete it") from None
    return table, path


def dimension_label(dim: int, name: str | None = None, score: float | None = None) -> str:
    """'dim 12 · rotation (0.71)', 'dim 12 · rotation', or 'dim 12'."""
    label = f"dim {dim}"
    if name:
        label += f" · {name}"
        if score is not None and math.isfinite(score):
            label += f" ({score:.2f})"
    return label


def kl_per_dim(encoded: dict[str, np.ndarray]) -> np.ndarray:
    """Mean KL(q(z_d|x) || N(0, 1)) over the encoded images, per dimension (nats)."""
    mu, logvar = encoded["mu"].astype(np.float64), encoded["logvar"].astype(np.float64)
    return (0.5 * (mu**2 + np.exp(logvar) - logvar - 1)).mean(0)


def dimension_table(run: Run) -> tuple[list[dict], Path | None]:
    """Every latent dimension with kl, active, name, score and label (dims.json first, computed otherwise)."""
    named, source = load_dims_json(run)
    D = run.model.latent_dim
    complete = all(isinstance(named.get(d, {}).get("kl"), (int, float)) and isinstance(named.get(d, {}).get("active"), bool)
                   for d in range(D))
    encoded = None if complete else run.encode_test()
    kl = None if complete else kl_per_dim(encoded)
    variance = None if complete else encoded["mu"].astype(np.float64).var(0)
    table = []
    for d in range(D):
        entry = named.get(d, {})
        k = float(entry["kl"]) if isinstance(entry.get("kl"), (int, float)) else float(kl[d])
        active = bool(entry["active"]) if isinstance(entry.get("active"), bool) else bool(variance[d] > ACTIVE_VARIANCE)
        name = entry.get("name") or None
        score = entry.get("score")
        score = float(score) if isinstance(score, (int, float)) else None
        table.append({"dim": d, "kl": k, "active": active, "name": name, "score": score,
                      "label": dimension_label(d, name, score)})
    return table, source


@torch.no_grad()
def traversal_images(run: Run, z: torch.Tensor, c: torch.Tensor | None, dim: int, values: torch.Tensor) -> torch.Tensor:
    """(faces, steps, C, H, W): each base z with z[dim] set to each value, decoded with its condition."""
    faces, steps = z.shape[0], len(values)
    zz = z[:, None, :].repeat(1, steps, 1)
    zz[:, :, dim] = values[None, :]
    cc = None if c is None else c[:, None, :].expand(-1, steps, -1).reshape(faces * steps, -1)
    images = decode_images(run, zz.reshape(faces * steps, -1), cc)
    return images.view(faces, steps, *images.shape[1:])


def _value_text(v: float) -> str:
    return f"{v:+.2f}".rstrip("0").rstrip(".") if v else "0"


def traverse(run: Run | str | os.PathLike, dims: str | list[int] | None = "all", faces: int = 5,
             value_range: tuple[float, float] = (-3.0, 3.0), steps: int = 9, offset: int = 0) -> dict:
    """Write one sheet per dimension, the overview, and traverse.json; return the JSON dict."""
    run = as_run(run)
    D = run.model.latent_dim
    requested = parse_dims(dims, D)
    check_positive("faces", faces)
    check_positive("offset", offset, 0)
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    lo, hi = (float(v) for v in value_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"--range needs two finite numbers LOW < HIGH, got {lo:g} {hi:g}")
    total = len(run.data.indices("test"))
    if offset >= total:
        raise ValueError(f"offset {offset} is past the end of the test split ({total} images)")

    table, source = dimension_table(run)
    all_inactive = False
    if requested is None:
        chosen = [e["dim"] for e in sorted(table, key=lambda e: -e["kl"]) if e["active"]]
        if not chosen:
            all_inactive = True
            chosen = [e["dim"] for e in sorted(table, key=lambda e: -e["kl"])]
    else:
        chosen = requested

    x, y, rows = run.test_batch(faces, offset)
    c = run.condition_of(y)
    with torch.no_grad():
        z = run.model.encode(x, c).mean
    values = torch.linspace(lo, hi, steps)
    col_text = [_value_text(float(v)) for v in values]
    out = run.analysis_dir
    sheets = out / "traverse"
    sheets.mkdir(exist_ok=True)
    label = run_label(run)
    cond = "; decoded with each face's own attributes as the condition" if run.conditional else ""
    face_text = [f"face {i + 1} · test {offset + i}" for i in range(len(x))]

    entries = []
    for d in chosen:
        info = table[d]
        images = traversal_images(run, z, c, d, values)
        png = sheets / f"dim_{d:03d}.png"
        state = "active" if info["active"] else "inactive"
        save_comparison_grid(
            list(images), [f"{t}\nown z{d} = {float(z[i, d]):+.2f}" for i, t in enumerate(face_text)], png,
            title=f"{label}: {info['label']} — KL {info['kl']:.3f} nats ({state}). Columns: z{d} set to "
                  f"each value from {lo:g} to {hi:g} (prior s.d.); rows: test faces, other dimensions at "
                  f"their posterior mean{cond}",
            col_labels=[f"z{d} = {t}" for t in col_text])
        entries.append({**info, "png": str(png)})

    order = [e["dim"] for e in sorted(table, key=lambda e: -e["kl"])]
    overview_rows = [traversal_images(run, z[:1], None if c is None else c[:1], d, values)[0] for d in order]
    size = run.config.model.image_size
    scale = max(1, math.ceil(OVERVIEW_CELL_PIXELS / size)) if D > OVERVIEW_BIG_ROWS else None
    overview = out / "traverse_overview.png"
    row_labels = [f"{table[d]['label']}\nKL {table[d]['kl']:.2f}" + ("" if table[d]["active"] else " (inactive)")
                  for d in order]
    named = f"; names from {source.name}" if source else "; unnamed: no analysis/dims.json yet"
    save_comparison_grid(
        overview_rows, row_labels, overview,
        title=f"{label}: every latent dimension traversed on test face {offset} (one row each, most active "
              f"first by KL to the prior{named}); columns: z_d set from {lo:g} to {hi:g}{cond}",
        col_labels=[f"z_d = {t}" for t in col_text], scale=scale)

    result = {"run": str(run.root), "latent_dim": D, "requested": "all" if requested is None else requested,
              "all_inactive": all_inactive,
              "active_criterion": f"dims.json 'active', else Var(E[z_d|x]) over the test split > {ACTIVE_VARIANCE}",
              "values": [float(v) for v in values], "range": [lo, hi], "steps": steps,
              "faces": [{"position": offset + i, "row": int(r)} for i, r in enumerate(rows)],
              "names_from": str(source) if source else None, "dims": entries,
              "overview": {"png": str(overview), "order": order,
                           "dims": [{k: table[d][k] for k in ("dim", "kl", "active", "name", "score", "label")}
                                    for d in order]},
              "json": str(out / "traverse.json")}
    write_result(out / "traverse.json", result)
    return result
