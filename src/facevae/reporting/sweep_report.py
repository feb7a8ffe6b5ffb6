"""``sweep-report``: the trials of a sweep, the objective against β and β_norm, the Pareto front, the best run.

Writes into the sweep directory: ``sweep_report.json`` (every trial, the best, the Pareto front, the
β the first objective picks), ``objective_vs_beta.png`` (each objective, and each metric the trials
recorded, against β and against β_norm = β·M/N: the mean over seeds with one standard deviation, one
line per setting of the other swept parameters: the report's inverted U), ``pareto.png`` (two
objectives) and ``sweep_report.html`` (all of it on one self-contained page, the best run linked).
"""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path

import optuna
from optuna.trial import TrialState

from facevae.sweeps.objectives import OBJECTIVES
from facevae.sweeps.search_space import is_range
from facevae.sweeps.study import SweepConfig

BETA_PARAMS = ("beta", "beta_norm")
GROUPING_EXCLUDES = (*BETA_PARAMS, "seed")  # lines are drawn per setting of the rest; seeds are averaged
METRIC_KEYS = {suite: key for key, suite in OBJECTIVES.values() if suite}  # suite metric → its headline score


def load_recorded_study(config: SweepConfig) -> optuna.Study:
    """The study sweep.json names; a one-line error when its database or the study in it is not there (optuna
    says KeyError, after making an empty SQLite file in the missing one's place)."""
    from sqlalchemy.engine import make_url

    url = make_url(config.storage)
    shown = url.render_as_string(hide_password=True)
    fix = "put the sweep's database back, or run the same `facevae sweep` command to start the study again"
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") \
            and not Path(url.database).is_file():
        raise FileNotFoundError(f"{shown}: the sweep's database is not there; {fix}")
    try:
        return optuna.load_study(study_name=config.study, storage=config.storage)
    except KeyError:
        raise ValueError(f"{shown}: holds no study {config.study!r}; {fix}") from None


def trial_rows(config: SweepConfig) -> list[dict]:
    """One dict per trial of the study (surplus trials, never run, left out)."""
    study = load_recorded_study(config)
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("surplus"):
            continue
        values = dict(zip(config.objectives, t.values)) if t.values else {}
        rows.append({"number": t.number, "state": t.state.name, "params": dict(t.params), "values": values,
                     "beta": t.user_attrs.get("beta"), "beta_norm": t.user_attrs.get("beta_norm"),
                     "run_dir": t.user_attrs.get("run_dir"), "error": t.user_attrs.get("error"),
                     "duplicate_of": t.user_attrs.get("duplicate_of"), "retry_of": t.system_attrs.get("failed_trial"),
                     "seconds": t.duration.total_seconds() if t.duration else None,
                     "scores": _recorded_scores(t.user_attrs.get("run_dir"))})
    return rows


def _recorded_scores(run_dir: str | None) -> dict:
    """The disentanglement scores and test bits/dim a trial's run recorded in its metrics.json."""
    path = Path(run_dir or "") / "metrics.json"
    try:
        data = json.loads(path.read_text()) if run_dir and path.is_file() else {}
    except ValueError:
        return {}
    scores = dict((data.get("disentanglement") or {}).get("scores") or {})
    if (data.get("test") or {}).get("test_bits_per_dim") is not None:
        scores["test_bits_per_dim"] = data["test"]["test_bits_per_dim"]
    return {k: v for k, v in scores.items() if isinstance(v, (int, float))}


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
def quantities(rows: list[dict], config: SweepConfig) -> list[str]:
    """What the β figure and table show: the objectives, then the metrics every trial recorded."""
    recorded = [METRIC_KEYS[m] for m in config.metrics if m in METRIC_KEYS]
    return list(dict.fromkeys([*config.objectives, *recorded]))


def _value(row: dict, quantity: str):
    return row["values"].get(quantity, row.get("scores", {}).get(quantity))


def ranged(config: SweepConfig) -> list[str]:
    """The parameters searched over a range (every trial has its own value of them)."""
    return [name for name, values in config.space.items() if is_range(values)]


def _series(rows: list[dict], x: str, quantity: str, config: SweepConfig) -> dict[str, list[tuple]]:
    """Per setting of the listed parameters other than β and the seed: (x, mean, s.d., seeds) over the seeds. A
    ranged parameter makes no lines of its own: each of its values is one trial's."""
    groups: dict[str, dict[float, list[float]]] = {}
    excluded = {*GROUPING_EXCLUDES, *ranged(config)}
    for r in _complete(rows):
        value = _value(r, quantity)
        if r[x] is None or r["duplicate_of"] is not None or value is None:
            continue
        label = ", ".join(f"{k}={v}" for k, v in r["params"].items() if k not in excluded) or "all trials"
        groups.setdefault(label, {}).setdefault(r[x], []).append(value)
    return {label: [(xv, statistics.fmean(vs), statistics.stdev(vs) if len(vs) > 1 else 0.0, len(vs))
                    for xv, vs in sorted(points.items())] for label, points in groups.items()}


def beta_figure(rows: list[dict], config: SweepConfig, path: Path) -> Path:
    from matplotlib.figure import Figure

    shown = quantities(rows, config)
    fig = Figure(figsize=(11, 3.4 * len(shown)), layout="constrained")
    axes = fig.subplots(len(shown), 2, squeeze=False)
    labels = {"beta": "β (weight of the KL term)", "beta_norm": "β_norm = β·M/N (M latent units, N = 3·H·W)"}
    for i, quantity in enumerate(shown):
        for j, x in enumerate(BETA_PARAMS):
            ax = axes[i][j]
            series = _series(rows, x, quantity, config)
            for k, (label, points) in enumerate(series.items()):
                xs, means, sds, _ = zip(*points)
                ax.errorbar(xs, means, yerr=sds, fmt="o-", capsize=3, label=label if k < 10 else None)
            _log_x(ax, sorted({p[0] for s in series.values() for p in s}))
            ax.set_title(f"{quantity} against {'β' if x == 'beta' else 'β_norm'}")
            ax.set_xlabel(labels[x])
            ax.set_ylabel(quantity)
            ax.grid(alpha=0.3)
            if len(series) > 1:
                ax.legend(fontsize=7)
    seeds = len(config.space.get("seed", [0]))
    fig.suptitle(f"sweep {config.study}: against β ({len(_complete(rows))} complete trials; mean ± s.d. over "
                 f"{seeds} seed{'s' if seeds > 1 else ''})")
    fig.savefig(path, dpi=100, facecolor="white")
    return path


def beta_choice(rows: list[dict], config: SweepConfig) -> dict | None:
    """The β the first objective picks, by the stated rule, per setting of the other swept parameters."""
    objective, direction = config.objectives[0], config.directions[0]
    series = _series(rows, "beta", objective, config)
    if not series:
        return None
    rule = (f"the β whose mean {objective} over the seeds is the {'highest' if direction == 'maximize' else 'lowest'}"
            "; the spread is one standard deviation over the seeds")
    picks = {}
    for label, points in series.items():
        best = max(points, key=lambda p: _sign(direction) * p[1])
        first = points[0]
        picks[label] = {"beta": best[0], "mean": best[1], "sd": best[2], "seeds": best[3], "shape": _shape(points, direction),
                        "smallest_beta": first[0], "margin_over_smallest": _sign(direction) * (best[1] - first[1]),
                        "beats_smallest_by_two_spreads": _sign(direction) * (best[1] - first[1]) > 2 * max(best[2], first[2])
                        if best is not first else False}
    return {"objective": objective, "rule": rule, "picks": picks}


def _shape(points: list[tuple], direction: str) -> str:
    """An inverted U when the best β lies inside the range and both ends are worse (for a maximised objective)."""
    if len(points) < 3:
        return "too few β values to tell"
    means = [_sign(direction) * p[1] for p in points]
    best = means.index(max(means))
    if 0 < best < len(means) - 1:
        return "inverted U" if direction == "maximize" else "U"
    return "best at the largest β" if best == len(means) - 1 else "best at the smallest β"


def _log_x(ax, xs: list[float]) -> None:
    """β values are powers of two and the like: a log axis, ticked at the values swept."""
    if not xs or xs[0] <= 0:
        return
    ax.set_xscale("log")
    if len(xs) <= 8:  # more (a ranged β) would overlap: the log axis's own ticks then
        ax.set_xticks(xs, [f"{x:.3g}" for x in xs])
        ax.minorticks_off()


def ranges_figure(rows: list[dict], config: SweepConfig, path: Path) -> Path:
    """Each objective and recorded metric against each ranged parameter: one point per complete trial (Optuna's
    slice plot), on a log axis where the range was searched on one."""
    from matplotlib.figure import Figure

    shown, names = quantities(rows, config), ranged(config)
    fig = Figure(figsize=(4.2 * len(names), 3.2 * len(shown)), layout="constrained")
    axes = fig.subplots(len(shown), len(names), squeeze=False)
    done = [r for r in _complete(rows) if r["duplicate_of"] is None]
    for i, quantity in enumerate(shown):
        for j, name in enumerate(names):
            points = [(r["params"][name], _value(r, quantity)) for r in done
                      if name in r["params"] and _value(r, quantity) is not None]
            ax = axes[i][j]
            ax.scatter([x for x, _ in points], [y for _, y in points], c=range(len(points)), cmap="viridis", s=18)
            _range_axis(ax, config.space[name])
            ax.set_xlabel(f"{name} (searched over {config.space[name]['low']:g}..{config.space[name]['high']:g})")
            ax.set_ylabel(quantity)
            ax.grid(alpha=0.3)
    fig.suptitle(f"sweep {config.study}: one point per complete trial, coloured by trial order ({len(done)} trials)")
    fig.savefig(path, dpi=100, facecolor="white")
    return path


def _range_axis(ax, bounds: dict) -> None:
    """The x axis spans the whole range searched, so that where the trials went shows."""
    from matplotlib.ticker import MaxNLocator, NullFormatter

    if bounds["log"]:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap on a short range
    elif bounds["type"] == "int":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    pad = (bounds["high"] / bounds["low"]) ** 0.03 if bounds["log"] else 0.03 * (bounds["high"] - bounds["low"])
    ax.set_xlim(*((bounds["low"] / pad, bounds["high"] * pad) if bounds["log"]
                  else (bounds["low"] - pad, bounds["high"] + pad)))


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
              "best": best, "files": files, "beta_choice": beta_choice(rows, config),
              "by_beta": {q: _series(rows, "beta", q, config) for q in quantities(rows, config)}}
    if ranged(config):
        files["ranges"] = str(ranges_figure(rows, config, root / "objective_vs_ranges.png"))
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
                Section("choice", "Which β", _choice_html(report)),
                Section("beta", "Against β and β_norm", img_tag(report["files"]["figure"], "objective against beta")),
                Section("trials", "Trials", html_table(header, rows, raw_columns=[len(header) - 2]))]
    if "ranges" in report["files"]:
        sections.insert(3, Section("ranges", "Against the ranged settings",
                                   img_tag(report["files"]["ranges"], "objective against the ranged settings")))
    if "pareto" in report["files"]:
        sections.append(Section("pareto", "Pareto front", img_tag(report["files"]["pareto"], "Pareto front")))
    subtitle = (f"{', '.join(f'{o} ({d})' for o, d in zip(config.objectives, config.directions))} · "
                f"{config.sampler} sampler · {config.storage}")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_page(f"facevae sweep — {config.study}", subtitle, sections))
    tmp.replace(path)


def _choice_html(report: dict) -> str:
    from facevae.reporting.html import esc, html_table, note

    choice = report["beta_choice"]
    if not choice:
        return note("No complete trial has a β yet.")
    body = f"<p>Rule: {esc(choice['rule'])}.</p>"
    for label, pick in choice["picks"].items():
        verdict = ("more than twice the spread" if pick["beats_smallest_by_two_spreads"]
                   else "not by more than twice the spread")
        body += (f"<p><b>{esc(label)}</b>: β = {pick['beta']:g} ({esc(choice['objective'])} {pick['mean']:.4g} ± "
                 f"{pick['sd']:.2g} over {pick['seeds']} seed(s); shape: {esc(pick['shape'])}); it beats the smallest "
                 f"β = {pick['smallest_beta']:g} by {pick['margin_over_smallest']:.3g}, {verdict}.</p>")
    for quantity, series in report["by_beta"].items():
        rows = [(label, f"{x:g}", f"{mean:.4g} ± {sd:.2g}", n) for label, points in series.items()
                for x, mean, sd, n in points]
        body += f"<h3>{esc(quantity)}</h3>" + html_table(["setting", "β", "mean ± s.d.", "seeds"], rows)
    return body


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
    lines = [[str(r["number"]), r["state"].lower(), *[_short(r["params"].get(p, "")) for p in params],
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
