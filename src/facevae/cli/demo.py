"""``facevae demo``: the whole pipeline on built-in synthetic faces, from nothing to the HTML report.

Stages: render synthetic faces → explore their attributes → stratified split → train the default
conditional VAE (conditioned on all the data's attributes) → analyse it (dimension table,
reconstructions, samples, traversals) → report. The defaults (``DEMO``) finish in a few minutes on
2 CPU cores; ``--quick`` (``QUICK``) is a tiny version for smoke tests. :func:`run_demo` is the same
thing as a function (the tests call it with their own settings).
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class DemoSettings:
    """What the demo renders and trains (see ``DEMO`` and ``QUICK``)."""

    n: int = 6000  # synthetic faces (64x64), split 0.8/0.1/0.1
    image_size: int = 32  # the model's input side (faces are rendered at 64 and resized)
    latent_dim: int = 16
    width: int = 1  # channel multiplier k
    beta: float = 32.0
    likelihood: str = "gaussian"
    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    max_time: str | None = "00:00:05:30"  # a wall-clock cap on training (DD:HH:MM:SS)
    kl_warmup_steps: int = 0
    seed: int = 0
    faces_size: int = 64  # rendered image side
    metric_n: int = 1000  # training points of each disentanglement metric (the standard 10,000 takes minutes)


DEMO = DemoSettings()
QUICK = replace(DEMO, n=600, latent_dim=8, epochs=2, max_time="00:00:02:00")


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


def run_demo(out: str | Path, settings: DemoSettings = DEMO, log: Callable[[str], None] = print,
             progress: bool = True) -> dict:
    """Run every stage into ``out``; return the paths written, the dims result and the stage timings."""
    from facevae.analysis.dims import evaluate_dims, format_dims_table
    from facevae.analysis.run import open_run
    from facevae.data.explore import explore, format_summary
    from facevae.data.splits import format_distribution_check, split_dataset
    from facevae.data.synthetic import write_synthetic_packed
    from facevae.models.config import ModelConfig
    from facevae.reporting.grids import show_dataset
    from facevae.reporting.html import build_report
    from facevae.training.config import RunConfig, TrainConfig
    from facevae.training.run import train

    out = Path(out)
    s = settings
    data_dir, run_dir, report_path = out / "data", out / "cvae", out / "report.html"
    for old in (data_dir, run_dir, out / "explore"):  # a demo always starts from nothing
        if old.exists():
            shutil.rmtree(old)
    for old in (report_path, out / "faces.png"):
        old.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    steps = 8

    def stage(i: int, text: str):
        log(f"[{i}/{steps}] {text}")
        return time.perf_counter()

    def done(name: str, t0: float):
        timings[name] = round(time.perf_counter() - t0, 1)
        log(f"      ({timings[name]:.1f} s)")

    t = stage(1, f"rendering {s.n} synthetic faces ({s.faces_size}x{s.faces_size})")
    dataset = write_synthetic_packed(data_dir, s.n, size=s.faces_size, seed=s.seed, progress=progress)
    grid = show_dataset(dataset, out / "faces.png", n=32, seed=s.seed)
    log(f"      {dataset}; examples: {grid}")
    done("render", t)

    t = stage(2, "exploring the attributes")
    summary = explore(dataset, out / "explore")
    log(format_summary(summary))
    done("explore", t)

    t = stage(3, "stratified split 0.8/0.1/0.1")
    split, report = split_dataset(dataset, "stratified", (0.8, 0.1, 0.1), s.seed)
    log(format_distribution_check(report))
    done("split", t)

    t = stage(4, f"training a conditional VAE on all {len(dataset.attribute_names)} attributes "
                 f"(latent {s.latent_dim}, β={s.beta:g}, {s.image_size}x{s.image_size}, up to {s.epochs} epochs"
                 + (f" or {s.max_time}" if s.max_time else "") + f") into {run_dir}")
    config = RunConfig(
        ModelConfig(model="cvae", latent_dim=s.latent_dim, width=s.width, image_size=s.image_size,
                    condition_names=list(dataset.attribute_names), beta=s.beta, likelihood=s.likelihood,
                    kl_warmup_steps=s.kl_warmup_steps),
        TrainConfig(data=str(data_dir), split=split, run_dir=str(run_dir), epochs=s.epochs, patience=0,
                    batch_size=s.batch_size, lr=s.lr, seed=s.seed, max_time=s.max_time, eval_k=16,
                    eval_batches=2, progress=progress, checkpoint_every_steps=0),
    )
    metrics = train(config)
    test = metrics.get("test", {})
    log(f"      best epoch {metrics.get('best_epoch')}: test ELBO {test.get('test_elbo', float('nan')):.1f} nats, "
        f"{test.get('test_bits_per_dim', float('nan')):.3f} bits/dim")
    done("train", t)

    t = stage(5, "naming the latent dimensions (dims)")
    run = open_run(run_dir)
    dims = evaluate_dims(run)
    log(format_dims_table(dims))
    done("dims", t)

    t = stage(6, "reconstructions, samples, traversals, attribute probes")
    from facevae.analysis.reconstruct import reconstruct
    from facevae.analysis.sample import sample
    from facevae.analysis.traverse import traverse
    from facevae.recognition.probe import probe_run

    analysis = {"reconstruct": reconstruct(run, n=16), "sample": sample(run, n=32), "traverse": traverse(run),
                "probe": probe_run(run)}
    log(f"      mean probe accuracy {analysis['probe']['mean']['accuracy']:.3f} "
        f"(majority baseline {analysis['probe']['mean']['majority']:.3f})")
    log(f"      {run.figures}")
    done("analyse", t)

    t = stage(7, f"disentanglement metrics ({s.metric_n} training / {s.metric_n // 2} evaluation points)")
    from facevae.metrics.run import compute_disentanglement, format_disentanglement

    disentanglement = compute_disentanglement(run_dir, "all", n=s.metric_n, n_eval=s.metric_n // 2, seed=s.seed)
    log(format_disentanglement(disentanglement))
    done("metrics", t)

    t = stage(8, "writing the report")
    path = build_report(run_dir, out=report_path, log=log)
    done("report", t)
    timings["total"] = round(time.perf_counter() - started, 1)
    log(f"demo finished in {timings['total']:.0f} s; output in {out.resolve()}")
    return {"out": out, "data": data_dir, "run": run_dir, "report": path.resolve(), "dims": dims,
            "metrics": metrics, "analysis": analysis, "disentanglement": disentanglement, "timings": timings, "settings": asdict(s)}
