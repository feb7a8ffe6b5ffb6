"""Does the hierarchy pay off? The hierarchical VAE's CPU preset against the default flat CVAE, same budget.

Sub-benchmarks (--only, comma-separated; default: budget,throughput,flops):

  budget      `facevae train --preset hvae-cpu32` and the default `facevae train --model cvae` (at the
              same 32x32, on the same synthetic faces and split) for the same wall-clock budget, side by
              side in two fresh processes of one thread each: test bits/dim (ELBO and importance-weighted), validation
              bits/dim against training seconds (and the time at which the hierarchy overtakes), samples
              side by side (docs/figures/hvae_vs_cvae.png)
  stability   the CPU preset for the budget with --seeds seeds at once: non-finite or exploding updates skipped,
              test bits/dim mean ± s.d.
  throughput  training img/s and peak memory of each preset's model step on this CPU (fresh processes)
  flops       parameters and forward GFLOPs per image (torch.utils.flop_counter) per preset
  gpu         the 64x64 preset on a GPU for a fixed number of steps: img/s, peak memory, bits/dim (bf16,
              channels_last, torch.compile); prints "no GPU" without one

    .venv/bin/python bench/hvae.py --only budget --budget 600        # ~12 minutes on 2 cores
    .venv/bin/python bench/hvae.py --only stability --seeds 3        # ~7 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from machine import cpu_name

ALL = ("budget", "stability", "throughput", "flops", "gpu")
ROOT = Path(__file__).resolve().parents[1]
FACEVAE = [sys.executable, "-m", "facevae"]
EVAL = ["--eval-k", "20", "--eval-batches", "4", "--no-progress", "--patience", "0", "--epochs", "1000"]


def ensure_data(work: Path, n: int) -> Path:
    data = work / f"synth_{n}"
    if not (data / "splits" / "stratified.npy").is_file():
        subprocess.run([*FACEVAE, "data", "synth", str(data), "--n", str(n), "--size", "64"], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run([*FACEVAE, "data", "split", str(data), "--strategy", "stratified"], check=True,
                       stdout=subprocess.DEVNULL)
    return data


def start_training(data: Path, run: Path, budget: int, *flags: str, threads: int | None = None):
    """One `facevae train` in a fresh process (None where the run is already there)."""
    if (run / "model.safetensors").is_file():
        return None
    clock = time.strftime("%H:%M:%S", time.gmtime(budget))
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    return subprocess.Popen([*FACEVAE, "train", "--data", str(data), "--split", "stratified", "--run-dir", str(run),
                             "--max-time", f"00:{clock}", *EVAL, *flags], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)


def finish(process, run: Path) -> dict:
    if process is not None and process.wait() != 0:
        raise SystemExit(f"facevae train into {run} failed (exit {process.returncode})")
    return json.loads((run / "metrics.json").read_text())


def train(data: Path, run: Path, budget: int, *flags: str) -> dict:
    """One `facevae train` in a fresh process; its metrics.json."""
    return finish(start_training(data, run, budget, *flags), run)


def curve(metrics: dict) -> list[tuple[float, float]]:
    return [(e["seconds"], e["val_bpd"]) for e in metrics["epochs"] if e.get("val_bpd") is not None and "seconds" in e]


def overtakes(hier: list[tuple[float, float]], flat: list[tuple[float, float]]) -> float | None:
    """The first training time at which the hierarchical model's validation bits/dim is below the flat model's
    best so far at that time."""
    for t, bpd in hier:
        best_flat = min((b for s, b in flat if s <= t), default=float("inf"))
        if bpd < best_flat:
            return t
    return None


def samples_figure(runs: dict[str, Path], out: Path, n: int = 8) -> Path:
    import facevae
    from facevae.common.grids import save_comparison_grid

    rows, labels = [], []
    for name, run in runs.items():
        model = facevae.load(run)
        c = torch.zeros(n, model.num_conditions) if model.num_conditions else None
        for t in (0.7, 1.0):
            rows.append(model.sample(n, c, temperature=t, generator=torch.Generator().manual_seed(0)))
            labels.append(f"{name}\nT = {t:g}")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_comparison_grid(rows, labels, out, title="prior samples after the same CPU budget: the hierarchical "
                         "VAE's CPU preset (top) and the default flat CVAE at 32x32 (bottom)")
    return out


def bench_budget(work: Path, n: int, budget: int) -> dict:
    """Both models at once, one thread each, so that whatever else the machine does slows both alike."""
    data = ensure_data(work, n)
    runs = {"hvae": work / f"hvae_{budget}", "cvae": work / f"cvae_{budget}"}
    started = {"hvae": start_training(data, runs["hvae"], budget, "--preset", "hvae-cpu32", threads=1),
               "cvae": start_training(data, runs["cvae"], budget, "--model", "cvae", "--image-size", "32", threads=1)}
    hier, flat = (finish(started[name], runs[name]) for name in ("hvae", "cvae"))
    figure = samples_figure({"hvae-cpu32": work / f"hvae_{budget}", "cvae 32x32": work / f"cvae_{budget}"},
                            ROOT / "docs" / "figures" / "hvae_vs_cvae.png")
    return {"budget_s": budget, "images": n, "figure": str(figure.relative_to(ROOT)),
            "overtakes_at_s": overtakes(curve(hier), curve(flat)),
            **{f"{name}_{key}": m["test"].get(f"test_{key}") for name, m in (("hvae", hier), ("cvae", flat))
               for key in ("bits_per_dim", "bits_per_dim_iw")},
            **{f"{name}_steps": m["global_step"] for name, m in (("hvae", hier), ("cvae", flat))},
            **{f"{name}_curve": curve(m) for name, m in (("hvae", hier), ("cvae", flat))}}


def bench_stability(work: Path, n: int, budget: int, seeds: int) -> dict:
    """All seeds at once, one thread each (what matters here is whether any update goes wrong)."""
    data = ensure_data(work, n)
    dirs = [work / f"hvae_seed{s}_{budget}" for s in range(seeds)]
    started = [start_training(data, d, budget, "--preset", "hvae-cpu32", "--seed", str(s), threads=1)
               for s, d in enumerate(dirs)]
    runs = [finish(process, d) for process, d in zip(started, dirs)]
    bpd = torch.tensor([m["test"]["test_bits_per_dim"] for m in runs])
    return {"seeds": seeds, "budget_s": budget, "skipped_updates": [m.get("skipped_updates") for m in runs],
            "steps": [m["global_step"] for m in runs], "bpd_mean": float(bpd.mean()),
            "bpd_sd": float(bpd.std()) if seeds > 1 else 0.0}


def preset_model(name: str):
    from facevae.models import ModelConfig, build_model
    from facevae.training.presets import PRESETS

    settings = PRESETS[name].settings
    config = ModelConfig(**{k: v for k, v in settings.items() if k in ModelConfig.__dataclass_fields__})
    return build_model(config), settings


# A preset made for a GPU is timed on the CPU at this batch: hvae-gpu64's own 64 needs more than 23 GiB
# of activations and was killed for memory on the 24 GiB machine.
GPU_PRESET_CPU_BATCH = 4


def step_child(name: str, steps: int) -> dict:
    """In a fresh process: the preset's training step on random images, img/s and peak RSS."""
    model, settings = preset_model(name)
    size = model.config.image_size
    batch = GPU_PRESET_CPU_BATCH if settings.get("on_device") else settings["batch_size"]
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 3, size, size).contiguous(memory_format=torch.channels_last)

    def step():
        opt.zero_grad()
        model.loss(x, kl_weight=1.0)["loss"].backward()
        opt.step()

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    return {"img_per_s": steps * batch / seconds, "batch": batch,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def bench_throughput(steps: int) -> dict:
    from facevae.training.presets import PRESETS

    out = {}
    for name in PRESETS:
        result = subprocess.run([sys.executable, __file__, "--step-child", name, "--steps", str(steps)],
                                capture_output=True, text=True, check=True)
        out[name] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


def bench_flops() -> dict:
    """Forward FLOPs as torch counts them; training ≈ 3x forward (torch's counter overcounts the backward of
    grouped convolutions as if they were dense: 285 GFLOP for a 10 GFLOP forward, so it is not used)."""
    from torch.utils.flop_counter import FlopCounterMode

    from facevae.training.presets import PRESETS

    out = {}
    for name in PRESETS:
        model, _ = preset_model(name)
        x = torch.rand(1, 3, model.config.image_size, model.config.image_size)
        counter = FlopCounterMode(display=False)
        with counter:
            model.loss(x, kl_weight=1.0)
        forward = counter.get_total_flops() / 1e9
        out[name] = {"parameters": sum(p.numel() for p in model.parameters()), "gflop_forward": forward,
                     "gflop_per_image": 3 * forward, "latent_units": model.latent_dim}
    return out


def bench_gpu(steps: int) -> dict:
    if not torch.cuda.is_available():
        print("gpu: no GPU here; skipped")
        return {}
    model, settings = preset_model("hvae-gpu64")
    model = model.cuda().to(memory_format=torch.channels_last)
    batch, size = settings["batch_size"], model.config.image_size
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = torch.compile(model.loss)
    x = torch.rand(batch, 3, size, size, device="cuda").contiguous(memory_format=torch.channels_last)
    torch.cuda.reset_peak_memory_stats()
    for i in range(steps + 5):
        if i == 5:
            torch.cuda.synchronize()
            start = time.perf_counter()
        opt.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            terms = loss(x, kl_weight=1.0)
        terms["loss"].backward()
        opt.step()
    torch.cuda.synchronize()
    return {"img_per_s": steps * batch / (time.perf_counter() - start), "batch": batch,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30, "bits_per_dim": float(terms["bits_per_dim"]),
            "device": torch.cuda.get_device_name()}


def machine_line() -> str:
    return f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def table(r: dict) -> str:
    lines = [f"machine: {machine_line()}", "", "| figure | value | baseline (same run) | ratio |", "|---|---|---|---|"]
    if "budget" in r:
        b = r["budget"]
        lines.append(f"| test bits/dim after {b['budget_s']} s (ELBO) | hvae-cpu32 {b['hvae_bits_per_dim']:.3f} "
                     f"({b['hvae_steps']} steps) | cvae 32x32 {b['cvae_bits_per_dim']:.3f} ({b['cvae_steps']} steps) | "
                     f"{b['hvae_bits_per_dim'] / b['cvae_bits_per_dim']:.2f}x |")
        lines.append(f"| test bits/dim, importance-weighted (k=20, 256 images) | {b['hvae_bits_per_dim_iw']:.3f} | "
                     f"{b['cvae_bits_per_dim_iw']:.3f} | {b['hvae_bits_per_dim_iw'] / b['cvae_bits_per_dim_iw']:.2f}x |")
        lines.append(f"| training time at which hvae's validation bits/dim is below cvae's best so far | "
                     f"{b['overtakes_at_s']} s | | |")
    if "stability" in r:
        s = r["stability"]
        lines.append(f"| hvae-cpu32, {s['seeds']} seeds x {s['budget_s']} s: test bits/dim | {s['bpd_mean']:.3f} ± "
                     f"{s['bpd_sd']:.3f} | skipped updates {s['skipped_updates']} of {s['steps']} steps | |")
    for name, t in r.get("throughput", {}).items():
        lines.append(f"| {name} training step, batch {t['batch']} | {t['img_per_s']:.1f} img/s | peak RSS "
                     f"{t['peak_rss_mib']:.0f} MiB | |")
    for name, f in r.get("flops", {}).items():
        lines.append(f"| {name} size | {f['parameters'] / 1e6:.2f} M parameters, {f['gflop_forward']:.3f} GFLOP per "
                     f"image forward (≈ {f['gflop_per_image']:.2f} to train), {f['latent_units']} latent units | | |")
    if r.get("gpu"):
        g = r["gpu"]
        lines.append(f"| hvae-gpu64 on {g['device']}, batch {g['batch']}, bf16 + compile | {g['img_per_s']:.0f} img/s, "
                     f"peak {g['peak_gib']:.1f} GiB | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="budget,throughput,flops")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "facevae-bench-hvae")
    parser.add_argument("--n", type=int, default=6000, help="synthetic faces")
    parser.add_argument("--budget", type=int, default=300, help="training seconds per run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="timed steps of the throughput and gpu figures")
    parser.add_argument("--step-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step_child:
        print(json.dumps(step_child(args.step_child, args.steps)))
        return
    only = ALL if args.only == "all" else tuple(args.only.split(","))
    args.work.mkdir(parents=True, exist_ok=True)
    results_path = args.work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    jobs = {"budget": lambda: bench_budget(args.work, args.n, args.budget),
            "stability": lambda: bench_stability(args.work, args.n, args.budget, args.seeds),
            "throughput": lambda: bench_throughput(args.steps), "flops": bench_flops,
            "gpu": lambda: bench_gpu(args.steps)}
    for name in only:
        results[name] = jobs[name]()
        results_path.write_text(json.dumps(results, indent=2))
    print(table({k: v for k, v in results.items() if k in only}))


if __name__ == "__main__":
    main()
