"""Dimension evaluation: which latent dimensions are used, and what each one tracks.

``evaluate_dims(run)`` encodes the run's test split and writes, into ``RUN/analysis``:

``dims.json``
    ``{"dims": [{"dim", "kl", "active", "name", "score", "runner_up": {"name", "score"}, ...}],
    "targets", "method", "active_units", "active_units_kl", "factors": [...], "assignment": {...}, ...}``
    (the traversal and report code read it).
``dims.csv``
    the same per-dimension table as rows.
``dims.png``
    the KL of every dimension (sorted, largest first) beside a heatmap of the score of every
    (dimension, target) pair.

**Active units.** Two criteria, both recorded. Burda et al. (2016): dimension d is active when the
variance over the test set of its posterior mean, ``Var_x(E_q[z_d|x])``, exceeds 0.01 (``active``;
``active_units``). And the KL criterion: the test-set mean of ``KL(q(z_d|x) || N(0, 1))`` exceeds
0.01 nats (``active_kl``; ``active_units_kl``). The KL of a dimension is non-negative and is the
nats per image the dimension costs; an inactive ("collapsed") dimension has posterior ≈ prior.

**Targets.** The ground-truth factors when the data has them (synthetic faces, disentanglement
sets), otherwise the binary attributes (CelebA).

**Scores** (in [0, 1], 0 = unrelated, 1 = the dimension determines the target):

* factors (discrete, several values): the normalised mutual information
  ``I(z_d; v_k) / H(v_k)`` between the posterior mean of dimension d, discretised into 20
  equal-frequency bins (quantiles, robust to outliers; fewer bins when the test set has under 20
  images per bin), and factor k — the normalisation of MIG (Chen et al. 2018). The plug-in
  estimate's first-order bias, ``(bins − 1)(K − 1) / 2N`` nats (Miller–Madow), is subtracted, so
  unrelated pairs score about 0 rather than a few hundredths.
* attributes (binary, often rare): ``|2·AUC − 1|`` (Somers' D), where AUC is the probability that
  a random positive image has a larger posterior mean than a random negative one. It is rank
  based, so insensitive to the scale of z and to outliers, and it is not deflated by imbalance
  the way a correlation is. The sign (``direction``: +1 when the attribute raises z_d) is kept.

**Names.** Every dimension is named after the target it scores highest on, with the runner-up
target. **Matching**: every factor (or attribute) gets its best active dimension, that
dimension's score, the second-best active dimension and the margin between the two; the
``assignment`` keeps the factors whose best dimension also names them back (mutual best) with a
score of at least ``min_score``. For a conditional model, the factors that its condition
determines are flagged (``conditioned``): the model receives them, so its latents need not carry
them.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from facevae.analysis.shared import group_stem
from facevae.common.files import make_dir, write_json_atomic
from facevae.common.information import entropy, mutual_information

BINS = 20
VARIANCE_THRESHOLD = 0.01  # Burda et al. 2016: Var_x(E[z_d|x]) below this, dimension d carries no information
KL_THRESHOLD = 0.01  # nats
MIN_PER_BIN = 20  # fewer bins for small test sets: the plug-in MI is badly biased with sparse bins
MIN_SCORE = 0.1  # below this a dimension "tracks" nothing in the assignment
CONDITIONED_THRESHOLD = 0.99  # share of a factor's entropy the condition explains


# --- the numbers -----------------------------------------------------------------------------------
def discretize(codes: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Each column of (N, D) ``codes`` as bin indices 0..bins-1 of equal-frequency (quantile) bins."""
    codes = np.asarray(codes, np.float64)
    if codes.ndim != 2:
        raise ValueError(f"codes must be (N, D), got shape {codes.shape}")
    out = np.empty(codes.shape, np.int64)
    qs = np.linspace(0, 1, bins + 1)[1:-1]
    for d in range(codes.shape[1]):
        edges = np.quantile(codes[:, d], qs)
        out[:, d] = np.searchsorted(edges, codes[:, d], side="right")
    return out


def effective_bins(n: int, bins: int = BINS) -> int:
    """``bins``, fewer for small samples: at least MIN_PER_BIN images per bin on average."""
    return int(max(2, min(bins, n // MIN_PER_BIN)))


def nmi_scores(codes: np.ndarray, factors: np.ndarray, bins: int = BINS, correct_bias: bool = True) -> np.ndarray:
    """(D, K): I(discretised z_d; v_k) / H(v_k), in [0, 1]. A constant factor scores 0 with every dimension.

    ``correct_bias``: subtract the plug-in estimator's first-order bias (Miller–Madow),
    ``(B_z − 1)(B_v − 1) / 2N`` nats (B: occupied bins / values), so unrelated pairs score about 0.
    """
    codes = np.asarray(codes)
    binned = discretize(codes, effective_bins(len(codes), bins))
    factors = np.asarray(factors, np.int64)
    if factors.ndim != 2 or len(factors) != len(binned):
        raise ValueError(f"factors must be (N, K) with N = {len(binned)}, got shape {factors.shape}")
    n = len(binned)
    scores = np.zeros((binned.shape[1], factors.shape[1]))
    for k in range(factors.shape[1]):
        h = entropy(factors[:, k])
        if h <= 1e-12:
            continue
        values = len(np.unique(factors[:, k]))
        for d in range(binned.shape[1]):
            mi = mutual_information(binned[:, d], factors[:, k])
            if correct_bias:
                mi -= (len(np.unique(binned[:, d])) - 1) * (values - 1) / (2 * n)
            scores[d, k] = mi / h
    return np.clip(scores, 0.0, 1.0)


def auc_scores(codes: np.ndarray, attributes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(D, A) AUCs of each dimension's code as a score for each binary attribute (0.5 where constant)."""
    from scipy.stats import rankdata

    codes = np.asarray(codes, np.float64)
    y = (np.asarray(attributes) > 0).astype(np.float64)
    ranks = rankdata(codes, axis=0)  # average ranks for ties
    pos = y.sum(0)
    neg = len(y) - pos
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (ranks.T @ y - pos * (pos + 1) / 2) / (pos * neg)
    return np.where(np.isfinite(auc), auc, 0.5)


def score_matrix(codes: np.ndarray, targets: np.ndarray, kind: str = "factors", bins: int = BINS
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """(D, K) scores in [0, 1] (see the module docstring), and the (D, K) direction signs for attributes."""
    if kind == "factors":
        return nmi_scores(codes, targets, bins), None
    if kind == "attributes":
        auc = auc_scores(codes, targets)
        return np.abs(2 * auc - 1), np.sign(auc - 0.5)
    raise ValueError(f"unknown target kind {kind!r}; use 'factors' or 'attributes'")


def name_dimensions(scores: np.ndarray, names: Sequence[str]) -> list[dict]:
    """For each dimension (row of ``scores``), its best target and the runner-up target."""
    scores = np.asarray(scores)
    out = []
    for d, row in enumerate(scores):
        order = np.argsort(-row, kind="stable")
        best = int(order[0])
        entry = {"dim": d, "name": names[best], "score": _rounded(row[best])}
        if len(order) > 1:
            second = int(order[1])
            entry["runner_up"] = {"name": names[second], "score": _rounded(row[second])}
        else:
            entry["runner_up"] = None
        out.append(entry)
    return out


def match_targets(scores: np.ndarray, names: Sequence[str], candidates: Sequence[int] | None = None,
                  min_score: float = MIN_SCORE) -> tuple[list[dict], dict[str, int]]:
    """For each target (column), its best and second-best dimension among ``candidates``.

    Returns one dict per target ``{"name", "dim", "score", "second_dim", "second_score", "margin",
    "mutual"}`` (``margin`` = score − second_score; ``mutual``: the best dimension's own best target
    is this one) and the assignment ``{name: dim}`` of the mutual matches scoring at least
    ``min_score`` (so no two targets share a dimension).
    """
    scores = np.asarray(scores)
    dims = np.arange(scores.shape[0]) if candidates is None or len(candidates) == 0 else np.asarray(candidates)
    sub = scores[dims]
    best_target_of_dim = scores.argmax(axis=1)
    rows, assignment = [], {}
    for k, name in enumerate(names):
        order = np.argsort(-sub[:, k], kind="stable")
        d1 = int(dims[order[0]])
        s1 = float(sub[order[0], k])
        d2 = int(dims[order[1]]) if len(order) > 1 else None
        s2 = float(sub[order[1], k]) if len(order) > 1 else 0.0
        mutual = bool(best_target_of_dim[d1] == k)
        rows.append({"name": name, "dim": d1, "score": _rounded(s1), "second_dim": d2, "second_score": _rounded(s2),
                     "margin": _rounded(s1 - s2), "mutual": mutual})
        if mutual and s1 >= min_score:
            assignment[name] = d1
    return rows, assignment


def condition_explains(factors: np.ndarray, conditions: np.ndarray) -> np.ndarray:
    """(K,) share of each factor's entropy that the condition vectors explain, I(v; c) / H(v)."""
    factors = np.asarray(factors, np.int64)
    _, groups = np.unique(np.asarray(conditions), axis=0, return_inverse=True)
    groups = groups.reshape(-1)
    out = np.zeros(factors.shape[1])
    for k in range(factors.shape[1]):
        h = entropy(factors[:, k])
        out[k] = mutual_information(groups, factors[:, k]) / h if h > 1e-12 else 1.0
    return np.clip(out, 0.0, 1.0)


def _rounded(x, digits: int = 4):
    x = float(x)
    return round(x, digits) if math.isfinite(x) else None


# --- a run --------------------------------------------------------------------------------------------
def dimension_table(codes: np.ndarray, kl: np.ndarray, targets: np.ndarray, names: Sequence[str],
                    kind: str = "factors", *, bins: int = BINS, variance_threshold: float = VARIANCE_THRESHOLD,
                    kl_threshold: float = KL_THRESHOLD, min_score: float = MIN_SCORE) -> dict:
    """The content of ``dims.json`` from test-set posterior means (N, D), the mean KL of each dimension
    to the model's prior (D,) and targets (no files, no model)."""
    mu = np.asarray(codes, np.float64)
    kl = np.asarray(kl, np.float64)
    variance = mu.var(axis=0)
    active = variance > variance_threshold
    active_kl = kl > kl_threshold
    scores, direction = score_matrix(mu, targets, kind, bins)
    named = name_dimensions(scores, names)
    dims = []
    for d, entry in enumerate(named):
        row = {"dim": d, "kl": _rounded(kl[d]), "active": bool(active[d]), "name": entry["name"], "score": entry["score"],
               "runner_up": entry["runner_up"], "active_kl": bool(active_kl[d]), "variance": _rounded(variance[d], 5)}
        if direction is not None:
            row["direction"] = int(direction[d, names.index(entry["name"])])
        dims.append(row)
    candidates = np.flatnonzero(active)
    matches, assignment = match_targets(scores, names, candidates if len(candidates) >= 2 else None, min_score)
    return {
        "dims": dims,
        "targets": kind,
        "target_names": list(names),
        "method": "nmi" if kind == "factors" else "abs_2auc_minus_1",
        "bins": effective_bins(len(mu), bins) if kind == "factors" else None,
        "images": int(len(mu)),
        "latent_dim": int(mu.shape[1]),
        "active_units": int(active.sum()),
        "active_units_kl": int(active_kl.sum()),
        "variance_threshold": variance_threshold,
        "kl_threshold": kl_threshold,
        "total_kl": _rounded(kl.sum()),
        "matching_among": "active dimensions" if len(candidates) >= 2 else "all dimensions",
        "factors" if kind == "factors" else "attributes": matches,
        "assignment": assignment,
        "min_score": min_score,
        "scores": [[_rounded(s) for s in row] for row in scores],
    }


def evaluate_dims(run, *, targets: str = "auto", group: str | None = None, bins: int = BINS, batch_size: int = 256,
                  out_dir: str | os.PathLike | None = None, figure: bool = True) -> dict:
    """Evaluate the dimensions of one latent group of an opened run on its test split.

    ``group``: the latent group (default: the model's top group, the only one of a flat model).
    ``targets``: "factors", "attributes" or "auto" (factors when the data has them). Writes
    ``dims.json``, ``dims.csv`` and (with ``figure``) ``dims.png`` into ``out_dir`` (default
    ``RUN/analysis``); returns the dims.json content with ``"files"`` added.
    """
    chosen = run.group(group)
    encoded = run.encode("test", batch_size=batch_size)
    if len(encoded) < 2:
        raise ValueError(f"{run.root}: the test split has {len(encoded)} image(s); need at least 2")
    if targets == "auto":
        targets = "factors" if encoded.factors is not None and run.data.factor_names else "attributes"
    if targets == "factors":
        if encoded.factors is None:
            raise ValueError(f"{run.root}: the data has no ground-truth factors; use --targets attributes (or auto)")
        values, names = encoded.factors, list(run.data.factor_names)
    elif targets == "attributes":
        values, names = encoded.attributes, list(run.data.attribute_names)
    else:
        raise ValueError(f"unknown targets {targets!r}; use auto, factors or attributes")
    result = dimension_table(encoded.codes(chosen.name), encoded.kl(chosen.name), values, names, targets, bins=bins)
    result["group"] = chosen.name
    result["groups"] = group_summary(run.model.latent_groups, encoded.kl())
    result["run"] = str(run.root)
    result["model"] = run.config.model.model
    result["conditional"] = run.conditional
    result["condition_names"] = run.condition_names
    if targets == "factors" and run.conditional:
        packed = run.data.packed
        cols = run.config.model.condition_index(packed.attribute_names)
        share = condition_explains(np.asarray(packed.factors), np.asarray(packed.attributes)[:, cols])
        for row, s in zip(result["factors"], share):
            row["condition_explains"] = _rounded(s)
            row["conditioned"] = bool(s >= CONDITIONED_THRESHOLD)
    elif targets == "attributes" and run.conditional:
        for row in result["attributes"]:
            row["conditioned"] = row["name"] in run.condition_names
    out = Path(out_dir) if out_dir is not None else run.analysis_dir
    make_dir(out)
    stem = dims_path(run, group).stem
    files = {"json": str(out / f"{stem}.json"), "csv": str(out / f"{stem}.csv")}
    write_csv(result, out / f"{stem}.csv")
    if figure:
        title = f"{run.root.name}: latent dimensions" + ("" if stem == "dims" else f" of group {chosen.name}")
        files["figure"] = str(plot_dims(result, out / f"{stem}.png", title=title))
    result["files"] = files
    write_json_atomic(out / f"{stem}.json", result)
    return result


def dims_path(run, group: str | None = None) -> Path:
    """Where ``facevae dims`` keeps its result for a latent group: RUN/analysis/dims[_GROUP].json."""
    return run.root / "analysis" / f"{group_stem(run, 'dims', group)}.json"


def group_summary(groups, kl_per_unit: np.ndarray) -> list[dict]:
    """Per latent group: its shape, units, total KL (nats) and active units by KL (for the report)."""
    return [{"name": g.name, "shape": list(g.shape), "units": g.size, "kl": _rounded(kl_per_unit[g.units].sum()),
             "active_units_kl": int((kl_per_unit[g.units] > KL_THRESHOLD).sum())} for g in groups]


def target_rows(result: dict) -> list[dict]:
    """The per-factor (or per-attribute) matching rows of a dims result."""
    return result.get("factors") or result.get("attributes") or []


# --- outputs ----------------------------------------------------------------------------------------
def write_csv(result: dict, path: str | os.PathLike) -> Path:
    path = Path(path)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["dim", "kl", "variance", "active", "active_kl", "name", "score", "runner_up", "runner_up_score"])
        for d in result["dims"]:
            ru = d.get("runner_up") or {}
            w.writerow([d["dim"], d["kl"], d["variance"], int(d["active"]), int(d["active_kl"]), d["name"],
                        d["score"], ru.get("name", ""), ru.get("score", "")])
    return path


def sorted_dims(result: dict) -> list[dict]:
    """Dimensions by KL, largest first."""
    return sorted(result["dims"], key=lambda d: (-(d["kl"] or 0.0), d["dim"]))


def plot_dims(result: dict, path: str | os.PathLike, title: str | None = None) -> Path:
    """KL per dimension (bars, sorted) beside the dimension × target score heatmap."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from facevae.common.grids import abbreviate_attribute, abbreviate_factor

    dims = sorted_dims(result)
    names = result["target_names"]
    short = [abbreviate_factor(n) if result["targets"] == "factors" else abbreviate_attribute(n) for n in names]
    scores = np.array([[s or 0.0 for s in result["scores"][d["dim"]]] for d in dims])
    n_dims, n_targets = scores.shape
    row_h = 0.16 if n_dims > 32 else 0.24
    top_in, bottom_in = 0.85, 1.25  # title + panel titles; rotated target names + axis label
    height = max(2.0, n_dims * row_h) + top_in + bottom_in
    map_w = max(4.0, n_targets * 0.32)
    width = 0.7 + 2.2 + map_w + 0.9
    fig = Figure(figsize=(width, height), dpi=100, facecolor="white")
    grid = fig.add_gridspec(1, 2, width_ratios=[2.2, map_w], wspace=0.04,
                            left=0.7 / width, right=1 - 0.9 / width, top=1 - top_in / height, bottom=bottom_in / height)
    ax_kl = fig.add_subplot(grid[0])
    ax_map = fig.add_subplot(grid[1], sharey=ax_kl)
    y = np.arange(n_dims)
    kl = np.array([d["kl"] or 0.0 for d in dims])
    colours = ["#3b6ea8" if d["active"] else "#b9c3cf" for d in dims]
    ax_kl.barh(y, kl, color=colours, height=0.8)
    ax_kl.invert_xaxis()
    ax_kl.set_yticks(y)
    ax_kl.set_yticklabels([f"z{d['dim']}" for d in dims], fontsize=6.5 if n_dims > 32 else 8)
    ax_kl.set_xlabel("KL (nats)", fontsize=8)
    ax_kl.tick_params(axis="x", labelsize=7)
    ax_kl.set_title(f"KL per dim ({result['active_units']} active)", fontsize=9)
    im = ax_map.imshow(scores, aspect="auto", cmap="viridis", vmin=0.0, vmax=max(0.3, float(scores.max())),
                       interpolation="nearest")
    ax_map.set_xticks(np.arange(n_targets))
    ax_map.set_xticklabels(short, rotation=60, ha="right", fontsize=7)
    ax_map.tick_params(axis="y", labelleft=False, length=0)
    ax_map.set_ylim(n_dims - 0.5, -0.5)
    for i, d in enumerate(dims):  # mark each dimension's best target
        if d["active"]:
            ax_map.plot(names.index(d["name"]), i, marker="o", ms=2.5, color="white")
    method = "NMI" if result["targets"] == "factors" else "|2·AUC−1|"
    ax_map.set_title(f"score ({method}) of each {result['targets'][:-1]}", fontsize=9)
    cax = fig.add_axes((1 - 0.7 / width, bottom_in / height, 0.12 / width, 1 - (top_in + bottom_in) / height))
    fig.colorbar(im, cax=cax).ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=11, fontweight="bold", y=1 - 0.12 / height, va="top")
    path = Path(path)
    make_dir(path.parent)
    fig.savefig(path, dpi=100, facecolor="white")
    return path


def shown_dims(result: dict, all_dims: bool = False) -> list[dict]:
    """The dimensions a table lists: by KL, largest first; the active ones (by either criterion) unless all."""
    return [d for d in sorted_dims(result) if all_dims or d["active"] or d["active_kl"]]


def target_notes(result: dict, row: dict) -> list[str]:
    notes = ["matched (mutual best)"] if row["name"] in result["assignment"] else []
    return notes + (["given by the condition"] if row.get("conditioned") else [])


def format_dims_table(result: dict, all_dims: bool = False) -> str:
    """The per-dimension table (active dimensions, by KL) and the target → dimension matching, as text."""
    kind = result["targets"][:-1]
    group = f" of latent group {result['group']}" if result.get("group") and len(result.get("groups", [])) > 1 else ""
    lines = [f"{result['active_units']} of {result['latent_dim']} dimensions{group} active (Var[mu] > "
             f"{result['variance_threshold']:g}); {result['active_units_kl']} with KL > {result['kl_threshold']:g} nats; "
             f"total KL {result['total_kl']:.2f} nats; score: {result['method']} on {result['images']} test images"]
    header = f"{'dim':>4} {'KL':>7} {'var':>7}  {'tracks ' + kind:<22} {'score':>6}  {'runner-up':<22} {'score':>6}"
    lines += ["", header, "-" * len(header)]
    shown = shown_dims(result, all_dims)
    for d in shown:
        ru = d.get("runner_up") or {"name": "", "score": None}
        lines.append(f"{d['dim']:>4} {d['kl']:>7.3f} {d['variance']:>7.3f}  {d['name']:<22} {d['score']:>6.3f}  "
                     f"{ru['name']:<22} {(ru['score'] or 0):>6.3f}")
    hidden = len(result["dims"]) - len(shown)
    if hidden:
        lines.append(f"({hidden} inactive dimensions not shown)")
    rows = target_rows(result)
    if rows:
        header = f"{kind:<22} {'dim':>4} {'score':>6} {'2nd dim':>7} {'score':>6} {'margin':>7}  note"
        lines += ["", header, "-" * len(header)]
        for r in sorted(rows, key=lambda r: -(r["score"] or 0)):
            second = "" if r["second_dim"] is None else r["second_dim"]
            lines.append(f"{r['name']:<22} {r['dim']:>4} {r['score']:>6.3f} {second:>7} {r['second_score']:>6.3f} "
                         f"{r['margin']:>7.3f}  {', '.join(target_notes(result, r))}")
    return "\n".join(lines)
