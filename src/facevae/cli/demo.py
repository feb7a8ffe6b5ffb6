"""``facevae demo``: the pipeline of :mod:`facevae.demo`, from nothing to the HTML report."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from facevae.demo import DEMO, QUICK, DemoSettings, run_demo


def register(subparsers) -> None:
    from facevae.cli import add_command

    p = add_command(
        subparsers, "demo", cmd_demo,
        "the whole pipeline on synthetic faces: render, explore, split, train a CVAE, analyse, report",
        "facevae demo --out runs/demo",
        description="From nothing to an HTML report on the built-in synthetic faces, in a few minutes on 2 CPU "
        "cores: render faces with known generative factors, explore their attributes, split them (stratified), "
        "train a conditional VAE on all their attributes, name its latent dimensions (dims), reconstruct, "
        "sample and traverse, and write OUT/report.html. The dimension table shows which latent dimension took "
        "each factor the condition does not give (rotation, face width, hair volume, background, skin tone). "
        "OUT is cleared of a previous demo's data/, cvae/ and report first.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="where everything goes")
    p.add_argument("--quick", action="store_true", help="a tiny, fast version (600 faces, 2 epochs): a smoke test")
    p.add_argument("--n", type=int, default=None, help=f"number of synthetic faces (default {DEMO.n}, quick {QUICK.n})")
    p.add_argument("--epochs", type=int, default=None, help=f"training epochs (default {DEMO.epochs})")
    p.add_argument("--max-time", default=None, help=f"training wall-clock cap DD:HH:MM:SS (default {DEMO.max_time})")
    p.add_argument("--latent-dim", type=int, default=None, help=f"latent size (default {DEMO.latent_dim})")
    p.add_argument("--beta", type=float, default=None, help=f"KL weight β (default {DEMO.beta:g})")
    p.add_argument("--seed", type=int, default=0)


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    base = QUICK if args.quick else DEMO
    changes = {k: v for k, v in (("n", args.n), ("epochs", args.epochs), ("max_time", args.max_time),
                                 ("latent_dim", args.latent_dim), ("beta", args.beta)) if v is not None}
    changes["seed"] = args.seed
    for key in ("n", "epochs", "latent_dim"):
        if changes.get(key, 1) < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be at least 1, got {changes[key]}")
    if changes.get("n", base.n) < 100:
        raise ValueError("--n must be at least 100: the split needs test images to analyse")
    if changes.get("beta", 1.0) <= 0:
        raise ValueError(f"--beta must be > 0, got {changes['beta']}")
    return replace(base, **changes)


def cmd_demo(args: argparse.Namespace) -> int:
    result = run_demo(args.out, settings_from_args(args))
    print(f"report: {result['report']}")
    return 0
