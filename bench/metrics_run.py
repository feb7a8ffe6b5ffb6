"""The disentanglement suite of a trained run (``facevae metrics RUN``), timed against its own baseline.

Two passes over the same run and seed, in one process: the observations rendered and encoded in
DataLoader worker processes, one per thread torch may use (what ``facevae metrics`` does with two
threads or more), then all in the main process with all its threads (what it did before, and does
where it cannot fork). The scores must be identical: the draws, the tensors handed to the encoder and
so the numbers do not depend on which process computes them. Prints a Markdown table for
docs/benchmarks.md. The demo's sizes (1,000 / 500 points) are the default.

    make demo && .venv/bin/python bench/metrics_run.py runs/demo/cvae [--n 1000] [--n-eval 500]
"""

from __future__ import annotations

import argparse
import time

from machine import cpu_name


def timed(run_dir: str, n: int, n_eval: int, workers: bool) -> tuple[float, dict]:
    import torch.multiprocessing

    from facevae.metrics.run import compute_disentanglement

    methods = torch.multiprocessing.get_all_start_methods
    if not workers:  # as where processes cannot be forked: all in the main process, with all its threads
        torch.multiprocessing.get_all_start_methods = lambda: [m for m in methods() if m != "fork"]
    try:
        t0 = time.perf_counter()
        result = compute_disentanglement(run_dir, "all", n=n, n_eval=n_eval, seed=0, write=False)
        return time.perf_counter() - t0, result["scores"]
    finally:
        torch.multiprocessing.get_all_start_methods = methods


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--n-eval", type=int, default=500)
    args = p.parse_args()
    import torch

    from facevae.training.rundir import open_run

    run = open_run(args.run)
    cores = torch.get_num_threads()
    ahead, scores_ahead = timed(args.run, args.n, args.n_eval, workers=True)
    alone, scores_alone = timed(args.run, args.n, args.n_eval, workers=False)
    meta = run.data.packed.meta
    print(f"{cpu_name()}, {cores} torch threads; run {args.run}: data {meta.height}x{meta.width}, "
          f"model input {run.data.image_size or meta.height}; {args.n} / {args.n_eval} points\n")
    print("| observations rendered and encoded | seconds | ratio |\n|---|---:|---:|")
    print(f"| in the main process (baseline) | {alone:.1f} | 1.00 |")
    print(f"| in {cores} worker processes | {ahead:.1f} | {alone / ahead:.2f} |")
    print(f"\nscores identical: {scores_ahead == scores_alone}")
    if scores_ahead != scores_alone:
        raise SystemExit(f"the scores differ:\n{scores_ahead}\n{scores_alone}")


if __name__ == "__main__":
    main()
