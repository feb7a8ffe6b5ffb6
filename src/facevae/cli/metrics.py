"""``facevae metrics``: the disentanglement suite of a trained run, stored in its metrics.json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    from facevae.cli import add_command, add_group_argument

    p = add_command(
        subparsers, "metrics", cmd_metrics,
        "disentanglement metrics of a run (β-VAE, FactorVAE, MIG, DCI, SAP, modularity)",
        "facevae metrics runs/demo/cvae --metrics mig,dci --n 2000",
        description="Score a finished run's encoder (posterior means) with the standard disentanglement "
        "metrics and write them into RUN/metrics.json under 'disentanglement'. Synthetic faces: β-VAE and "
        "FactorVAE scores on fresh faces from the renderer, MIG/DCI/SAP/modularity on the test split's codes "
        "against its factors. CelebA (no factors): the array metrics against the 40 attributes as weak labels. "
        "The defaults are the standard sizes (10,000 training and 5,000 evaluation points); they take minutes "
        "on a CPU, so --n 1000 is the quick look.",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="a finished run directory")
    p.add_argument("--metrics", default="all", help="all, or some of beta_vae,factor_vae,mig,dci,sap,modularity")
    p.add_argument("--n", type=int, default=10000, help="training points of every metric")
    p.add_argument("--n-eval", type=int, default=5000, help="evaluation points of every metric")
    p.add_argument("--batch-size", type=int, default=64, help="observations per batch of the sampling metrics")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    add_group_argument(p, "whose posterior means are scored")
    p.add_argument("--factors", choices=["uniform", "data"], default="uniform",
                   help="uniform: fresh observations from independent factors (the metrics' assumption); data: the "
                        "sampling metrics from the dataset's own prior, the array metrics on its test split")


def cmd_metrics(args: argparse.Namespace) -> int:
    from facevae.metrics.run import compute_disentanglement, format_disentanglement, parse_metric_names

    parse_metric_names(args.metrics)  # a typo fails before the model is loaded
    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    result = compute_disentanglement(args.run, args.metrics, n=args.n, n_eval=args.n_eval, seed=args.seed,
                                     batch_size=args.batch_size, group=args.group,
                                     factors=args.factors)
    print(json.dumps(result, indent=2) if args.json else format_disentanglement(result))
    if not args.json:
        print(f"\nwritten: {args.run / 'metrics.json'} ('disentanglement')")
    return 0
