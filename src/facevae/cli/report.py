"""``facevae dims|report``: name the latent dimensions and put a run on one HTML page."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    from facevae.cli import add_command, add_group_argument

    p = add_command(
        subparsers, "dims", cmd_dims,
        "which latent dimensions are active, and which factor/attribute each one tracks",
        "facevae dims runs/demo/cvae",
        description="Dimension evaluation on the test split: KL per dimension, active units (Burda et al.'s "
        "Var[mu] > 0.01, and KL > 0.01 nats), and for every dimension the ground-truth factor (synthetic data) "
        "or attribute (CelebA) it tracks best, with its score (normalised mutual information for factors, "
        "|2·AUC−1| for binary attributes) and the runner-up; then each factor's best dimension and its margin "
        "over the second best. Writes RUN/analysis/dims.json, dims.csv and dims.png and prints the table.",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="a finished run directory")
    p.add_argument("--targets", choices=["auto", "factors", "attributes"], default="auto",
                   help="what to name dimensions after (auto: factors when the data has them)")
    p.add_argument("--bins", type=int, default=20, help="quantile bins of each dimension for the mutual information")
    p.add_argument("--all", action="store_true", help="list inactive dimensions too")
    p.add_argument("--no-figure", action="store_true", help="skip dims.png")
    add_group_argument(p, "to evaluate")

    r = add_command(
        subparsers, "report", cmd_report,
        "one self-contained HTML page of a run (config, curves, metrics, figures, dimension table)",
        "facevae report runs/demo/cvae --out runs/demo/report.html",
        description="Write one HTML file that needs nothing else (figures embedded as base64 PNG, no "
        "external scripts, styles or fonts): the run's config, training curves, test metrics, "
        "reconstructions, samples, the named latent traversals and the dimension table. Analysis that is "
        "missing under RUN/analysis (dims, reconstructions, samples, traversals) is computed first, "
        "unless --no-generate.",
    )
    r.add_argument("run", type=Path, metavar="RUN", help="a finished run directory")
    r.add_argument("--out", type=Path, default=None, help="the HTML file (default RUN/report.html)")
    r.add_argument("--no-generate", action="store_true", help="use only the analysis already on disk")
    r.add_argument("--regenerate", action="store_true", help="recompute the analysis even where it exists")


def cmd_dims(args: argparse.Namespace) -> int:
    from facevae.analysis.dims import evaluate_dims, format_dims_table
    from facevae.training.rundir import open_run

    if args.bins < 2:
        raise ValueError(f"--bins must be at least 2, got {args.bins}")
    result = evaluate_dims(open_run(args.run), targets=args.targets, group=args.group, bins=args.bins,
                           figure=not args.no_figure)
    print(format_dims_table(result, all_dims=args.all))
    files = result["files"]
    print(f"\nwritten: {files['json']}, {files['csv']}" + (f", {files['figure']}" if "figure" in files else ""))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from facevae.reporting.html import build_report

    path = build_report(args.run, out=args.out, generate=not args.no_generate, regenerate=args.regenerate)
    print(f"report: {path}")
    return 0
