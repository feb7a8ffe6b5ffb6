"""Linear probes on VAE latents: how well does the posterior mean predict each attribute?

"Recognition of features with variational autoencoders": for a trained VAE run, every image is
encoded to its posterior mean μ(x) (``q(z | x, c)`` for a conditional VAE, whose encoder also sees
the condition attributes), and one logistic regression per attribute is fitted from μ to the
attribute on the training split (standardised μ, L2 penalty ``C``; at most ``max_train`` images,
a seeded random subset). Thresholds are chosen on the validation split and the metrics measured on
the test split exactly as ``facevae classify eval`` does for the attribute classifier, so the two
tables and the comparison chart line up.

For a conditional VAE the condition attributes are flagged (``in_condition``): its encoder is
given them, and a well-disentangled CVAE should carry *little* of them in z, so a low probe score
there is the intended outcome rather than a failure.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from facevae.common.errors import DatasetError, RunError
from facevae.common.files import write_json_atomic
from facevae.recognition.config import THRESHOLD_RULES
from facevae.recognition.evaluate import (
    attribute_metrics,
    choose_thresholds,
    format_table,
    mean_metrics,
    save_metric_chart,
)


def fit_probes(z_train: np.ndarray, y_train: np.ndarray, C: float = 1.0, max_iter: int = 1000, seed: int = 0):
    """One standardised logistic regression per column of ``y_train``; returns ``predict(z) -> probs``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(z_train)
    zs = scaler.transform(z_train)
    models = []
    for j in range(y_train.shape[1]):
        yj = y_train[:, j]
        if yj.min() == yj.max():  # one class only: a constant answer
            models.append(float(yj[0]) if len(yj) else 0.5)
            continue
        models.append(LogisticRegression(C=C, max_iter=max_iter, random_state=seed).fit(zs, yj))

    def predict(z: np.ndarray) -> np.ndarray:
        if len(z) == 0:
            return np.zeros((0, len(models)))
        zz = scaler.transform(z)
        cols = [np.full(len(z), m) if isinstance(m, float) else m.predict_proba(zz)[:, 1] for m in models]
        return np.stack(cols, 1).astype(np.float64)

    return predict


def _classifier_rows(classifier_run, names: list[str], vae_data: str, vae_split: str) -> dict:
    """The classifier's eval rows (run `classify eval` first if it has none) and any caveat."""
    from facevae.recognition.config import ClassifierConfig, is_classifier_run

    path = Path(classifier_run)
    if not is_classifier_run(path):
        raise RunError(f"{path}: not an attribute-classifier run (make one with `facevae classify train`)")
    eval_path = path / "analysis" / "eval.json"
    if eval_path.is_file():
        import json

        result = json.loads(eval_path.read_text())
    else:
        from facevae.recognition.evaluate import evaluate

        result = evaluate(path)
    config = ClassifierConfig.load(path / "config.yaml")
    notes = []
    if Path(config.data).resolve() != Path(vae_data).resolve():
        notes.append(f"the classifier was trained on {config.data}, the VAE on {vae_data}: different test images")
    elif config.split != vae_split:
        notes.append(f"the classifier uses split {config.split!r}, the VAE {vae_split!r}: different test images")
    rows = [r for r in result["attributes"] if r["attribute"] in set(names)]
    missing = [a for a in names if a not in {r["attribute"] for r in rows}]
    if missing:
        notes.append(f"the classifier does not predict {', '.join(missing)}")
    return {"run": str(path), "backbone": result.get("backbone", config.backbone), "threshold_by": result.get("threshold_by"),
            "attributes": rows, "mean": mean_metrics(rows), "notes": notes}


def _codes(encoded, group: str) -> tuple[np.ndarray, np.ndarray]:
    return encoded.codes(group), encoded.attributes


def _probe_text(run, group, table: str, C: float, threshold_by: str, condition: set, comparison) -> str:
    model_name = run.config.model.model
    text = (f"# Attribute probes on the latents of {run.root.name}\n\nLogistic regression (C={C}) from the "
            f"{group.size}-d posterior means of latent group {group.name} of a {model_name} to each attribute; "
            f"thresholds chosen on the validation split by {threshold_by}.\n\n" + table)
    if condition:
        text += f"\nCondition attributes (given to the encoder): {', '.join(sorted(condition))}.\n"
    if comparison is not None:
        text += f"\nClassifier {comparison['run']}: mean accuracy {comparison['mean']['accuracy']:.3f}.\n"
        text += "".join(f"\nNote: {note}." for note in comparison["notes"])
    return text


def probe_run(run, classifier_run: str | os.PathLike | None = None, *, max_train: int = 20000, C: float = 1.0,
              threshold_by: str = "accuracy", seed: int = 0, batch_size: int = 256, group: str | None = None) -> dict:
    """Logistic-regression probes from a VAE run's posterior means to every attribute of its data.

    ``run``: a VAE run directory (or a :class:`facevae.training.rundir.Run` from ``open_run``).
    ``group``: the latent group whose posterior means are probed (default: the model's top group).
    ``classifier_run``: an attribute-classifier run to compare with, per attribute (its
    ``analysis/eval.json``, computed if missing). Writes RUN/analysis/probe.json, probe.png (per
    attribute accuracy and balanced accuracy; probe next to classifier when one is given) and
    probe.md (the table); returns the JSON's content plus ``table_text``.
    """
    from facevae.common.settings import check_seed
    from facevae.recognition.config import is_classifier_run
    from facevae.training.rundir import Run, open_run

    if threshold_by not in THRESHOLD_RULES:
        raise ValueError(f"unknown threshold rule {threshold_by!r}; use one of {', '.join(THRESHOLD_RULES)}")
    if max_train < 2:
        raise ValueError(f"--max-train must be at least 2, got {max_train}")
    if not C > 0:  # scikit-learn says so too, but only once every split has been encoded
        raise ValueError(f"--C (the inverse L2 strength) must be > 0, got {C}; 1 is the default, inf no penalty")
    check_seed(seed)
    if not isinstance(run, Run):
        if is_classifier_run(run):
            raise RunError(f"{run}: an attribute-classifier run; probe takes a VAE run "
                               "(pass the classifier with --classifier for the comparison)")
        run = open_run(run)
    started = time.perf_counter()
    names = run.data.attribute_names
    chosen = run.group(group)
    group = chosen.name
    z_train, y_train = _codes(run.encode("train", batch_size, max_train, seed, through=group), group)
    if len(z_train) < 2:
        raise DatasetError(f"{run.root}: the training split has fewer than 2 images to fit probes on")
    z_valid, y_valid = _codes(run.encode("valid", batch_size, through=group), group)
    z_test, y_test = _codes(run.encode("test", batch_size, through=group), group)
    if len(z_test) == 0:
        raise DatasetError(f"{run.root}: the test split has no images")
    predict = fit_probes(z_train, y_train, C=C, seed=seed)
    thresholds = choose_thresholds(predict(z_valid), y_valid, threshold_by) if len(z_valid) else np.full(len(names), 0.5)
    rows = attribute_metrics(predict(z_test), y_test, thresholds, names, y_train.mean(0))
    condition = set(run.condition_names) if run.conditional else set()
    for row in rows:
        row["in_condition"] = row["attribute"] in condition
    mean = mean_metrics(rows)
    comparison = _classifier_rows(classifier_run, names, run.config.train.data, run.config.train.split) \
        if classifier_run is not None else None

    out_dir = run.analysis_dir
    model_name = run.config.model.model
    series = [(f"{model_name} latent probe", rows)]
    title = f"Attributes from {model_name} posterior means (logistic regression): test mean accuracy {mean['accuracy']:.3f}"
    if comparison is not None:
        series.append((f"{comparison['backbone']} classifier", comparison["attributes"]))
        title = (f"Recognising attributes: {model_name} latent probe {mean['accuracy']:.3f} vs "
                 f"{comparison['backbone']} classifier {comparison['mean']['accuracy']:.3f} (test mean accuracy)")
    save_metric_chart(out_dir / "probe.png", names, series, title)
    table = format_table(rows, mean)
    text = _probe_text(run, chosen, table, C, threshold_by, condition, comparison)
    (out_dir / "probe.md").write_text(text)
    result = {
        "run": str(run.root), "model": model_name, "latent_dim": chosen.size, "group": group,
        "conditional": bool(run.conditional), "condition_names": sorted(condition),
        "data": run.config.train.data, "split": run.config.train.split,
        "probe": {"kind": "logistic regression on standardised posterior means", "C": C, "seed": seed,
                  "train_images": len(z_train), "valid_images": len(z_valid),
                  "test_images": len(z_test), "threshold_by": threshold_by,
                  "thresholds_from": "valid" if len(z_valid) else "none (0.5)"},
        "attributes": rows, "mean": mean, "classifier": comparison,
        "seconds": round(time.perf_counter() - started, 1), "figure": "probe.png", "table": "probe.md",
    }
    write_json_atomic(out_dir / "probe.json", result)
    result["table_text"] = table
    return result
