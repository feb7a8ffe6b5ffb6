"""Train/valid/test splits of a packed dataset, and a check of each attribute's distribution.

Strategies:

``official``
    the source's own partition (CelebA's ``list_eval_partition.txt``); ratios and seed unused.
``random``
    a seeded permutation cut at the requested ratios (part sizes exact, by largest remainder).
``stratified``
    multi-label iterative stratification (Sechidis et al. 2011, through the
    ``iterative-stratification`` package) over all attributes at once, followed by a seeded
    size-exact rebalancing: samples are moved until every part has exactly its share, then
    pairs of samples are swapped between parts while that lowers the summed squared deviation
    of every attribute's positive rate from the overall one. Iterative stratification alone
    keeps rare attributes exact but lets common ones drift (it assigns each sample by its
    rarest label, so by the time a 50% attribute is reached nearly every sample is placed);
    the swap pass fixes that without touching the part sizes.

An assignment is an int8 array of length N: 0 train, 1 valid, 2 test (-1 unused).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from facevae.common.errors import DatasetError
from facevae.common.files import remove_stale_temporaries, write_json_atomic
from facevae.data.attributes import PARTITION_NAMES
from facevae.data.packed import OFFICIAL_SPLIT, PackedDataset

STRATEGIES = ("official", "random", "stratified")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# --- making splits ----------------------------------------------------------------------------

def check_ratios(ratios) -> tuple[float, float, float]:
    """Three non-negative finite numbers summing to 1 (within 1e-6), as floats; else ValueError."""
    try:
        values = tuple(float(r) for r in ratios)
    except (TypeError, ValueError):
        raise ValueError(f"ratios {ratios!r}: expected three numbers (train, valid, test) like 0.8,0.1,0.1") from None
    if len(values) != 3:
        raise ValueError(f"ratios {ratios!r}: expected three numbers (train, valid, test), got {len(values)}")
    if not all(math.isfinite(r) and r >= 0 for r in values):
        raise ValueError(f"ratios {values}: each of train, valid, test must be a non-negative number")
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"ratios {values}: train + valid + test must sum to 1, not {sum(values):g}")
    if values[0] == 0:
        raise ValueError(f"ratios {values}: the train part cannot be empty")
    return values


def part_sizes(n: int, ratios) -> np.ndarray:
    """Sizes of the parts of ``n`` items at ``ratios``, summing to ``n`` (largest remainder)."""
    raw = np.asarray(ratios, np.float64) * n
    sizes = np.floor(raw + 1e-9).astype(np.int64)
    missing = n - int(sizes.sum())
    if missing > 0:
        sizes[np.argsort(-(raw - sizes), kind="stable")[:missing]] += 1
    return sizes


def make_split(dataset: PackedDataset, strategy: str, ratios=(0.8, 0.1, 0.1), seed: int = 0) -> np.ndarray:
    """An int8 (N,) assignment (0 train, 1 valid, 2 test) of ``dataset`` by ``strategy``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown split strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    n = len(dataset)
    if strategy == "official":
        partition = np.asarray(dataset.partition, np.int8)
        if not (partition >= 0).any():
            raise DatasetError(
                f"{dataset.root}: has no official partition (its source did not come with one); "
                "use --strategy random or --strategy stratified"
            )
        return partition.copy()
    ratios = check_ratios(ratios)
    if n == 0:
        raise DatasetError(f"{dataset.root}: the dataset has no images to split")
    if strategy == "random":
        return random_assignment(n, ratios, seed)
    return stratified_assignment(dataset.attributes, ratios, seed)


def random_assignment(n: int, ratios, seed: int = 0) -> np.ndarray:
    sizes = part_sizes(n, ratios)
    order = np.random.default_rng(seed).permutation(n)
    assignment = np.empty(n, np.int8)
    assignment[order] = np.repeat(np.arange(3, dtype=np.int8), sizes)
    return assignment


def stratified_assignment(attributes: np.ndarray, ratios, seed: int = 0, *, refine: bool = True) -> np.ndarray:
    """Iterative stratification over every attribute, then size-exact rebalancing (see module doc)."""
    from iterstrat.ml_stratifiers import IterativeStratification

    ratios = check_ratios(ratios)
    labels = np.asarray(attributes).astype(bool)
    n = labels.shape[0]
    sizes = part_sizes(n, ratios)
    varying = labels.any(axis=0) & ~labels.all(axis=0)
    labels = labels[:, varying]
    if labels.shape[1] == 0:  # nothing to stratify on
        return random_assignment(n, ratios, seed)

    active = np.flatnonzero(np.asarray(ratios) > 0)
    state = np.random.RandomState(seed)
    assignment = np.empty(n, np.int8)
    if len(active) == 1:
        assignment[:] = active[0]
        return assignment
    r = np.asarray(ratios)[active]
    order = state.permutation(n)  # iterstrat breaks ties in input order: shuffle it first
    folds = IterativeStratification(labels=labels[order], r=r / r.sum(), random_state=state)
    assignment[order] = active[folds].astype(np.int8)
    if refine:
        assignment = rebalance(labels, assignment, sizes, np.random.default_rng(seed))
    return assignment


def rebalance(labels: np.ndarray, assignment: np.ndarray, sizes, rng: np.random.Generator, *,
              batch: int = 1024, patience: int = 30, max_steps: int = 200_000) -> np.ndarray:
    """Make part sizes exactly ``sizes``, then swap samples between parts to even out rates.

    The objective is the sum over parts and attributes of the squared difference between the
    part's positive rate and the overall rate. Each step draws ``batch`` candidate moves (or
    swaps), scores them all at once, and applies the best one if it lowers the objective; the
    swap pass stops after ``patience`` batches without an improving candidate.
    """
    y = np.asarray(labels, np.float32)
    n = len(y)
    sizes = np.asarray(sizes, np.int64)
    k_parts = len(sizes)
    overall = y.mean(axis=0, dtype=np.float64)
    # Each part's members live in a fixed-capacity array; removal swaps with the last member.
    members = np.zeros((k_parts, n), np.int64)
    have = np.zeros(k_parts, np.int64)
    for k in range(k_parts):
        rows = np.flatnonzero(assignment == k)
        members[k, : len(rows)] = rows
        have[k] = len(rows)
    counts = np.stack([y[members[k, : have[k]]].sum(axis=0, dtype=np.float64) for k in range(k_parts)])

    def deviation(k: int, extra=0.0, size_change: int = 0):
        size = have[k] + size_change
        if size <= 0:
            return np.zeros(np.broadcast_shapes(np.shape(extra), overall.shape))
        return (counts[k] + extra) / size - overall

    # 1. exact sizes: move the best of a batch of samples from the fullest to the emptiest part.
    for _ in range(max_steps):
        excess = have - sizes
        if not excess.any():
            break
        p, q = int(np.argmax(excess)), int(np.argmin(excess))
        pick = rng.integers(0, have[p], size=min(batch, have[p]))
        cand = y[members[p, pick]].astype(np.float64)
        delta = ((deviation(p, -cand, -1) ** 2).sum(1) - (deviation(p) ** 2).sum()
                 + (deviation(q, cand, +1) ** 2).sum(1) - (deviation(q) ** 2).sum())
        j = int(np.argmin(delta))
        sample = members[p, pick[j]]
        members[p, pick[j]] = members[p, have[p] - 1]
        have[p] -= 1
        members[q, have[q]] = sample
        have[q] += 1
        counts[p] -= cand[j]
        counts[q] += cand[j]

    # 2. even rates: swap pairs of samples between parts (sizes stay exact).
    nonempty = np.flatnonzero(have > 0)
    if len(nonempty) >= 2:
        stale = 0
        for _ in range(max_steps):
            e = np.stack([deviation(k) for k in range(k_parts)])
            p = nonempty[rng.integers(0, len(nonempty), batch)]
            q = nonempty[(np.searchsorted(nonempty, p) + rng.integers(1, len(nonempty), batch)) % len(nonempty)]
            ia = (rng.random(batch) * have[p]).astype(np.int64)
            ib = (rng.random(batch) * have[q]).astype(np.int64)
            a, b = members[p, ia], members[q, ib]
            d = (y[b] - y[a]).astype(np.float64)  # change of part p's counts (q gets -d)
            n_p, n_q = have[p][:, None].astype(np.float64), have[q][:, None].astype(np.float64)
            delta = (2 * e[p] * d / n_p + d**2 / n_p**2 - 2 * e[q] * d / n_q + d**2 / n_q**2).sum(1)
            j = int(np.argmin(delta))
            if delta[j] >= -1e-15:
                stale += 1
                if stale >= patience:
                    break
                continue
            stale = 0
            members[p[j], ia[j]], members[q[j], ib[j]] = b[j], a[j]
            counts[p[j]] += d[j]
            counts[q[j]] -= d[j]

    out = np.full(n, -1, np.int8)
    for k in range(k_parts):
        out[members[k, : have[k]]] = k
    return out


# --- checking splits --------------------------------------------------------------------------

def distribution_check(attributes: np.ndarray, attribute_names: list[str], assignment: np.ndarray) -> dict:
    """Each attribute's positive rate overall and per part, and how far each part is from overall.

    ``overall`` is over the rows the split uses (assignment >= 0). A part with no rows has rate
    and deviation ``None``.
    """
    attributes = np.asarray(attributes)
    assignment = np.asarray(assignment)
    if assignment.shape != (attributes.shape[0],):
        raise ValueError(f"assignment has shape {assignment.shape}, expected ({attributes.shape[0]},)")
    if len(attribute_names) != attributes.shape[1]:
        raise ValueError(f"{len(attribute_names)} attribute names for {attributes.shape[1]} attribute columns")
    used = assignment >= 0
    n_used = int(used.sum())
    sizes = {part: int((assignment == k).sum()) for k, part in enumerate(PARTITION_NAMES)}
    sizes["unused"] = int((~used).sum())
    overall = attributes[used].mean(axis=0, dtype=np.float64) if n_used else np.full(attributes.shape[1], np.nan)
    part_rates = {}
    for k, part in enumerate(PARTITION_NAMES):
        rows = assignment == k
        part_rates[part] = attributes[rows].mean(axis=0, dtype=np.float64) if rows.any() else None

    per_attribute = {}
    worst = {"attribute": None, "part": None, "value": 0.0}
    all_devs = []
    for i, name in enumerate(attribute_names):
        entry = {"overall": _round(overall[i])}
        deviation = {}
        for part in PARTITION_NAMES:
            rates = part_rates[part]
            entry[part] = None if rates is None else _round(rates[i])
            deviation[part] = None if rates is None else _round(abs(rates[i] - overall[i]))
        devs = [d for d in deviation.values() if d is not None]
        entry["deviation"] = deviation
        entry["max_deviation"] = max(devs) if devs else None
        all_devs += devs
        for part, d in deviation.items():
            if d is not None and (worst["attribute"] is None or d > worst["value"]):
                worst = {"attribute": name, "part": part, "value": d}
        per_attribute[name] = entry
    return {
        "count": int(attributes.shape[0]),
        "sizes": sizes,
        "fractions": {part: (round(sizes[part] / n_used, 6) if n_used else None) for part in PARTITION_NAMES},
        "attributes": per_attribute,
        "max_deviation": worst,
        "mean_deviation": _round(float(np.mean(all_devs))) if all_devs else None,
    }


def _round(x: float) -> float | None:
    x = float(x)
    return None if not math.isfinite(x) else round(x, 6)


def format_distribution_check(report: dict) -> str:
    """A plain-text table of a distribution check for the terminal."""
    lines = []
    if "strategy" in report:
        head = f"split {report.get('name', report['strategy'])!r}: strategy {report['strategy']}"
        if report.get("seed") is not None:
            head += f", seed {report['seed']}"
        if report.get("ratios") is not None:
            head += ", ratios " + "/".join(f"{r:g}" for r in report["ratios"])
        lines.append(head)
    sizes = report["sizes"]
    size_line = "sizes: " + ", ".join(f"{part} {sizes[part]:,}" for part in PARTITION_NAMES)
    if sizes.get("unused"):
        size_line += f", unused {sizes['unused']:,}"
    lines.append(size_line)
    lines.append(f"{'attribute':<22} {'overall':>8} {'train':>8} {'valid':>8} {'test':>8} {'max dev':>8}")

    def cell(v):
        return f"{'-':>8}" if v is None else f"{v:8.4f}"

    for name, a in report["attributes"].items():
        lines.append(f"{name:<22} {cell(a['overall'])} {cell(a['train'])} {cell(a['valid'])} {cell(a['test'])} "
                     f"{cell(a['max_deviation'])}")
    worst = report["max_deviation"]
    if worst["attribute"] is None:
        lines.append("largest deviation: none (no part has rows)")
    else:
        lines.append(f"largest deviation: {worst['value']:.4f} ({worst['value'] * 100:.2f} percentage points), "
                     f"{worst['attribute']} in {worst['part']}; mean deviation {report['mean_deviation']:.4f}")
    return "\n".join(lines)


# --- storing splits ---------------------------------------------------------------------------

def split_dataset(dataset: PackedDataset, strategy: str, ratios=(0.8, 0.1, 0.1), seed: int = 0,
                  name: str | None = None) -> tuple[str, dict]:
    """Make, check and store a split; return its name and report.

    The assignment goes to ``splits/NAME.npy`` (except the official split, which is the
    dataset's own partition: only its report is written), the report with strategy, ratios and
    seed to ``splits/NAME.json``, and a per-attribute bar chart to ``splits/NAME_distribution.png``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown split strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    name = name or strategy
    if not _NAME_RE.match(name):
        raise ValueError(f"split name {name!r}: use letters, digits, '_', '-' or '.', starting with a letter or digit")
    if name == OFFICIAL_SPLIT and strategy != "official":
        raise ValueError(f"the name {OFFICIAL_SPLIT!r} is reserved for the source's own partition; "
                         f"choose another --name for a {strategy} split")
    assignment = make_split(dataset, strategy, ratios, seed)
    check = distribution_check(dataset.attributes, dataset.attribute_names, assignment)
    if strategy == "official":
        ratios_used, seed_used = [check["fractions"][p] for p in PARTITION_NAMES], None
    else:
        ratios_used, seed_used = list(check_ratios(ratios)), int(seed)
    report = {
        "name": name,
        "strategy": strategy,
        "ratios": ratios_used,
        "seed": seed_used,
        "method": _METHODS[strategy],
        "figure": f"{name}_distribution.png",
        **check,
    }
    split_dir = dataset.root / "splits"
    split_dir.mkdir(exist_ok=True)
    remove_stale_temporaries(split_dir)
    # the .npy is the stored split: gone until the new one's figure and report are written, a kill
    # never leaves an earlier split with their figure and report
    (split_dir / f"{name}.npy").unlink(missing_ok=True)
    plot_distribution(split_dir / report["figure"], report)
    if name == OFFICIAL_SPLIT:
        write_json_atomic(split_dir / f"{name}.json", report)
    else:
        dataset.save_split(name, assignment, report)
    return name, report


_METHODS = {
    "official": "the source's own partition (partition.npy)",
    "random": "seeded permutation cut at the ratios",
    "stratified": "iterative multi-label stratification (iterative-stratification package) "
                  "followed by size-exact rebalancing swaps that minimise squared rate deviations",
}


def plot_distribution(path: Path, report: dict) -> None:
    """Two panels: each attribute's positive rate per part, and each part's deviation from overall."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["attributes"])
    a = len(names)
    x = np.arange(a)
    colours = {"train": "#4c72b0", "valid": "#dd8452", "test": "#55a868"}
    width = 0.27
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8, 0.38 * a + 2), 9), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]}, constrained_layout=True)
    for k, part in enumerate(PARTITION_NAMES):
        rates = [report["attributes"][nm][part] for nm in names]
        devs = [report["attributes"][nm][part] - report["attributes"][nm]["overall"]
                if report["attributes"][nm][part] is not None else None for nm in names]
        if all(r is None for r in rates):
            continue
        label = f"{part} ({report['sizes'][part]:,})"
        top.bar(x + (k - 1) * width, [np.nan if r is None else r for r in rates], width, color=colours[part],
                label=label)
        bottom.bar(x + (k - 1) * width, [np.nan if d is None else 100 * d for d in devs], width, color=colours[part],
                   label=label)
    overall = [report["attributes"][nm]["overall"] for nm in names]
    top.scatter(x, overall, marker="_", s=220, color="black", zorder=3, label="overall")
    top.set_ylabel("positive rate")
    top.set_ylim(0, 1)
    top.grid(axis="y", alpha=0.3)
    top.legend(ncol=4, fontsize=8, loc="upper left")
    bottom.axhline(0, color="black", lw=0.8)
    bottom.set_ylabel("part rate − overall rate\n(percentage points)")
    bottom.grid(axis="y", alpha=0.3)
    bottom.set_xticks(x)
    bottom.set_xticklabels(names, rotation=90, fontsize=8 if a <= 50 else 6)
    bottom.set_xlim(-0.6, a - 0.4)
    worst = report["max_deviation"]
    title = f"Split {report.get('name', '')!r}: {report.get('strategy', '')}"
    if report.get("seed") is not None:
        title += f", seed {report['seed']}"
    if worst["attribute"] is not None:
        title += (f" — largest deviation {100 * worst['value']:.2f} pp "
                  f"({worst['attribute']}, {worst['part']})")
    top.set_title(title)
    from facevae.common.grids import save_figure

    save_figure(fig, path, dpi=100)
    plt.close(fig)
