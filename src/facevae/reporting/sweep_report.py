"""``sweep-report``: the trials of a sweep, the objective against β and β_norm, the Pareto front, the best run.

Writes into the sweep directory: ``sweep_report.json`` (every trial, the best, the Pareto front),
``objective_vs_beta.png`` (each objective against β and against β_norm = β·M/N, one line per
setting of the other swept parameters: the report's inverted U), ``pareto.png`` (two objectives)
and ``sweep_report.html`` (all of it on one self-contained page, the best run linked).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import optuna
from optuna.trial import TrialState

from facevae.sweeps.study import SweepConfig

BETA_PARAMS = ("beta", "beta_norm")


def trial_rows(config: SweepConfig) -> list[dict]:
    """One dict per trial of the study (surplus trials, never run, left out)."""
    study = optuna.load_study(study_name=config.study, storage=config.storage)
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("surplus"):
            continue
        values = dict(zip(config.objectives, t.values)) if t.values else {}
        rows.append({"number": t.number, "state": t.state.name, "params": dict(t.params), "values": values,
                     "beta": t.user_attrs.get("beta"), "beta_norm": t.user_attrs.get("beta_norm"),
                     "run_dir": t.user_attrs.get("run_dir"), "error": t.user_attrs.get("error"),
                     "duplicate_of": t.user_attrs.get("duplicate_of"), "retry_of": t.system_attrs.get("failed_trial"),
                     "seconds": t.duration.total_seconds() if t.duration else None})
    return rows


def _complete(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["state"] == TrialState.COMPLETE.name and r["values"]]


def _sign(direction: str) -> int:
    return 1 if direction == "maximize" else -1


def pareto_front(rows: list[dict], config: SweepConfig) -> list[dict]:
    """Complete trials no other complete trial beats on every objective (ties kept)."""
    def key(r):
        return [_sign(d) * r["values"][o] for o, d in zip(config.objectives, config.directions)]

    done = _complete(rows)
    dominated = lambda a, b: all(x <= y for x, y in zip(key(a), key(b))) and key(a) != key(b)  # noqa: E731
    return [r for r in done if not any(dominated(r, other) for other in done)]


def best_trial(rows: list[dict], config: SweepConfig) -> dict | None:
    """The best complete trial by the first objective (on the Pareto front, when there are two)."""
    candidates = pareto_front(rows, config) if len(config.objectives) > 1 else _complete(rows)
    first, direction = config.objectives[0], config.directions[0]
    return max(candidates, key=lambda r: _sign(direction) * r["values"][first], default=None)


# --- figures ---------------------------------------------------------------------------------------------
def _series(rows: list[dict], config: SweepConfig, x: str, objective: str) -> dict[str, list[tuple]]:
    """Points (x, value) per setting of the swept parameters other than β."""
    groups: dict[str, list[tuple]] = {}
    for r in _complete(rows):
        if r[x] is None or r["duplicate_of"] is not None:
            continue
        label = ", ".join(f"{k}={v}" for k, v in r["params"].items() if k not in BETA_PARAMS) or "all trials"
        groups.setdefault(label, []).append((r[x], r["values"][objective]))
    return {label: sorted(points) for label, points in groups.items()}


def beta_figure(rows: list[dict], config: SweepConfig, path: Path) -> Path:
    from matplotlib.figure import Figure

    n = len(config.objectives)
    fig = Figure(figsize=(11, 3.8 * n), layout="constrained")
    axes = fig.subplots(n, 2, squeeze=False)
    labels = {"beta": "β (weight of the KL term)", "beta_norm": "β_norm = β·M/N (M latent dims, N = 3·H·W)"}
    for i, objective in enumerate(config.objectives):
        for j, x in enumerate(BETA_PARAMS):
            ax = axes[i][j]
            series = _series(rows, config, x, objective)
            for k, (label, points) in enumerate(series.items()):
                xs, ys = zip(*points)
                ax.plot(xs, ys, "o-", label=label if k < 10 else None)
            _log_x(ax, sorted({p[0] for s in series.values() for p in s}))
            ax.set_title(f"{objective} against {'β' if x == 'beta' else 'β_norm'}")
            ax.set_xlabel(labels[x])
            ax.set_ylabel(objective)
            ax.grid(alpha=0.3)
            if len(series) > 1:
                ax.legend(fontsize=7)
    fig.suptitle(f"sweep {config.study}: objective against β ({len(_complete(rows))} complete trials)")
    fig.savefig(path, dpi=100, facecolor="white")
    return path


def _log_x(ax, xs: list[float]) -> None:
    """β values are powers of two and the like: a log axis, ticked at the values swept."""
    if not xs or xs[0] <= 0:
        return
    ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:.3g}" for x in xs])
    ax.minorticks_off()


def pareto_figure(rows: list[dict], config: SweepConfig, path: Path) -> Path:
    from matplotlib.figure import Figure

    a, b = config.objectives
    front = sorted(pareto_front(rows, config), key=lambda r: r["values"][a])
    fig = Figure(figsize=(6.5, 5), layout="constrained")
    ax = fig.subplots()
    done = _complete(rows)
    ax.scatter([r["values"][a] for r in done], [r["values"][b] for r in done], c="0.6", label="trial")
    ax.plot([r["values"][a] for r in front], [r["values"][b] for r in front], "o-", c="C3", label="Pareto front")
    for r in front:
        ax.annotate(f"#{r['number']}", (r["values"][a], r["values"][b]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_title(f"Pareto front: {a} ({config.directions[0]}) vs {b} ({config.directions[1]})")
    ax.set_xlabel(a)
    ax.set_ylabel(b)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=100, facecolor="white")
    return path


# --- the report --------------------------------------------------------------------------------------------
def build_sweep_report(sweep_dir: str | os.PathLike) -> dict:
    """Writes the report files into ``sweep_dir``; returns the JSON report (with ``files``)."""
    from facevae.common.files import write_json_atomic

    root = Path(sweep_dir)
    config = SweepConfig.load(root)
    rows = trial_rows(config)
    best = best_trial(rows, config)
    files = {"figure": str(beta_figure(rows, config, root / "objective_vs_beta.png"))}
    report = {"study": config.study, "storage": config.storage, "objectives": config.objectives,
              "directions": config.directions, "space": config.space, "trials": rows,
              "best": best, "files": files}
    if len(config.objectives) == 2:
        files["pareto"] = str(pareto_figure(rows, config, root / "pareto.png"))
        report["pareto_front"] = [r["number"] for r in pareto_front(rows, config)]
    files["html"] = str(root / "sweep_report.html")
    files["json"] = str(root / "sweep_report.json")
    _write_html(report, config, root, Path(files["html"]))
    write_json_atomic(Path(files["json"]), report)
    return report


def _link(run_dir: str | None, root: Path) -> str:
    from facevae.reporting.html import esc

    if not run_dir:
        return "—"
    href = os.path.relpath(run_dir, root)
    if (Path(run_dir) / "report.html").is_file():
        href = f"{href}/report.html"
    return f'<a href="{esc(href)}">{esc(href)}</a>'


def _write_html(report: dict, config: SweepConfig, root: Path, path: Path) -> None:
    from facevae.reporting.html import Section, esc, html_table, img_tag, note, render_page

    params = list(config.space)
    header = ["#", "state", *params, "β", "β_norm", *config.objectives, "run", "note"]
    rows = [[r["number"], r["state"].lower(), *[r["params"].get(p) for p in params], r["beta"], r["beta_norm"],
             *[r["values"].get(o) for o in config.objectives], _link(r["run_dir"], root), _note(r)]
            for r in report["trials"]]
    best = report["best"]
    best_html = (note("No trial has completed yet.") if best is None else
                 f"<p>Trial #{best['number']} ({esc(', '.join(f'{k}={v}' for k, v in best['params'].items()))}): "
                 f"{esc(', '.join(f'{k} = {v:.4g}' for k, v in best['values'].items()))}, run "
                 f"{_link(best['run_dir'], root)}</p>")
    sections = [Section("best", "Best run", best_html),
                Section("trials", "Trials", html_table(header, rows, raw_columns=[len(header) - 2])),
                Section("beta", "Objective against β and β_norm",
                        img_tag(report["files"]["figure"], "objective against beta"))]
    if "pareto" in report["files"]:
        sections.append(Section("pareto", "Pareto front", img_tag(report["files"]["pareto"], "Pareto front")))
    subtitle = (f"{', '.join(f'{o} ({d})' for o, d in zip(config.objectives, config.directions))} · "
                f"{config.sampler} sampler · {config.storage}")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_page(f"facevae sweep — {config.study}", subtitle, sections))
    tmp.replace(path)


def _note(row: dict) -> str:
    if row["duplicate_of"] is not None:
        return f"same point as #{row['duplicate_of']}"
    if row["retry_of"] is not None:
        return f"retry of #{row['retry_of']} (its worker was killed)"
    return row["error"] or ""


def format_trials(report: dict) -> str:
    """The trial table as text, and the best run."""
    params = list(report["space"])
    header = ["#", "state", *params, "beta_norm", *report["objectives"], "run"]
    lines = [[str(r["number"]), r["state"].lower(), *[str(r["params"].get(p, "")) for p in params],
              _short(r["beta_norm"]), *[_short(r["values"].get(o)) for o in report["objectives"]], r["run_dir"] or ""]
             for r in report["trials"]]
    widths = [max(len(x) for x in column) for column in zip(header, *lines)]
    text = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *lines]]
    best = report["best"]
    text.append("" if best is None else f"\nbest: trial #{best['number']} → {best['run_dir']}")
    return "\n".join(text)


def _short(value) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}" if isinstance(value, float) and math.isfinite(value) else str(value)
