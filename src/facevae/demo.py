"""The demo: the whole pipeline on built-in synthetic faces, from nothing to the HTML report.

Stages: render synthetic faces → explore their attributes → stratified split → train a conditional
VAE (conditioned on all the data's attributes) → name its dimensions (dims) → reconstructions,
samples, traversals, probes → disentanglement metrics → report. ``DEMO`` finishes in a few minutes
on 2 CPU cores; ``QUICK`` is a tiny version for smoke tests. ``facevae demo`` calls :func:`run_demo`.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

# A condition of the small facial details only (a few pixels each at 32×32), which leaves the large factors to the
# latents. Measured on faces with independent factors against the demo's settings (bench/demo_dims.py), it named
# no more factors on average and spread wider over seeds (docs/benchmarks.md, "The demo"), so the demo keeps
# every attribute.
SMALL_DETAILS = ("5_o_Clock_Shadow", "Bangs", "Eyeglasses", "Goatee", "Mouth_Slightly_Open", "No_Beard", "Smiling",
                 "Wearing_Lipstick", "Young")


@dataclass(frozen=True)
class DemoSettings:
    """What the demo renders and trains (see ``DEMO`` and ``QUICK``)."""

    n: int = 6000  # synthetic faces, split 0.8/0.1/0.1
    image_size: int = 32  # the model's input side
    prior: str = "celeba"  # the faces' factor prior: celeba (correlated, CelebA-like rates) or uniform
    condition: tuple[str, ...] = ()  # the condition's attributes (empty: every attribute of the faces)
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
    # Float32 on every CPU: what the demo shows (its dimension table above all) is then the same with or without
    # AMX; under bfloat16 autocast its dimensions' margins came out too thin to name four factors.
    precision: str = "32-true"
    # Rendered at the model's side: resizing costs more than rendering, in training and in every metric's fresh
    # observations, and the faces look the same (docs/benchmarks.md, "The demo").
    faces_size: int = 32
    metric_n: int = 1000  # training points of each disentanglement metric (the standard 10,000 takes minutes)


DEMO = DemoSettings()
QUICK = replace(DEMO, n=600, latent_dim=8, epochs=2, max_time="00:00:02:00")
STAGES = 8


class _Stages:
    """Numbered progress lines and the time each stage took."""

    def __init__(self, log: Callable[[str], None]):
        self.log, self.timings, self.number = log, {}, 0
        self.started = time.perf_counter()

    def run(self, name: str, text: str, work: Callable[[], object]):
        self.number += 1
        self.log(f"[{self.number}/{STAGES}] {text}")
        t0 = time.perf_counter()
        result = work()
        self.timings[name] = round(time.perf_counter() - t0, 1)
        self.log(f"      ({self.timings[name]:.1f} s)")
        return result


def _clear(out: Path) -> None:
    from facevae.common.files import make_dir

    make_dir(out)
    for old in (out / "data", out / "cvae", out / "explore"):  # a demo always starts from nothing
        if old.exists():
            shutil.rmtree(old)
    for old in (out / "report.html", out / "faces.png"):
        old.unlink(missing_ok=True)


def _render(out: Path, s: DemoSettings, log, progress: bool):
    from facevae.data.show import show_dataset
    from facevae.data.synthetic import write_synthetic_packed

    dataset = write_synthetic_packed(out / "data", s.n, size=s.faces_size, seed=s.seed, prior=s.prior,
                                     progress=progress)
    log(f"      {dataset}; examples: {show_dataset(dataset, out / 'faces.png', n=32, seed=s.seed)}")
    return dataset


def _explore(dataset, out: Path, log) -> None:
    from facevae.data.explore import explore, format_summary

    log(format_summary(explore(dataset, out / "explore")))


def _split(dataset, s: DemoSettings, log) -> str:
    from facevae.data.splits import format_distribution_check, split_dataset

    split, report = split_dataset(dataset, "stratified", (0.8, 0.1, 0.1), s.seed)
    log(format_distribution_check(report))
    return split


def demo_condition(attribute_names, s: DemoSettings) -> list[str]:
    """The attributes of ``s.condition`` in the data's column order (all of them when it is empty)."""
    missing = sorted(set(s.condition) - set(attribute_names))
    if missing:
        raise ValueError(f"the demo's condition names attributes the faces lack: {', '.join(missing)}")
    return [a for a in attribute_names if a in s.condition or not s.condition]


def demo_run_config(dataset, split: str, run_dir: Path, s: DemoSettings, progress: bool):
    """The demo's training run: a small conditional β-VAE on the attributes of ``s.condition`` (default: all)."""
    from facevae.models.config import ModelConfig
    from facevae.training.config import RunConfig, TrainConfig

    return RunConfig(
        ModelConfig(model="cvae", latent_dim=s.latent_dim, width=s.width, image_size=s.image_size,
                    condition_names=demo_condition(dataset.attribute_names, s), beta=s.beta, likelihood=s.likelihood,
                    kl_warmup_steps=s.kl_warmup_steps),
        TrainConfig(data=str(dataset.root), split=split, run_dir=str(run_dir), epochs=s.epochs, patience=0,
                    batch_size=s.batch_size, lr=s.lr, seed=s.seed, max_time=s.max_time, eval_k=16,
                    eval_batches=2, progress=progress, checkpoint_every_steps=0, precision=s.precision,
                    note=demo_note(s)),
    )


def demo_note(s: DemoSettings) -> str:
    """What the report says of the demo's β and condition, and why they are what they are."""
    # the reason was measured for the demo's data and training, whatever its seed, cap or metric points
    if replace(s, seed=DEMO.seed, max_time=DEMO.max_time, metric_n=DEMO.metric_n) != DEMO:
        return f"facevae demo with β = {s.beta:g}, {s.prior} factors and the condition given to it"
    return (f"facevae demo: β = {s.beta:g}, which of β ∈ {{1, 4, 32}} gave a dimension of its own to the most "
            f"factors on average at this budget, by less than the spread over seeds (3 seeds, bench/demo_dims.py; "
            f"docs/benchmarks.md, \"The demo\")")


def _train(config, log) -> dict:
    from facevae.training.run import train

    metrics = train(config)
    test = metrics.get("test", {})
    log(f"      best epoch {metrics.get('best_epoch')}: test ELBO {test.get('test_elbo', float('nan')):.1f} nats, "
        f"{test.get('test_bits_per_dim', float('nan')):.3f} bits/dim")
    return metrics


def _analyse(run, log) -> dict:
    from facevae.analysis.reconstruct import reconstruct
    from facevae.analysis.sample import sample
    from facevae.analysis.traverse import traverse
    from facevae.recognition.probe import probe_run

    analysis = {"reconstruct": reconstruct(run, n=16), "sample": sample(run, n=32), "traverse": traverse(run),
                "probe": probe_run(run)}
    log(f"      mean probe accuracy {analysis['probe']['mean']['accuracy']:.3f} "
        f"(majority baseline {analysis['probe']['mean']['majority']:.3f})")
    log(f"      {run.analysis_dir}")
    return analysis


def run_demo(out: str | Path, settings: DemoSettings = DEMO, log: Callable[[str], None] = print,
             progress: bool = True) -> dict:
    """Run every stage into ``out``; return the paths written, the dims result and the stage timings."""
    from facevae.analysis.dims import evaluate_dims, format_dims_table
    from facevae.metrics.run import compute_disentanglement, format_disentanglement
    from facevae.reporting.html import build_report
    from facevae.training.rundir import open_run

    out, s = Path(out), settings
    run_dir = out / "cvae"
    _clear(out)
    stages = _Stages(log)
    dataset = stages.run("render", f"rendering {s.n} synthetic faces ({s.faces_size}x{s.faces_size})",
                         lambda: _render(out, s, log, progress))
    stages.run("explore", "exploring the attributes", lambda: _explore(dataset, out, log))
    split = stages.run("split", "stratified split 0.8/0.1/0.1", lambda: _split(dataset, s, log))
    config = demo_run_config(dataset, split, run_dir, s, progress)
    metrics = stages.run("train", f"training a conditional VAE on {len(config.model.condition_names)} attributes "
                         f"(latent {s.latent_dim}, β={s.beta:g}, {s.image_size}x{s.image_size}, up to {s.epochs} "
                         f"epochs" + (f" or {s.max_time}" if s.max_time else "") + f") into {run_dir}",
                         lambda: _train(config, log))
    run = open_run(run_dir)
    dims = stages.run("dims", "naming the latent dimensions (dims)", lambda: evaluate_dims(run))
    log(format_dims_table(dims))
    analysis = stages.run("analyse", "reconstructions, samples, traversals, attribute probes", lambda: _analyse(run, log))
    disentanglement = stages.run(
        "metrics", f"disentanglement metrics ({s.metric_n} training / {s.metric_n // 2} evaluation points)",
        lambda: compute_disentanglement(run_dir, "all", n=s.metric_n, n_eval=s.metric_n // 2, seed=s.seed))
    log(format_disentanglement(disentanglement))
    path = stages.run("report", "writing the report", lambda: build_report(run_dir, out=out / "report.html", log=log))
    stages.timings["total"] = round(time.perf_counter() - stages.started, 1)
    log(f"demo finished in {stages.timings['total']:.0f} s; output in {out.resolve()}")
    return {"out": out, "data": out / "data", "run": run_dir, "report": path.resolve(), "dims": dims,
            "metrics": metrics, "analysis": analysis, "disentanglement": disentanglement,
            "timings": stages.timings, "settings": asdict(s)}
