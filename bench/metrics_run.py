"""The disentanglement suite of a trained run (``facevae metrics RUN``), timed against its own baseline.

Two passes over the same run and seed, in one process: observations rendered ahead in DataLoader worker
processes while the main process encodes (what ``facevae metrics`` does on a machine with two cores or
more), then everything in the main process (what it does on one core). The scores must be identical: the
draws, the batches handed to the encoder and the numbers do not depend on who renders. Prints a Markdown
table for docs/benchmarks.md. The demo's sizes (1,000 / 500 points) are the default.

    make demo && .venv/bin/python bench/metrics_run.py runs/demo/cvae [--n 1000] [--n-eval 500]
"""

from __future__ import annotations

import argparse
import time

from machine import cpu_name


def timed(run_dir: str, n: int, n_eval: int, cores: int) -> tuple[float, dict]:
    from facevae.common import threads
    from facevae.metrics.run import compute_disentanglement

    real = threads.usable_cores
    threads.usable_cores = lambda: cores  # one core: no render workers
    try:
        t0 = time.perf_counter()
        result = compute_disentanglement(run_dir, "all", n=n, n_eval=n_eval, seed=0, write=False)
        return time.perf_counter() - t0, result["scores"]
    finally:
        threads.usable_cores = real


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--n-eval", type=int, default=500)
    args = p.parse_args()
    from facevae.common.threads import usable_cores
    from facevae.training.rundir import open_run

    run = open_run(args.run)
    cores = usable_cores()
    ahead, scores_ahead = timed(args.run, args.n, args.n_eval, cores)
    alone, scores_alone = timed(args.run, args.n, args.n_eval, 1)
    meta = run.data.packed.meta
    print(f"{cpu_name()}, {cores} cores; run {args.run}: data {meta.height}x{meta.width}, "
          f"model input {run.data.image_size or meta.height}; {args.n} / {args.n_eval} points\n")
    print("| observations rendered and encoded | seconds | ratio |\n|---|---:|---:|")
    print(f"| in the main process (baseline) | {alone:.1f} | 1.00 |")
    print(f"| in {cores} worker processes | {ahead:.1f} | {alone / ahead:.2f} |")
    print(f"\nscores identical: {scores_ahead == scores_alone}")
    if scores_ahead != scores_alone:
        raise SystemExit(f"the scores differ:\n{scores_ahead}\n{scores_alone}")


if __name__ == "__main__":
    main()
