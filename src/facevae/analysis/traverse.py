"""Latent traversals: move one latent dimension across a range, everything else held, and look.

``traverse(run, dims="all", faces=5, value_range=(-3, 3), steps=9, group=None)``:

* base faces: the posterior means z of the first ``faces`` test images (from ``offset``), each
  decoded with its own attributes as the condition for a conditional model;
* for each dimension d of the latent ``group`` (default: the model's top group, the only one of a
  flat model), ``z_d`` is *set* to each of ``steps`` values spaced evenly over ``value_range``
  (prior standard deviations: the codes are in the prior's standardised coordinates, see
  :mod:`facevae.models.latents`), every other unit keeps the face's posterior mean; one sheet per
  dimension, rows = faces, columns = values;
* an overview: one row per latent dimension (the first face), sorted by KL (most active first),
  every dimension of the group whatever ``dims`` says (the first OVERVIEW_MAX_ROWS of a bigger one);
* ``dims="all"`` means every *active* dimension (as ``dims.json`` says, or else by the criterion
  it uses, Burda et al. 2016: the variance over the test split of the dimension's posterior mean
  exceeds VARIANCE_THRESHOLD of facevae.analysis.dims); when none is active, every dimension (and the JSON says so). A list of
  dimensions gives exactly those sheets. Another group than the top one writes its files with the
  group's name added (``traverse_GROUP.json``, ``traverse_GROUP/``).

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

import torch

from facevae.analysis.dims import VARIANCE_THRESHOLD, dims_path
from facevae.analysis.shared import (
    MAX_STEPS,
    as_run,
    check_at_most,
    check_positive,
    decode_images,
    group_stem,
    run_label,
    write_result,
)
from facevae.common.grids import save_comparison_grid
from facevae.training.rundir import Run

OVERVIEW_CELL_PIXELS = 64  # cells of the overview when it has many rows (a 64-row overview stays readable)
OVERVIEW_BIG_ROWS = 16
OVERVIEW_MAX_ROWS = 64


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


def load_dims_json(run: Run, group: str | None = None) -> tuple[dict[int, dict], Path | None]:
    """What ``facevae dims`` wrote for ``group``, by dimension ({} and None when there is no such file)."""
    path = dims_path(run, group)
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


def dimension_labels(run: Run, group: str | None = None) -> tuple[list[dict], Path | None]:
    """Every dimension of the group with kl, active, name, score and label (dims JSON first, computed otherwise)."""
    named, source = load_dims_json(run, group)
    size = run.group(group).size
    complete = all(isinstance(named.get(d, {}).get("kl"), (int, float)) and isinstance(named.get(d, {}).get("active"), bool)
                   for d in range(size))
    encoded = None if complete else run.encode("test")
    kl = None if complete else encoded.kl(run.group(group).name)
    variance = None if complete else encoded.codes(run.group(group).name).astype("float64").var(0)
    table = []
    for d in range(size):
        entry = named.get(d, {})
        k = float(entry["kl"]) if isinstance(entry.get("kl"), (int, float)) else float(kl[d])
        active = bool(entry["active"]) if isinstance(entry.get("active"), bool) else bool(variance[d] > VARIANCE_THRESHOLD)
        name = entry.get("name") or None
        score = entry.get("score")
        score = float(score) if isinstance(score, (int, float)) else None
        table.append({"dim": d, "kl": k, "active": active, "name": name, "score": score,
                      "label": dimension_label(d, name, score)})
    return table, source


@torch.no_grad()
def traversal_images(run: Run, codes: torch.Tensor, c: torch.Tensor | None, unit: int, values: torch.Tensor) -> torch.Tensor:
    """(faces, steps, C, H, W): each face's codes (every unit) with ``unit`` set to each value, decoded."""
    faces, steps = codes.shape[0], len(values)
    zz = codes[:, None, :].repeat(1, steps, 1)
    zz[:, :, unit] = values[None, :]
    cc = None if c is None else c[:, None, :].expand(-1, steps, -1).reshape(faces * steps, -1)
    images = decode_images(run, zz.reshape(faces * steps, -1), cc)
    return images.view(faces, steps, *images.shape[1:])


def _value_text(v: float) -> str:
    return f"{v:+.2f}".rstrip("0").rstrip(".") if v else "0"


def _checked_range(value_range, steps: int) -> torch.Tensor:
    if steps < 2:
        raise ValueError(f"--steps must be at least 2, got {steps}")
    check_at_most("steps", steps, MAX_STEPS, "the columns of one sheet")
    lo, hi = (float(v) for v in value_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"--range needs two finite numbers LOW < HIGH, got {lo:g} {hi:g}")
    return torch.linspace(lo, hi, steps)


def _chosen_dims(table: list[dict], requested: list[int] | None) -> tuple[list[int], bool]:
    """The dimensions to draw sheets of, and whether 'all' found none active (then every one)."""
    if requested is not None:
        return requested, False
    by_kl = [e["dim"] for e in sorted(table, key=lambda e: -e["kl"])]
    active = [d for d in by_kl if table[d]["active"]]
    return (active, False) if active else (by_kl, True)


class _Sheets:
    """The figures of one traversal: faces, their codes, the values, and where the sheets go."""

    def __init__(self, run: Run, group: str | None, faces: int, offset: int, values: torch.Tensor):
        self.run, self.values, self.offset = run, values, offset
        self.group = run.group(group)
        self.x, y, self.rows = run.test_batch(faces, offset)
        self.c = run.condition_of(y)
        with torch.no_grad():
            self.codes = run.model.encode(self.x, self.c).codes()
        self.stem = group_stem(run, "traverse", group)
        self.label = run_label(run) + ("" if self.stem == "traverse" else f", group {self.group.name}")
        self.cond = "; decoded with each face's own attributes as the condition" if run.conditional else ""
        self.col_text = [_value_text(float(v)) for v in values]
        self.range = f"from {float(values[0]):g} to {float(values[-1]):g}"

    def sheet(self, info: dict, out: Path) -> Path:
        d, unit = info["dim"], self.group.offset + info["dim"]
        images = traversal_images(self.run, self.codes, self.c, unit, self.values)
        state = "active" if info["active"] else "inactive"
        faces = [f"face {i + 1} · test {self.offset + i}\nown z{d} = {float(self.codes[i, unit]):+.2f}"
                 for i in range(len(self.x))]
        save_comparison_grid(
            list(images), faces, out,
            title=f"{self.label}: {info['label']} — KL {info['kl']:.3f} nats ({state}). Columns: z{d} set to "
                  f"each value {self.range} (prior s.d.); rows: test faces, other dimensions at "
                  f"their posterior mean{self.cond}",
            col_labels=[f"z{d} = {t}" for t in self.col_text])
        return out

    def overview(self, table: list[dict], source: Path | None, out: Path) -> list[int]:
        order = [e["dim"] for e in sorted(table, key=lambda e: -e["kl"])][:OVERVIEW_MAX_ROWS]
        c = None if self.c is None else self.c[:1]
        rows = [traversal_images(self.run, self.codes[:1], c, self.group.offset + d, self.values)[0] for d in order]
        size = self.run.config.model.image_size
        scale = max(1, math.ceil(OVERVIEW_CELL_PIXELS / size)) if len(order) > OVERVIEW_BIG_ROWS else None
        labels = [f"{table[d]['label']}\nKL {table[d]['kl']:.2f}" + ("" if table[d]["active"] else " (inactive)")
                  for d in order]
        named = f"; names from {source.name}" if source else "; unnamed: no analysis/dims.json yet"
        shown = "every latent dimension" if len(order) == len(table) else f"the {len(order)} most active dimensions"
        save_comparison_grid(
            rows, labels, out,
            title=f"{self.label}: {shown} traversed on test face {self.offset} (one row each, most active "
                  f"first by KL to the prior{named}); columns: z_d set {self.range}{self.cond}",
            col_labels=[f"z_d = {t}" for t in self.col_text], scale=scale)
        return order


def traverse(run: Run | str | os.PathLike, dims: str | list[int] | None = "all", faces: int = 5,
             value_range: tuple[float, float] = (-3.0, 3.0), steps: int = 9, offset: int = 0,
             group: str | None = None) -> dict:
    """Write one sheet per dimension, the overview, and traverse.json; return the JSON dict."""
    run = as_run(run)
    size = run.group(group).size
    requested = parse_dims(dims, size)
    check_positive("faces", faces)
    check_positive("offset", offset, 0)
    values = _checked_range(value_range, steps)
    total = len(run.data.indices("test"))
    if offset >= total:
        raise ValueError(f"offset {offset} is past the end of the test split ({total} images)")

    table, source = dimension_labels(run, group)
    chosen, all_inactive = _chosen_dims(table, requested)
    sheets = _Sheets(run, group, faces, offset, values)
    out = run.analysis_dir
    folder = out / sheets.stem
    folder.mkdir(exist_ok=True)
    entries = [{**table[d], "png": str(sheets.sheet(table[d], folder / f"dim_{d:03d}.png"))} for d in chosen]
    overview = out / f"{sheets.stem}_overview.png"
    order = sheets.overview(table, source, overview)
    result = {"run": str(run.root), "group": sheets.group.name, "latent_dim": size,
              "requested": "all" if requested is None else requested, "all_inactive": all_inactive,
              "active_criterion": f"dims.json 'active', else Var(E[z_d|x]) over the test split > {VARIANCE_THRESHOLD}",
              "values": [float(v) for v in values], "range": [float(values[0]), float(values[-1])], "steps": steps,
              "faces": [{"position": offset + i, "row": int(r)} for i, r in enumerate(sheets.rows)],
              "names_from": str(source) if source else None, "dims": entries,
              "overview": {"png": str(overview), "order": order,
                           "dims": [{k: table[d][k] for k in ("dim", "kl", "active", "name", "score", "label")}
                                    for d in order]},
              "json": str(out / f"{sheets.stem}.json")}
    write_result(out / f"{sheets.stem}.json", result)
    return result
