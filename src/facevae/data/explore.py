"""Look at a packed dataset's attributes before training on them.

``explore(dataset, out_dir)`` writes, into ``out_dir``:

``attribute_frequencies.csv``
    one row per attribute: name, positives, negatives, rate, imbalance ratio (majority count /
    minority count; ``inf`` for a constant attribute), CelebA's published rate where the name is
    a CelebA attribute, and whether the attribute is constant.
``attribute_frequencies.png``
    horizontal bars of the positive rate, sorted, with CelebA's reference rates marked.
``correlation_heatmap.png``
    the A x A phi (Pearson on 0/1) correlation matrix, diverging colours centred at 0.
``correlation_matrix.csv``
    the same matrix as numbers (empty cells for constant attributes).
``top_correlations.csv``
    the 20 most correlated pairs by ``|r|``, with their sign.
``summary.json``
    all of the above in one document, plus image size, factors and the integrity report.

A constant attribute (rate 0 or 1) has no defined correlation: it is flagged as constant, its
correlations are 0 in the heatmap and ``null`` in the JSON/CSV, and it is left out of the top
pairs — so no NaN ever reaches the outputs.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np

from facevae.common.errors import DatasetError
from facevae.common.files import atomic_path, make_dir, remove_stale_temporaries, write_json_atomic
from facevae.data.attributes import CELEBA_ATTRIBUTE_RATES
from facevae.data.packed import PackedDataset

TOP_PAIRS = 20
MOST_IMBALANCED = 10


def attribute_statistics(attributes: np.ndarray) -> dict[str, np.ndarray]:
    """Positives, rates, imbalance ratios and the constant mask of an (N, A) 0/1 array."""
    attributes = np.asarray(attributes)
    n = attributes.shape[0]
    positives = attributes.sum(axis=0, dtype=np.int64)
    negatives = n - positives
    rates = positives / n
    minority = np.minimum(positives, negatives)
    majority = np.maximum(positives, negatives)
    with np.errstate(divide="ignore", invalid="ignore"):
        imbalance = np.where(minority > 0, majority / np.maximum(minority, 1), np.inf)
    return {
        "positives": positives,
        "negatives": negatives,
        "rates": rates,
        "imbalance": imbalance,
        "constant": minority == 0,
    }


def phi_correlation(attributes: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Pearson (phi) correlation of 0/1 columns, and the constant-column mask.

    Entries that involve a constant column are 0 (undefined in theory); the diagonal is 1 for the
    other columns. Computed in chunks of rows, so a 200k x 40 array costs no large temporary.
    """
    attributes = np.asarray(attributes)
    n, a = attributes.shape
    sums = np.zeros(a, np.float64)
    gram = np.zeros((a, a), np.float64)
    for lo in range(0, n, chunk):
        block = attributes[lo : lo + chunk].astype(np.float64)
        sums += block.sum(axis=0)
        gram += block.T @ block
    mean = sums / n
    cov = gram / n - np.outer(mean, mean)
    var = np.clip(np.diag(cov), 0.0, None)
    constant = var <= 1e-12
    std = np.sqrt(np.where(constant, 1.0, var))
    corr = cov / np.outer(std, std)
    corr[constant, :] = 0.0
    corr[:, constant] = 0.0
    corr = np.clip(corr, -1.0, 1.0)
    np.fill_diagonal(corr, np.where(constant, 0.0, 1.0))
    return corr, constant


def top_pairs(corr: np.ndarray, names: list[str], constant: np.ndarray, k: int = TOP_PAIRS) -> list[dict]:
    """The ``k`` most correlated distinct pairs by ``|r|`` (constant attributes left out)."""
    a = len(names)
    rows, cols = np.triu_indices(a, k=1)
    keep = ~(constant[rows] | constant[cols])
    rows, cols = rows[keep], cols[keep]
    values = corr[rows, cols]
    order = np.lexsort((cols, rows, -np.abs(values)))[:k]  # by |r| descending, ties by position
    return [
        {
            "a": names[rows[i]],
            "b": names[cols[i]],
            "r": round(float(values[i]), 4),
            "sign": "positive" if values[i] >= 0 else "negative",
        }
        for i in order
    ]


def _factor_info(dataset: PackedDataset) -> list[dict] | None:
    if dataset.factors is None or not dataset.factor_names:
        return None
    info = []
    for j, (name, size) in enumerate(zip(dataset.factor_names, dataset.factor_sizes)):
        counts = np.bincount(dataset.factors[:, j].astype(np.int64), minlength=int(size))
        info.append({"name": name, "size": int(size), "value_counts": [int(c) for c in counts]})
    return info


def _finite_or_none(value: float) -> float | None:
    return None if not math.isfinite(value) else float(value)


OUTPUT_FILES = {
    "attribute_frequencies_csv": "attribute_frequencies.csv",
    "attribute_frequencies_png": "attribute_frequencies.png",
    "correlation_heatmap_png": "correlation_heatmap.png",
    "correlation_matrix_csv": "correlation_matrix.csv",
    "top_correlations_csv": "top_correlations.csv",
    "summary_json": "summary.json",
}


def explore(dataset: PackedDataset, out_dir: str | os.PathLike) -> dict:
    """Write frequency/correlation tables and figures into ``out_dir``; return the summary."""
    if len(dataset) == 0:
        raise DatasetError(f"{dataset.root}: the dataset has no images; nothing to explore")
    names = dataset.attribute_names
    if not names:
        raise DatasetError(f"{dataset.root}: the dataset has no attributes; nothing to explore")
    out = Path(out_dir)
    make_dir(out)
    # summary.json, written last, marks the folder whole: gone until then, a kill never leaves it beside
    # the tables of another run
    (out / OUTPUT_FILES["summary_json"]).unlink(missing_ok=True)
    remove_stale_temporaries(out)

    stats = attribute_statistics(dataset.attributes)
    corr, constant = phi_correlation(dataset.attributes)
    pairs = top_pairs(corr, names, constant)
    per_attribute = _per_attribute(names, stats, constant)
    summary = {
        "dataset": str(dataset.root),
        "count": len(dataset),
        "image_size": [dataset.meta.height, dataset.meta.width],
        "num_attributes": len(names),
        "attributes": per_attribute,
        "constant_attributes": [n for n, c in zip(names, constant) if c],
        "top_correlations": pairs,
        "most_imbalanced": _most_imbalanced(names, stats),
        "mean_abs_correlation": round(float(_mean_offdiag_abs(corr, constant)), 4),
        # Row i, column j: phi correlation of attributes i and j; null where either is constant.
        "correlation": [
            [None if constant[i] or constant[j] else round(float(corr[i, j]), 4) for j in range(len(names))]
            for i in range(len(names))
        ],
        "factors": _factor_info(dataset),
        "integrity": dataset.integrity,
        "notes": _notes(names, constant, per_attribute),
        "files": dict(OUTPUT_FILES),
    }

    _write_frequencies_csv(out / OUTPUT_FILES["attribute_frequencies_csv"], names, stats)
    _write_matrix_csv(out / OUTPUT_FILES["correlation_matrix_csv"], names, corr, constant)
    _write_pairs_csv(out / OUTPUT_FILES["top_correlations_csv"], pairs, per_attribute)
    plot_frequencies(out / OUTPUT_FILES["attribute_frequencies_png"], names, stats["rates"], constant,
                     title=f"Attribute positive rates — {dataset.root.name} ({len(dataset):,} images)")
    plot_correlation_heatmap(out / OUTPUT_FILES["correlation_heatmap_png"], names, corr, constant,
                             title=f"Attribute correlation (phi) — {dataset.root.name}")
    write_json_atomic(out / OUTPUT_FILES["summary_json"], summary)
    return summary


def _per_attribute(names: list[str], stats: dict, constant: np.ndarray) -> dict[str, dict]:
    return {
        name: {
            "positives": int(stats["positives"][i]),
            "rate": round(float(stats["rates"][i]), 6),
            "imbalance_ratio": _finite_or_none(round(float(stats["imbalance"][i]), 4)),
            "celeba_reference_rate": CELEBA_ATTRIBUTE_RATES.get(name),
            "constant": bool(constant[i]),
        }
        for i, name in enumerate(names)
    }


def _most_imbalanced(names: list[str], stats: dict) -> list[dict]:
    """Most imbalanced first; constant attributes (infinite ratio) lead the list."""
    order = sorted(range(len(names)), key=lambda i: (-stats["imbalance"][i], names[i]))
    return [
        {
            "name": names[i],
            "rate": round(float(stats["rates"][i]), 6),
            "imbalance_ratio": _finite_or_none(round(float(stats["imbalance"][i]), 4)),
        }
        for i in order[:MOST_IMBALANCED]
    ]


def _notes(names: list[str], constant: np.ndarray, per_attribute: dict[str, dict]) -> list[str]:
    """What a reader of the figures should know: constant attributes, the largest gap to CelebA."""
    notes = []
    constant_names = [n for n, c in zip(names, constant) if c]
    if constant_names:
        notes.append(
            f"{len(constant_names)} constant attribute(s) (rate 0 or 1): {', '.join(constant_names)}; "
            "their correlations are undefined, shown as 0 in the heatmap, null in the JSON/CSV, "
            "and left out of the top pairs"
        )
    celeba_names = [n for n in names if n in CELEBA_ATTRIBUTE_RATES]
    if celeba_names:
        gaps = [(abs(per_attribute[n]["rate"] - CELEBA_ATTRIBUTE_RATES[n]), n) for n in celeba_names]
        gap, gap_name = max(gaps)
        notes.append(
            f"largest gap to CelebA's published rates: {gap_name} "
            f"({per_attribute[gap_name]['rate']:.3f} here vs {CELEBA_ATTRIBUTE_RATES[gap_name]:.2f})"
        )
    return notes


def _mean_offdiag_abs(corr: np.ndarray, constant: np.ndarray) -> float:
    keep = ~constant
    sub = np.abs(corr[np.ix_(keep, keep)])
    m = sub.shape[0]
    if m < 2:
        return 0.0
    return (sub.sum() - np.trace(sub)) / (m * (m - 1))


def _write_frequencies_csv(path: Path, names: list[str], stats: dict) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["attribute", "positives", "negatives", "rate", "imbalance_ratio", "celeba_reference_rate",
                    "constant"])
        for i, name in enumerate(names):
            ratio = stats["imbalance"][i]
            ref = CELEBA_ATTRIBUTE_RATES.get(name)
            w.writerow([
                name,
                int(stats["positives"][i]),
                int(stats["negatives"][i]),
                f"{stats['rates'][i]:.6f}",
                "inf" if not math.isfinite(ratio) else f"{ratio:.4f}",
                "" if ref is None else f"{ref:.2f}",
                int(bool(stats["constant"][i])),
            ])


def _write_matrix_csv(path: Path, names: list[str], corr: np.ndarray, constant: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["attribute", *names])
        for i, name in enumerate(names):
            w.writerow([name, *("" if constant[i] or constant[j] else f"{corr[i, j]:.4f}" for j in range(len(names)))])


def _write_pairs_csv(path: Path, pairs: list[dict], per_attribute: dict) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "attribute_a", "attribute_b", "correlation", "abs_correlation", "sign", "rate_a", "rate_b"])
        for rank, p in enumerate(pairs, 1):
            w.writerow([rank, p["a"], p["b"], f"{p['r']:.4f}", f"{abs(p['r']):.4f}", p["sign"],
                        f"{per_attribute[p['a']]['rate']:.4f}", f"{per_attribute[p['b']]['rate']:.4f}"])


# --- figures ----------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_frequencies(path: Path, names: list[str], rates: np.ndarray, constant: np.ndarray, title: str) -> None:
    plt = _pyplot()
    a = len(names)
    order = np.argsort(rates, kind="stable")  # lowest at the bottom, highest at the top
    height = max(3.5, 0.26 * a + 1.4)
    fontsize = 8 if a <= 60 else 6
    fig, ax = plt.subplots(figsize=(9, height), constrained_layout=True)
    y = np.arange(a)
    colours = ["#b0b0b0" if constant[i] else "#4c72b0" for i in order]
    ax.barh(y, rates[order], color=colours, height=0.75)
    from matplotlib.patches import Patch

    handles = [Patch(color="#4c72b0", label="this dataset")]  # a proxy: the first bar may be grey
    refs = [(k, CELEBA_ATTRIBUTE_RATES[names[i]]) for k, i in enumerate(order) if names[i] in CELEBA_ATTRIBUTE_RATES]
    if refs:
        ky, kr = zip(*refs)
        handles.append(ax.scatter(kr, ky, marker="|", s=160, linewidths=2.2, color="#c44e52", zorder=3,
                                  label="CelebA published rate"))
    for k, i in enumerate(order):
        x = max(rates[i], CELEBA_ATTRIBUTE_RATES.get(names[i], 0.0))
        ax.text(min(x, 1.0) + 0.012, k, f"{rates[i]:.1%}", va="center", fontsize=fontsize - 1, color="#333333")
    ax.set_yticks(y)
    ax.set_yticklabels([names[i] + (" (constant)" if constant[i] else "") for i in order], fontsize=fontsize)
    ax.set_ylim(-0.7, a - 0.3)
    ax.set_xlim(0, 1.08)
    ax.axvline(0.5, color="#888888", lw=0.8, ls="--", zorder=0)
    ax.set_xlabel("positive rate (fraction of images with the attribute)")
    ax.set_ylabel("attribute (sorted by rate)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(handles=handles, loc="lower right", fontsize=8)
    from facevae.common.grids import save_figure  # through a temporary: a kill never leaves half a PNG

    save_figure(fig, path, dpi=110)
    plt.close(fig)


def plot_correlation_heatmap(path: Path, names: list[str], corr: np.ndarray, constant: np.ndarray, title: str) -> None:
    plt = _pyplot()
    import matplotlib.colors as mcolors

    a = len(names)
    fontsize = 9 if a <= 20 else (7 if a <= 45 else max(3, int(7 * 45 / a)))
    side = 6 if a <= 10 else 14
    fig, ax = plt.subplots(figsize=(side, side * 12 / 14), constrained_layout=True)
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="#d9d9d9")
    masked = np.ma.masked_array(corr, mask=constant[:, None] | constant[None, :])
    image = ax.imshow(masked, cmap=cmap, norm=mcolors.TwoSlopeNorm(vmin=-1.0, vcenter=0.0, vmax=1.0),
                      interpolation="nearest")
    labels = [n + (" (const)" if constant[i] else "") for i, n in enumerate(names)]
    ax.set_xticks(np.arange(a))
    ax.set_yticks(np.arange(a))
    ax.set_xticklabels(labels, rotation=90, fontsize=fontsize)
    ax.set_yticklabels(labels, fontsize=fontsize)
    ax.set_xticks(np.arange(a + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(a + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=0.4)
    ax.tick_params(which="minor", length=0)
    if a <= 20:  # small matrices get their numbers written in
        for i in range(a):
            for j in range(a):
                if not (constant[i] or constant[j]):
                    ax.text(j, i, f"{corr[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if abs(corr[i, j]) > 0.6 else "black")
    bar = fig.colorbar(image, ax=ax, shrink=0.8, pad=0.02)
    bar.set_label("phi correlation (Pearson on 0/1)")
    subtitle = "grey: constant attribute, correlation undefined" if constant.any() else ""
    ax.set_title(title + (f"\n{subtitle}" if subtitle else ""))
    from facevae.common.grids import save_figure

    save_figure(fig, path, dpi=110)
    plt.close(fig)


# --- terminal ---------------------------------------------------------------------------------

def format_summary(summary: dict, top: int = 10) -> str:
    """A short plain-text report of ``explore``'s summary for the terminal."""
    h, w = summary["image_size"]
    lines = [f"{summary['count']:,} images, {h}x{w}, {summary['num_attributes']} attributes"]
    lines.append(f"{'attribute':<22} {'rate':>7} {'CelebA':>7} {'imbalance':>10}")
    for name, a in summary["attributes"].items():
        ref = "" if a["celeba_reference_rate"] is None else f"{a['celeba_reference_rate']:.2f}"
        ratio = "constant" if a["constant"] else f"{a['imbalance_ratio']:.1f}:1"
        lines.append(f"{name:<22} {a['rate']:7.3f} {ref:>7} {ratio:>10}")
    if summary["top_correlations"]:
        lines.append(f"most correlated pairs (|r|, top {min(top, len(summary['top_correlations']))}):")
        for p in summary["top_correlations"][:top]:
            lines.append(f"  {p['r']:+.3f}  {p['a']} ~ {p['b']}")
    if summary["most_imbalanced"]:
        ratios = ["constant" if m["imbalance_ratio"] is None else f"{m['imbalance_ratio']:.0f}:1"
                  for m in summary["most_imbalanced"][:5]]
        worst = ", ".join(f"{m['name']} ({ratio})" for m, ratio in zip(summary["most_imbalanced"], ratios))
        lines.append(f"most imbalanced: {worst}")
    if summary.get("factors"):
        lines.append("factors: " + ", ".join(f"{f['name']} ({f['size']})" for f in summary["factors"]))
    for note in summary.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)
