"""One self-contained HTML page of a run: ``build_report(run_dir)`` → ``RUN/report.html``.

Everything is inside the file: figures are PNGs embedded as ``data:image/png;base64`` URIs, the
style sheet is inline, there is no script, no external font, nothing fetched from a network, so
the page renders offline and can be mailed or archived as one file.

The page is a list of sections, each made by a *section builder*: a function that takes the
:class:`ReportContext` and returns a :class:`Section` (or None to leave it out). ``SECTIONS`` is
the default list, in page order; add one with :func:`register_section` (or pass ``sections=`` to
:func:`build_report`)::

    from facevae.reporting.html import Section, register_section, html_table

    def probes_section(ctx):
        result = ctx.analysis("probes")          # RUN/analysis/probes.json, made if missing
        if result is None:
            return None
        return Section("probes", "Linear probes", html_table(["attribute", "accuracy"], rows))

    register_section(probes_section, after="dims_section")

Analysis a section needs is read from ``RUN/analysis/NAME.json`` when it is there and otherwise
computed on the fly by the producer registered in ``PRODUCERS`` (``register_producer``), unless
the report is built with ``generate=False``. A producer that fails leaves its section with a note
saying why; the rest of the page is still written.
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import io
import json
import math
import os
import platform
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import yaml

from facevae.analysis.dims import KL_THRESHOLD, shown_dims, target_notes, target_rows
from facevae.common.errors import FacevaeError, FileWriteError, RunError
from facevae.common.files import check_writable, file_in_the_way, make_dir, write_failure, write_text_atomic
from facevae.models.config import ModelConfig
from facevae.training.callbacks import read_metrics


# --- building blocks ---------------------------------------------------------------------------------
@dataclass
class Section:
    """One part of the page: an anchor id, a heading, and the HTML body under it."""

    id: str
    title: str
    body: str
    summary: str = ""  # a line for the table of contents


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def img_tag(source: bytes | str | os.PathLike, alt: str, caption: str | None = None, width: str | None = None) -> str:
    """A ``<figure>`` with the PNG (bytes or a file) embedded as base64, and an optional caption."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    style = f' style="max-width:{esc(width)}"' if width else ""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{png_data_uri(data)}" alt="{esc(alt)}"{style}>{cap}</figure>'


def figure_png(fig, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()


def fmt(value, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return "—" if value is None else ("yes" if value else "no")
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 10 ** -(digits - 1)):
            return f"{value:.{digits - 1}e}"
        return f"{value:,.{digits}g}" if abs(value) >= 1000 else f"{value:.{digits}g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v, digits) for v in value) if value else "[]"
    return str(value)


def html_table(header: Sequence[str], rows: Sequence[Sequence], cls: str = "", raw_columns: Sequence[int] = ()) -> str:
    """A table; cells are escaped and formatted, except those in ``raw_columns`` (already HTML)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            text = str(v) if i in raw_columns else esc(fmt(v))
            num = ' class="num"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            cells.append(f"<td{num}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    c = f' class="{esc(cls)}"' if cls else ""
    return f"<table{c}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def note(text: str, kind: str = "note") -> str:
    return f'<p class="{kind}">{esc(text)}</p>'


# --- analysis producers -----------------------------------------------------------------------------------
def _dims(run):
    from facevae.analysis.dims import evaluate_dims

    return evaluate_dims(run)


def _reconstruct(run):
    from facevae.analysis.reconstruct import reconstruct

    return reconstruct(run, n=16)


def _sample(run):
    from facevae.analysis.sample import sample

    return sample(run, n=32)


def _traverse(run):
    from facevae.analysis.traverse import traverse

    return traverse(run)


def _temperatures(run):
    from facevae.analysis.sample import temperature_sheet

    return temperature_sheet(run)


def _probe(run):
    from facevae.recognition.probe import probe_run

    return probe_run(run)


# name → (file under RUN/analysis, function(run) -> dict). Order matters: traversals read dims.json.
PRODUCERS: dict[str, tuple[str, Callable]] = {
    "dims": ("dims.json", _dims),
    "reconstruct": ("reconstruct.json", _reconstruct),
    "sample": ("sample.json", _sample),
    "temperatures": ("sample_temperatures.json", _temperatures),
    "traverse": ("traverse.json", _traverse),
    "probe": ("probe.json", _probe),
}


def register_producer(name: str, filename: str, func: Callable) -> None:
    """Make ``ctx.analysis(name)`` read ``RUN/analysis/filename`` or compute it with ``func(run)``."""
    PRODUCERS[name] = (filename, func)


@dataclass
class ReportContext:
    """What section builders read: the run's files, and its analysis (computed when missing)."""

    root: Path
    generate: bool = True
    regenerate: bool = False
    log: Callable[[str], None] = print
    problems: dict[str, str] = field(default_factory=dict)
    _run: object = None
    _cache: dict = field(default_factory=dict)

    @property
    def analysis_dir(self) -> Path:
        return self.root / "analysis"

    @property
    def config(self) -> dict:
        if "config" not in self._cache:
            self._cache["config"] = yaml.safe_load((self.root / "config.yaml").read_text()) or {}
        return self._cache["config"]

    @property
    def metrics(self) -> dict | None:
        if "metrics" not in self._cache:
            path = self.root / "metrics.json"
            self._cache["metrics"] = read_metrics(path) if path.is_file() else None
        return self._cache["metrics"]

    @property
    def run(self):
        """The opened run (model + data), loaded on first use."""
        if self._run is None:
            from facevae.training.rundir import open_run

            self._run = open_run(self.root)
        return self._run

    def analysis(self, name: str) -> dict | None:
        """``RUN/analysis/<file>`` of producer ``name``, computed when missing (and allowed); None if unavailable."""
        if name in self._cache:
            return self._cache[name]
        filename, func = PRODUCERS[name]
        path = self.analysis_dir / filename
        result = None
        if path.is_file() and not self.regenerate:
            try:
                result = json.loads(path.read_text())
            except ValueError as exc:
                self.problems[name] = f"{path} is not valid JSON ({exc})"
        if result is None and self.generate and name not in self.problems:
            self.log(f"report: computing {name} ...")
            try:
                result = func(self.run)
            except FileWriteError:
                raise  # the page could not be written either
            except OSError as exc:
                failure = write_failure(exc.filename or self.analysis_dir, exc)
                if failure is not None:
                    raise failure from None
                self.problems[name] = f"{type(exc).__name__}: {exc}"
                self.log(f"report: {name} failed: {exc}")
            except Exception as exc:  # noqa: BLE001 - one failed analysis must not sink the page
                if os.environ.get("FACEVAE_DEBUG"):
                    raise
                self.problems[name] = f"{type(exc).__name__}: {exc}"
                self.log(f"report: {name} failed: {exc}")
                result = None
        elif result is None and not self.generate and name not in self.problems:
            self.problems[name] = f"no {filename} under {self.analysis_dir} (run without --no-generate to compute it)"
        self._cache[name] = result
        return result

    def path(self, stored: str | os.PathLike | None) -> Path | None:
        """A file named in an analysis JSON, also when the run folder has moved since it was written."""
        if not stored:
            return None
        p = Path(stored)
        if p.is_file():
            return p
        parts = p.parts
        if "analysis" in parts:
            i = len(parts) - 1 - parts[::-1].index("analysis")
            candidate = self.analysis_dir.joinpath(*parts[i + 1:])
            if candidate.is_file():
                return candidate
        candidate = self.analysis_dir / p.name
        return candidate if candidate.is_file() else None

    def unavailable(self, name: str, what: str) -> str:
        reason = self.problems.get(name, "not available")
        return note(f"No {what}: {reason}.", "warn")


# --- sections ---------------------------------------------------------------------------------------------
def summary_section(ctx: ReportContext) -> Section:
    model, train = ctx.config.get("model", {}), ctx.config.get("train", {})
    items = [("run", str(ctx.root.resolve())), *([("note", train["note"])] if train.get("note") else []),
             ("model", f"{model.get('model')} · latent {model.get('latent_dim')} · width k={model.get('width')} · "
                       f"{model.get('image_size')}×{model.get('image_size')} · β={model.get('beta')}"
                       + (f" (β_norm {model['beta_norm']})" if model.get("beta_norm") else "")),
             ("condition", _condition_summary(model.get("condition_names") or [])),
             ("data", f"{train.get('data')} (split {train.get('split')})")]
    m = ctx.metrics or {}
    test = m.get("test") or {}
    if test:
        items.append(("test", f"ELBO {fmt(test.get('test_elbo'))} nats · {fmt(test.get('test_bits_per_dim'))} bits/dim"
                              + (f" · IWAE {fmt(test.get('test_bits_per_dim_iw'))} bits/dim"
                                 if test.get("test_bits_per_dim_iw") is not None else "")))
    if m.get("train_seconds") is not None:
        items.append(("training", f"{fmt(m.get('global_step'))} steps, {fmt(m['train_seconds'])} s, best epoch "
                                  f"{fmt(m.get('best_epoch'))}"))
    dims = ctx.analysis("dims")
    if dims:
        matched = ", ".join(f"{name} → z{d}" for name, d in dims.get("assignment", {}).items())
        items.append(("latent", f"{dims['active_units']} of {dims['latent_dim']} dimensions active"
                                + (f"; matched: {matched}" if matched else "")))
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in items)
    return Section("summary", "Summary", f'<table class="kv">{rows}</table>')


def _condition_summary(names: Sequence[str]) -> str:
    if not names:
        return "none (unconditional)"
    return f"{len(names)} attributes" + (f": {', '.join(names)}" if len(names) <= 10 else "")


def config_section(ctx: ReportContext) -> Section:
    parts = []
    for group in ("model", "train"):
        values = dict(ctx.config.get(group) or {})
        if group == "model" and "conditional" in values:
            # the field only switches a betavae; what a reader wants to know is whether the model is conditional
            values["conditional"] = ModelConfig.from_dict(values).is_conditional
        rows = []
        for key, value in values.items():
            if isinstance(value, list) and len(value) > 6:
                value = f"{len(value)}: " + ", ".join(map(str, value))
            rows.append((key, value))
        parts.append(f"<div><h3>{esc(group)}</h3>{html_table(['setting', 'value'], rows, 'kv')}</div>")
    body = f'<div class="cols">{"".join(parts)}</div><p class="muted">from {esc(ctx.root / "config.yaml")}</p>'
    return Section("config", "Configuration", body)


def read_curves(root: Path) -> dict[str, list[tuple[float, float]]]:
    """Series name → [(x, value)] from logs/csv/metrics.csv (x: step for *_step, epoch otherwise),
    falling back to metrics.json's per-epoch records."""
    points: dict[str, dict[float, float]] = {}
    path = root / "logs" / "csv" / "metrics.csv"
    if path.is_file():
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                for key, value in row.items():
                    if key in ("epoch", "step") or value in ("", None):
                        continue
                    try:
                        v = float(value)
                    except ValueError:
                        continue
                    x = row.get("step") if key.endswith("_step") or key.startswith("lr") else row.get("epoch")
                    if x in ("", None):
                        continue
                    # A resumed run re-logs the steps after its last checkpoint: the later row wins.
                    points.setdefault(key, {})[float(x)] = v
    series = {key: sorted(xy.items()) for key, xy in points.items()}
    if not series and (root / "metrics.json").is_file():
        data = json.loads((root / "metrics.json").read_text())
        for e in data.get("epochs", []):
            for key, value in e.items():
                if key not in ("epoch", "step") and isinstance(value, (int, float)):
                    series.setdefault(key, []).append((float(e["epoch"]), float(value)))
    return series


def curves_figure(series: dict[str, list[tuple[float, float]]]) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    panels = [
        ("loss per step (nats/image)", [("train_loss_step", "train loss")], "step"),
        ("bits/dim per epoch", [("train_bpd_epoch", "train"), ("train_bpd", "train"), ("val_bpd", "validation")], "epoch"),
        ("KL per epoch (nats/image)", [("train_kl_epoch", "train"), ("train_kl", "train"), ("val_kl", "validation")], "epoch"),
        ("validation ELBO per epoch (nats/image)", [("val_elbo", "validation ELBO")], "epoch"),
    ]
    panels = [(t, [(k, lbl) for k, lbl in keys if series.get(k)], x) for t, keys, x in panels]
    panels = [p for p in panels if p[1]]
    if not panels:
        return None
    fig = Figure(figsize=(4.2 * len(panels), 3.2), dpi=100, facecolor="white")
    seen_labels = set()
    for i, (title, keys, xlabel) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for key, label in keys:
            if (title, label) in seen_labels:  # train_bpd and train_bpd_epoch are the same curve
                continue
            seen_labels.add((title, label))
            xs, ys = zip(*series[key])
            ax.plot(xs, ys, marker="o" if len(xs) < 40 else None, ms=3, lw=1.3, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_png(fig)


def curves_section(ctx: ReportContext) -> Section:
    series = read_curves(ctx.root)
    png = curves_figure(series) if series else None
    if png is None:
        return Section("curves", "Training curves", note("No training logs (logs/csv/metrics.csv or metrics.json).", "warn"))
    source = "logs/csv/metrics.csv" if (ctx.root / "logs" / "csv" / "metrics.csv").is_file() else "metrics.json"
    return Section("curves", "Training curves", img_tag(png, "training curves", f"from {source}"))


TEST_METRIC_TEXT = {
    "test_elbo": "evidence lower bound, nats per image (higher is better)",
    "test_recon": "reconstruction term −E_q log p(x|z), nats per image",
    "test_kl": "KL(q(z|x) ‖ p(z)), nats per image",
    "test_bits_per_dim": "−ELBO / (N·ln 2): an upper bound on the negative log-likelihood, bits per sub-pixel",
    "test_log_px_iw": "importance-weighted log p(x) (Burda et al. 2016), nats per image",
    "test_bits_per_dim_iw": "the same in bits per sub-pixel (tighter than the ELBO's)",
    "iw_samples": "importance samples K per image",
    "iw_images": "images in the importance-weighted estimate",
    "test_images": "test images",
}


def metrics_section(ctx: ReportContext) -> Section:
    m = ctx.metrics
    if not m:
        return Section("metrics", "Test metrics", note("No metrics.json: the run has not finished.", "warn"))
    test = m.get("test") or {}
    rows = [(k, v, TEST_METRIC_TEXT.get(k, "")) for k, v in test.items()]
    rows += [(k, m.get(k), text) for k, text in (("best_epoch", "epoch of the best validation ELBO"),
                                                 ("best_val_elbo", "best validation ELBO, nats per image"),
                                                 ("global_step", "optimiser steps"),
                                                 ("train_seconds", "training wall time, seconds"))
             if m.get(k) is not None]
    recon = ctx.analysis("reconstruct")
    if recon and recon.get("mean"):
        mean = recon["mean"]
        rows += [(f"reconstruction {k}", v, f"mean over the {recon.get('n')} reconstructed test images")
                 for k, v in mean.items()]
    return Section("metrics", "Test metrics", html_table(["metric", "value", "meaning"], rows))


def reconstructions_section(ctx: ReportContext) -> Section:
    result = ctx.analysis("reconstruct")
    png = ctx.path(result.get("png")) if result else None
    if png is None:
        return Section("reconstructions", "Reconstructions", ctx.unavailable("reconstruct", "reconstructions"))
    return Section("reconstructions", "Reconstructions",
                   img_tag(png, "reconstructions", "test images (rows of originals) above their reconstructions "
                           "from the posterior mean"))


def samples_section(ctx: ReportContext) -> Section:
    result = ctx.analysis("sample")
    png = ctx.path(result.get("png")) if result else None
    if png is None:
        return Section("samples", "Samples", ctx.unavailable("sample", "samples"))
    body = img_tag(png, "samples", f"{result.get('n')} samples, z ~ N(0, {result.get('temperature')}²·I)"
                   + ("; conditions are attribute rows of random test images" if result.get("conditional") else ""))
    compare = ctx.path(result.get("compare_png"))
    if compare is not None:
        body += img_tag(compare, "samples with attributes flipped")
    temperatures = ctx.analysis("temperatures")
    sheet = ctx.path(temperatures.get("png")) if temperatures else None
    if sheet is not None:
        body += img_tag(sheet, "samples at several temperatures", "the same draws at each temperature T (rows)")
    return Section("samples", "Samples", body)


def dims_section(ctx: ReportContext) -> Section:
    result = ctx.analysis("dims")
    if not result:
        return Section("dims", "Latent dimensions", ctx.unavailable("dims", "dimension evaluation"))
    kind = result["targets"][:-1]
    method = ("normalised mutual information I(z_d; v)/H(v), posterior mean in "
              f"{result.get('bins')} quantile bins" if result["targets"] == "factors"
              else "|2·AUC − 1| of the posterior mean as a score for the attribute (rank based)")
    intro = (f"<p><b>{result['active_units']}</b> of {result['latent_dim']} dimensions are active "
             f"(variance of the posterior mean over the test set &gt; {result['variance_threshold']:g}, Burda et al. 2016); "
             f"<b>{result['active_units_kl']}</b> have a mean KL above {result['kl_threshold']:g} nats. "
             f"Total KL {fmt(result['total_kl'])} nats per image. Each dimension is named after the {esc(kind)} "
             f"it scores highest on; score: {esc(method)}, on {result['images']} test images.</p>")
    active = shown_dims(result)
    assigned = {dim: name for name, dim in result.get("assignment", {}).items()}
    rows = []
    for d in active:
        ru = d.get("runner_up") or {}
        name = esc(d["name"]) + (" ✓" if assigned.get(d["dim"]) == d["name"] else "")
        rows.append((f"z{d['dim']}", d["kl"], d.get("variance"), name, d["score"], ru.get("name", ""), ru.get("score")))
    table = html_table(["dim", "KL (nats)", "Var[μ]", f"tracks {kind}", "score", "runner-up", "score"],
                       rows, "dims", raw_columns=(3,))
    inactive = len(result["dims"]) - len(active)
    if inactive:
        table += note(f"{inactive} inactive dimensions (posterior ≈ prior) not listed; all are in dims.json.", "muted")
    match_rows = [(r["name"], f"z{r['dim']}", r["score"], "" if r.get("second_dim") is None else f"z{r['second_dim']}",
                   r["second_score"], r["margin"], "; ".join(target_notes(result, r)))
                  for r in sorted(target_rows(result), key=lambda r: -(r["score"] or 0))]
    matching = (f"<h3>Each {esc(kind)}'s best dimension</h3>"
                f"<p class=\"muted\">among the {esc(result.get('matching_among', 'dimensions'))}; margin = best score − "
                "second-best score.</p>"
                + html_table([kind, "best dim", "score", "2nd dim", "score", "margin", "note"], match_rows, "dims"))
    figure = ""
    png = ctx.path((result.get("files") or {}).get("figure")) or ctx.path(ctx.analysis_dir / "dims.png")
    if png is not None:
        figure = img_tag(png, "KL per dimension and score heatmap",
                         f"left: KL per dimension (grey: inactive); right: score of each {kind} for each dimension "
                         "(dot: the dimension's best)")
    return Section("dims", "Latent dimensions", intro + _groups_table(result) + table + matching + figure,
                   summary=f"{result['active_units']} active")


def _groups_table(result: dict) -> str:
    """A hierarchical model's latent groups: KL per group (the table below is the analysed group's units)."""
    groups = result.get("groups") or []
    if len(groups) < 2:
        return ""
    rows = [(g["name"] + (" (analysed below)" if g["name"] == result.get("group") else ""), "×".join(map(str, g["shape"])),
             g["units"], g["kl"], g["active_units_kl"]) for g in groups]
    return ("<h3>Latent groups, top first</h3>"
            + html_table(["group", "shape (channels×H×W)", "units", "KL (nats)", f"units with KL > {KL_THRESHOLD:g}"],
                         rows, "dims"))


MAX_TRAVERSAL_SHEETS = 12


def traversals_section(ctx: ReportContext) -> Section:
    ctx.analysis("dims")  # traversals are labelled with the names in dims.json: make it first
    result = ctx.analysis("traverse")
    if not result:
        return Section("traversals", "Latent traversals", ctx.unavailable("traverse", "traversals"))
    body = []
    overview = ctx.path((result.get("overview") or {}).get("png"))
    if overview is not None:
        body.append(img_tag(overview, "traversal overview",
                            "every dimension, most active first: one test face with z_d swept over the prior"))
    entries = sorted(result.get("dims", []), key=lambda e: -(e.get("kl") or 0))
    shown = 0
    for e in entries:
        png = ctx.path(e.get("png"))
        if png is None or shown >= MAX_TRAVERSAL_SHEETS:
            continue
        body.append(f"<h3>{esc(e.get('label') or ('dim ' + str(e.get('dim'))))}</h3>")
        body.append(img_tag(png, f"traversal of dimension {e.get('dim')}"))
        shown += 1
    if len(entries) > shown:
        body.append(note(f"{len(entries) - shown} more traversal sheets under {ctx.analysis_dir / 'traverse'}.", "muted"))
    return Section("traversals", "Latent traversals", "".join(body) or note("No traversal figures found.", "warn"))


DISENTANGLEMENT_TEXT = {
    "beta_vae": "β-VAE score (Higgins et al. 2017): accuracy of predicting the fixed factor",
    "factor_vae": "FactorVAE score (Kim & Mnih 2018): majority-vote accuracy",
    "mig": "mutual information gap (Chen et al. 2018)",
    "dci": "DCI (Eastwood & Williams 2018)",
    "sap": "SAP (Kumar et al. 2018)",
    "modularity": "modularity (Ridgeway & Mozer 2018)",
    "explicitness": "explicitness (Ridgeway & Mozer 2018)",
}


def scores_figure(scores: dict[str, float | None]) -> bytes | None:
    """Horizontal bars of the disentanglement scores (all on [0, 1]), one colour per metric family."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    items = [(name, value) for name, value in scores.items() if value is not None]
    if not items:
        return None
    family = [next((k for k in DISENTANGLEMENT_TEXT if name.startswith(k)), name) for name, _ in items]
    order, colours = list(dict.fromkeys(family)), matplotlib.colormaps["tab10"]
    fig = Figure(figsize=(6.4, 0.32 * len(items) + 1.0), dpi=100, facecolor="white")
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, value) in enumerate(items):
        ax.barh(i, value, color=colours(order.index(family[i]) % 10))
        ax.text(min(value + 0.01, 0.9), i, f"{value:.3f}", va="center", fontsize=8)
    ax.set_yticks(range(len(items)), [n for n, _ in items], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("score (1 = disentangled / informative)", fontsize=9)
    ax.set_title("disentanglement metrics of this run", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return figure_png(fig)


def disentanglement_section(ctx: ReportContext) -> Section | None:
    # Read, never computed here: the standard sample sizes take minutes (`facevae metrics RUN` writes them).
    result = (ctx.metrics or {}).get("disentanglement")
    if not result:
        return Section("disentanglement", "Disentanglement metrics",
                       note("Not computed yet: run `facevae metrics RUN` and rebuild the report.", "warn"))
    rows = [[name, fmt(value, 3), next((t for k, t in DISENTANGLEMENT_TEXT.items() if name.startswith(k)), "")]
            for name, value in result["scores"].items()]
    settings = result.get("settings", {})
    against = ("the ground-truth factors" if result.get("labels") == "factors"
               else "the binary attributes as weak labels")
    body = note(f"Scored against {against}; {settings.get('n', '?')} training and {settings.get('n_eval', '?')} "
                "evaluation points (disentanglement_lib's definitions; its defaults are 10,000 and 5,000).")
    png = scores_figure(result["scores"])
    if png is not None:
        body += img_tag(png, "disentanglement scores")
    body += html_table(["metric", "score", "definition"], rows)
    headline = result["scores"].get("mig")
    return Section("disentanglement", "Disentanglement metrics", body,
                   summary="" if headline is None else f"MIG {headline:.3f}")


def probe_section(ctx: ReportContext) -> Section:
    result = ctx.analysis("probe")
    if not result:
        return Section("probe", "Attribute probes", ctx.unavailable("probe", "attribute probes"))
    rows = [[r["attribute"] + (" (in the condition)" if r.get("in_condition") else ""), fmt(r["positive_rate"], 3),
             fmt(r["accuracy"], 3), fmt(r["majority"], 3), fmt(r["balanced_accuracy"], 3), fmt(r["roc_auc"], 3)]
            for r in result["attributes"]]
    mean = result["mean"]
    rows.append(["mean", "", fmt(mean["accuracy"], 3), fmt(mean["majority"], 3), fmt(mean["balanced_accuracy"], 3),
                 fmt(mean["roc_auc"], 3)])
    body = note("Logistic-regression probes from the posterior means to each attribute, fitted on the training "
                "split, thresholds chosen on the validation split, scored on the test split. Attributes in a "
                "conditional model's condition need not be in its latents, so their probes may sit near the "
                "majority-class baseline.")
    png = ctx.path(result.get("figure"))
    if png is not None:
        body += img_tag(png, "probe accuracy per attribute")
    body += html_table(["attribute", "positives", "accuracy", "majority", "balanced acc.", "ROC AUC"], rows)
    return Section("probe", "Attribute probes", body, summary=f"mean probe accuracy {mean['accuracy']:.3f}")


SectionBuilder = Callable[[ReportContext], "Section | None"]

SECTIONS: list[SectionBuilder] = [
    summary_section,
    config_section,
    curves_section,
    metrics_section,
    reconstructions_section,
    samples_section,
    dims_section,
    traversals_section,
    disentanglement_section,
    probe_section,
]


def register_section(builder: SectionBuilder, *, after: str | None = None, before: str | None = None) -> None:
    """Add a section builder to the default page, at the end or next to another builder (by name)."""
    names = [b.__name__ for b in SECTIONS]
    if builder.__name__ in names:
        SECTIONS.pop(names.index(builder.__name__))
        names = [b.__name__ for b in SECTIONS]
    anchor = after or before
    if anchor is None:
        SECTIONS.append(builder)
        return
    if anchor not in names:
        raise ValueError(f"no report section {anchor!r}; there are {', '.join(names)}")
    SECTIONS.insert(names.index(anchor) + (1 if after else 0), builder)


# --- the page ---------------------------------------------------------------------------------------------
STYLE = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif;
       margin: 0; color: #1d2330; background: #f4f5f7; line-height: 1.45; }
header { background: #1f3b5c; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px 0; font-size: 24px; }
header p { margin: 0; opacity: .85; font-size: 13px; }
nav { padding: 8px 32px; background: #e3e8ef; font-size: 14px; position: sticky; top: 0; z-index: 1; }
nav a { margin-right: 16px; color: #1f3b5c; text-decoration: none; }
main { padding: 8px 32px 40px 32px; max-width: 1500px; }
section { background: #fff; border-radius: 6px; padding: 12px 20px 16px 20px; margin: 16px 0;
          box-shadow: 0 1px 2px rgba(0,0,0,.08); overflow-x: auto; }
h2 { margin: 4px 0 10px 0; font-size: 20px; color: #1f3b5c; }
h3 { margin: 14px 0 6px 0; font-size: 15px; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
th, td { border-bottom: 1px solid #e2e5ea; padding: 3px 10px; text-align: left; vertical-align: top; }
thead th { background: #f0f2f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.kv th { font-weight: 600; white-space: nowrap; }
.cols { display: flex; flex-wrap: wrap; gap: 28px; }
figure { margin: 10px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e2e5ea; image-rendering: pixelated; }
figcaption { font-size: 12px; color: #5a6270; }
.muted { color: #6b7280; font-size: 12px; }
.warn { color: #8a4b00; background: #fff4e0; padding: 6px 10px; border-radius: 4px; }
footer { color: #6b7280; font-size: 12px; padding: 0 32px 24px 32px; }
"""


def render_page(title: str, subtitle: str, sections: Sequence[Section], footer: str = "") -> str:
    nav = "".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{esc(s.id)}"><h2>{esc(s.title)}</h2>{s.body}</section>' for s in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
            f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header><nav>{nav}</nav>"
            f"<main>{body}</main><footer>{esc(footer)}</footer></body></html>\n")


def build_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, generate: bool = True,
                 regenerate: bool = False, sections: Sequence[SectionBuilder] | None = None,
                 log: Callable[[str], None] = print) -> Path:
    """Write the run's HTML report (default ``RUN/report.html``) and return its path.

    ``generate``: compute missing analysis (dims, reconstructions, samples, traversals);
    ``regenerate``: recompute it even where it exists; ``sections``: the builders to use
    (default :data:`SECTIONS`).
    """
    from facevae import __version__

    root = Path(run_dir)
    check_run_files(root, generate)
    path = Path(out) if out is not None else root / "report.html"
    check_page_path(path)
    ctx = ReportContext(root, generate=generate, regenerate=regenerate, log=log)
    built: list[Section] = []
    for builder in (SECTIONS if sections is None else sections):
        try:
            section = builder(ctx)
        except FileWriteError:
            raise  # the page could not be written either
        except Exception as exc:  # noqa: BLE001 - a broken section becomes a note, not a lost report
            if os.environ.get("FACEVAE_DEBUG"):
                raise
            name = builder.__name__.removesuffix("_section")
            log(f"report: section {name} failed: {exc}")
            section = Section(name, name.replace("_", " ").capitalize(),
                              note(f"This section could not be built: {type(exc).__name__}: {exc}", "warn")
                              + f"<pre class=\"muted\">{esc(traceback.format_exc(limit=3))}</pre>")
        if section is not None:
            built.append(section)
    model = ctx.config.get("model", {})
    title = f"facevae report — {root.resolve().name}"
    subtitle = (f"{model.get('model')} · latent {model.get('latent_dim')} · "
                f"{model.get('image_size')}×{model.get('image_size')} · {root.resolve()}")
    stamp = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    footer = (f"made by facevae {__version__} on {stamp} (Python {sys.version.split()[0]}, {platform.machine()}); "
              "self-contained: every figure is embedded in this file.")
    page = render_page(title, subtitle, built, footer)
    return write_text_atomic(path, page, fix=OUT_FIX)


OUT_FIX = "give --out a writable place"


def check_page_path(path: Path) -> None:
    """A one-line error now, not after minutes of analysis, for a page that could not be written at ``path``."""
    if path.is_dir():
        raise FacevaeError(f"--out {path}: is a folder; give the page's file name, e.g. --out {path / 'report.html'}")
    blocking = file_in_the_way(path.parent)
    if blocking is not None:
        raise FacevaeError(f"--out {path}: {blocking} is a file, so no folder can be made there; {OUT_FIX}")
    try:
        make_dir(path.parent, fix=OUT_FIX)
    except FileWriteError:
        raise
    except OSError as exc:
        raise FacevaeError(f"--out {path}: its folder cannot be made ({exc.strerror}); {OUT_FIX}") from None
    check_writable(path, fix=OUT_FIX)


def check_run_files(root: Path, generate: bool) -> None:
    """A one-line RunError, before anything is computed, for a run directory whose files are damaged: the
    sections would each fail on it, and the page would hide why."""
    from facevae.training.config import RunConfig
    from facevae.training.run import load

    if not (root / "config.yaml").is_file():
        raise RunError(f"{root}: not a run directory (no config.yaml); train one with `facevae train`")
    RunConfig.load(root / "config.yaml")
    if (root / "metrics.json").is_file():
        read_metrics(root / "metrics.json")
    if generate and (root / "model.safetensors").is_file():
        load(root)
