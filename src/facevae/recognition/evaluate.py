"""Per-attribute evaluation of a classifier run (and the shared pieces the latent probes reuse).

Thresholds: each attribute gets its own decision threshold, chosen on the **validation** split and
then applied unchanged to the test split. ``threshold_by="accuracy"`` (the default) picks the
threshold that maximises validation accuracy, so the test accuracies are comparable with the
published CelebA figures (which report accuracy); ``"balanced_accuracy"`` maximises the mean of
the true-positive and true-negative rates instead (better for rare attributes, at some cost in
plain accuracy); ``"fixed"`` uses 0.5. Among equally good thresholds the one nearest 0.5 wins. An
attribute whose validation labels are all one value keeps 0.5.

Metrics on the test split, per attribute, with torchmetrics: accuracy, balanced accuracy (mean
recall of the two classes: ``(recall + specificity) / 2``), F1 of the positive class and ROC AUC
(threshold-free; ``null`` when the test split holds only one class). The means are over
attributes. ``majority`` is the accuracy of always answering the attribute's more frequent value
(in the training split), the floor any recogniser has to beat.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from facevae.common.errors import DatasetError, RunError
from facevae.common.files import make_dir, write_json_atomic
from facevae.recognition.config import THRESHOLD_RULES
from facevae.training.config import CLASSIFIER_KIND

METRICS = ("accuracy", "balanced_accuracy", "f1", "roc_auc")
METRIC_LABELS = {"accuracy": "accuracy", "balanced_accuracy": "balanced acc.", "f1": "F1", "roc_auc": "ROC AUC"}


# --- thresholds ---------------------------------------------------------------------------------------

def best_threshold(scores: np.ndarray, targets: np.ndarray, rule: str = "accuracy") -> float:
    """The threshold t (predict positive when score > t) that maximises ``rule`` on these labels."""
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"unknown threshold rule {rule!r}; use one of {', '.join(THRESHOLD_RULES)}")
    s = np.asarray(scores, np.float64)
    t = np.asarray(targets) > 0.5
    if rule == "fixed" or len(s) == 0 or t.all() or not t.any():
        return 0.5
    order = np.argsort(-s, kind="stable")
    s, t = s[order], t[order]
    # Cut k: the k highest scores are called positive (k = 0..n); only cuts between distinct scores count.
    tp = np.concatenate([[0], np.cumsum(t)])
    fp = np.concatenate([[0], np.cumsum(~t)])
    n_pos, n_neg = t.sum(), (~t).sum()
    valid = np.ones(len(s) + 1, bool)
    valid[1:-1] = s[:-1] > s[1:]
    if rule == "accuracy":
        score = (tp + (n_neg - fp)) / len(s)
    else:
        score = 0.5 * (tp / n_pos + (n_neg - fp) / n_neg)
    thresholds = np.empty(len(s) + 1)
    thresholds[0] = s[0]  # nothing is above the highest score
    thresholds[-1] = np.nextafter(s[-1], -np.inf)  # everything is above
    thresholds[1:-1] = 0.5 * (s[:-1] + s[1:])
    score = np.where(valid, score, -np.inf)
    best = np.flatnonzero(score >= score.max() - 1e-12)
    return float(thresholds[best[np.argmin(np.abs(thresholds[best] - 0.5))]])


def choose_thresholds(probs: np.ndarray, targets: np.ndarray, rule: str = "accuracy") -> np.ndarray:
    probs, targets = np.asarray(probs), np.asarray(targets)
    return np.array([best_threshold(probs[:, j], targets[:, j], rule) for j in range(probs.shape[1])])


# --- metrics -------------------------------------------------------------------------------------------

def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def attribute_metrics(probs: np.ndarray, targets: np.ndarray, thresholds: Sequence[float], names: Sequence[str],
                      train_rates: Sequence[float] | None = None) -> list[dict]:
    """One row per attribute: the test metrics at that attribute's threshold (torchmetrics)."""
    from torchmetrics.functional.classification import (
        binary_accuracy,
        binary_auroc,
        binary_f1_score,
        binary_recall,
        binary_specificity,
    )

    p = torch.as_tensor(np.asarray(probs, np.float64))
    y = torch.as_tensor(np.asarray(targets) > 0.5).long()
    rows = []
    for j, name in enumerate(names):
        pj, yj, thr = p[:, j], y[:, j], float(thresholds[j])
        n_pos = int(yj.sum())
        both = 0 < n_pos < len(yj)
        if len(yj):
            accuracy = float(binary_accuracy(pj, yj, threshold=thr))
            recall = float(binary_recall(pj, yj, threshold=thr))
            specificity = float(binary_specificity(pj, yj, threshold=thr))
            # Mean recall over the classes present (sklearn's definition when one class is missing).
            balanced = (recall + specificity) / 2 if both else (recall if n_pos else specificity)
            f1 = float(binary_f1_score(pj, yj, threshold=thr))
            auc = float(binary_auroc(pj, yj)) if both else None
        else:
            accuracy = balanced = f1 = auc = None
        rate = n_pos / len(yj) if len(yj) else None
        base_rate = float(train_rates[j]) if train_rates is not None else rate
        rows.append({"attribute": name, "positive_rate": rate, "threshold": thr, "accuracy": _finite(accuracy),
                     "balanced_accuracy": _finite(balanced), "f1": _finite(f1), "roc_auc": _finite(auc),
                     "majority": _majority(yj, base_rate)})
    return rows


def _majority(y: torch.Tensor, base_rate: float | None) -> float | None:
    """Accuracy on ``y`` of always answering the value that is more frequent at ``base_rate``."""
    if not len(y) or base_rate is None:
        return None
    guess = 1 if base_rate > 0.5 else 0
    return float((y == guess).float().mean())


def mean_metrics(rows: list[dict]) -> dict:
    out = {}
    for key in (*METRICS, "majority"):
        values = [r[key] for r in rows if r.get(key) is not None]
        out[key] = float(np.mean(values)) if values else None
    return out


def format_table(rows: list[dict], mean: dict, title: str | None = None) -> str:
    """A Markdown table: one row per attribute and the mean."""

    def f(v, digits=3):
        return "–" if v is None else f"{v:.{digits}f}"

    lines = [f"### {title}", ""] if title else []
    lines += ["| attribute | positives | threshold | accuracy | majority | balanced acc. | F1 | ROC AUC |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        rate = "–" if r["positive_rate"] is None else f"{100 * r['positive_rate']:.1f}%"
        lines.append(f"| {r['attribute']} | {rate} | {f(r['threshold'])} | {f(r['accuracy'])} | {f(r['majority'])} "
                     f"| {f(r['balanced_accuracy'])} | {f(r['f1'])} | {f(r['roc_auc'])} |")
    lines.append(f"| **mean** | | | **{f(mean['accuracy'])}** | {f(mean['majority'])} | "
                 f"{f(mean['balanced_accuracy'])} | {f(mean['f1'])} | {f(mean['roc_auc'])} |")
    return "\n".join(lines) + "\n"


# --- chart ---------------------------------------------------------------------------------------------

def save_metric_chart(path: str | os.PathLike, names: Sequence[str], series: list[tuple[str, list[dict]]],
                      title: str, metrics: Sequence[str] = ("accuracy", "balanced_accuracy")) -> Path:
    """Horizontal bars per attribute, one panel per metric, one bar colour per series of rows.

    ``series``: (label, rows) pairs, rows as :func:`attribute_metrics` makes them (matched by name);
    the first series' majority-class accuracy is drawn as black ticks on the accuracy panel.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from facevae.common.grids import abbreviate_attribute

    path = Path(path)
    names = list(names)
    n, k = len(names), len(series)
    height = 1.4 + 0.16 * n * max(k, 1.5)
    fig = Figure(figsize=(4.2 * len(metrics) + 1.6, height), dpi=100)
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    colours = ["#4C72B0", "#DD8452", "#55A868", "#C44E52"]
    ypos = np.arange(n)
    bar_h = 0.8 / max(k, 1)
    lows = []
    for ax, metric in zip(axes, metrics):
        for i, (label, rows) in enumerate(series):
            by_name = {r["attribute"]: r for r in rows}
            values = np.array([np.nan if by_name.get(a, {}).get(metric) is None else by_name[a][metric] for a in names])
            lows.append(np.nanmin(values) if np.isfinite(values).any() else 1.0)
            mean = np.nanmean(values) if np.isfinite(values).any() else np.nan
            ax.barh(ypos - 0.4 + bar_h * (i + 0.5), np.nan_to_num(values), height=bar_h, color=colours[i % len(colours)],
                    label=f"{label} (mean {mean:.3f})")
            if np.isfinite(mean):
                ax.axvline(mean, color=colours[i % len(colours)], linestyle="--", linewidth=1)
        if metric == "accuracy" and series:
            by_name = {r["attribute"]: r for r in series[0][1]}
            majority = np.array([np.nan if by_name.get(a, {}).get("majority") is None else by_name[a]["majority"]
                                 for a in names])
            ax.scatter(majority, ypos, marker="|", color="black", s=60, zorder=3, label="majority class")
        ax.set_title(METRIC_LABELS.get(metric, metric), fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    low = max(0.0, min([0.5, *lows]) - 0.02)
    for ax in axes:
        ax.set_xlim(low, 1.0)
    axes[0].set_yticks(ypos, [abbreviate_attribute(a) for a in names], fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    make_dir(path.parent)
    fig.savefig(path)
    return path


# --- the classifier's evaluation ---------------------------------------------------------------------

def _device(device) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device!r}: not a device; use cpu, cuda, cuda:1 or auto") from None
    # torch says so only at the first tensor moved, as a traceback about drivers
    if chosen.type == "cuda" and (chosen.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                         "use --device cpu, or auto to take what there is")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: this machine has none; use --device cpu, or auto to take what there is")
    return chosen


@torch.no_grad()
def predict(model, datamodule, part: str, device: torch.device, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray, float]:
    """Sigmoid probabilities (float64, n × A) and 0/1 targets of ``part``; images/s of the forward passes."""
    model.eval()
    probs, targets, seconds, count = [], [], 0.0, 0
    for x, y in datamodule.batches(part, device=device, batch_size=batch_size):
        start = time.perf_counter()
        logits = model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - start
        count += len(x)
        probs.append(torch.sigmoid(logits.double()).cpu())
        targets.append(y.cpu())
    if not probs:
        a = getattr(datamodule, "num_attributes", 0)
        return np.zeros((0, a)), np.zeros((0, a), np.uint8), 0.0
    return (torch.cat(probs).numpy(), (torch.cat(targets).numpy() > 0.5).astype(np.uint8),
            count / seconds if seconds > 0 else 0.0)


def evaluate(run_dir: str | os.PathLike, threshold_by: str | None = None, batch_size: int = 256,
             device: str | torch.device | None = "auto") -> dict:
    """Evaluate a classifier run on its test split; writes RUN/analysis/eval.json, eval.png and eval.md."""
    from facevae.recognition.config import ClassifierConfig
    from facevae.recognition.data import ClassifierDataModule
    from facevae.recognition.train import load_classifier

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise RunError(f"{run_dir}: not a run directory (no config.yaml); train one with `facevae classify train`")
    config = ClassifierConfig.load(run_dir / "config.yaml")
    rule = threshold_by or config.threshold_by
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"unknown threshold rule {rule!r}; use one of {', '.join(THRESHOLD_RULES)}")
    device = _device(device)
    model = load_classifier(run_dir, device)
    names = model.attribute_names
    data = ClassifierDataModule(config.data, split=config.split, batch_size=batch_size, attributes=names, seed=config.seed)
    valid_p, valid_y, _ = predict(model, data, "valid", device, batch_size)
    test_p, test_y, img_s = predict(model, data, "test", device, batch_size)
    if len(test_y) == 0:
        raise DatasetError(f"{config.data}: split {config.split!r} has no test images")
    source = "valid" if len(valid_y) else "none (no validation images: 0.5)"
    thresholds = choose_thresholds(valid_p, valid_y, rule) if len(valid_y) else np.full(len(names), 0.5)
    train_rates = data.part_attributes("train").mean(0) if len(data.indices("train")) else None
    rows = attribute_metrics(test_p, test_y, thresholds, names, train_rates)
    at_half = attribute_metrics(test_p, test_y, np.full(len(names), 0.5), names, train_rates)
    for row, half in zip(rows, at_half):
        row["accuracy_at_0.5"] = half["accuracy"]
    mean = mean_metrics(rows)
    mean["accuracy_at_0.5"] = mean_metrics(at_half)["accuracy"]
    out_dir = run_dir / "analysis"
    out_dir.mkdir(exist_ok=True)
    title = f"{config.backbone} classifier, {len(names)} attributes: test mean accuracy {mean['accuracy']:.3f}"
    save_metric_chart(out_dir / "eval.png", names, [(config.backbone, rows)], title)
    table = format_table(rows, mean)
    (out_dir / "eval.md").write_text(
        f"# Attribute recognition: {run_dir.name}\n\n{config.backbone} on {config.data} (split {config.split}); "
        f"thresholds chosen on the validation split by {rule}.\n\n" + table)
    result = {"run": str(run_dir), "kind": CLASSIFIER_KIND, "backbone": config.backbone,
              "data": config.data, "split": config.split, "threshold_by": rule, "thresholds_from": source,
              "valid_images": len(valid_y), "test_images": len(test_y),
              "eval_images_per_second": round(img_s, 1), "device": str(device),
              "attributes": rows, "mean": mean, "figure": "eval.png", "table": "eval.md"}
    write_json_atomic(out_dir / "eval.json", result)
    result["table_text"] = table
    return result
