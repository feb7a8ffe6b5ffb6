"""How many generative factors does the demo's model name, over seeds? The demo's data, split and training (no
wall-clock cap), with one setting changed, then its dimension table: a factor counts when the condition does not
give it and its best dimension names it back (mutual), scores at least 0.1 and beats the runner-up dimension by
0.04 — what tests/test_demo.py asks of the demo.

    .venv/bin/python bench/demo_dims.py --seeds 0,1,2                       # the demo as it is
    .venv/bin/python bench/demo_dims.py --seeds 0,1,2 --beta 4
    .venv/bin/python bench/demo_dims.py --seeds 0,1,2 --prior uniform --condition small
    .venv/bin/python bench/demo_dims.py --seeds 0,1,2 --epochs 40 --loss tcvae --beta 6

Runs --jobs seeds at a time, each with one thread (two torch processes with two threads each on two cores
spin against each other). Prints one line per seed and the mean ± s.d.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MARGIN, MIN_SCORE = 0.04, 0.1


def named_factors(dims: dict) -> list[str]:
    return [f["name"] for f in dims["factors"]
            if not f.get("conditioned") and f["mutual"] and f["score"] >= MIN_SCORE and f["margin"] >= MARGIN]


def one_seed(args: argparse.Namespace, seed: int) -> dict:
    """Run in a child process: the demo's stages up to its dimension table, for one seed."""
    import time
    from dataclasses import replace

    import torch

    torch.set_num_threads(1)
    from facevae.analysis.dims import evaluate_dims
    from facevae.demo import DEMO, SMALL_DETAILS, _render, _split, demo_run_config
    from facevae.training.run import train
    from facevae.training.rundir import open_run

    changes = {k: getattr(args, k) for k in ("prior", "beta", "epochs", "latent_dim") if getattr(args, k) is not None}
    if args.condition is not None:
        named = {"all": (), "small": SMALL_DETAILS}
        changes["condition"] = named[args.condition] if args.condition in named else tuple(args.condition.split(","))
    s = replace(DEMO, max_time=None, seed=seed, **changes)
    out = Path(args.work) / f"seed{seed}"
    dataset = _render(out, s, lambda _: None, False)
    config = demo_run_config(dataset, _split(dataset, s, lambda _: None), out / "cvae", s, False)
    if args.loss:
        config.model.loss = args.loss
    started = time.perf_counter()
    train(config)
    dims = evaluate_dims(open_run(out / "cvae"), figure=False)
    return {"seed": seed, "train_s": round(time.perf_counter() - started), "named": named_factors(dims),
            "active": dims["active_units"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--prior", choices=("uniform", "celeba"))
    p.add_argument("--condition", help="all (every attribute of the faces: the demo's), small (the small facial details "
                   "only) or names A,B,C")
    p.add_argument("--beta", type=float)
    p.add_argument("--loss", choices=("beta", "tcvae", "capacity"))
    p.add_argument("--epochs", type=int)
    p.add_argument("--latent-dim", type=int)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--work", default=None, help="where the runs go (default: a temporary folder)")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: the child process of one seed
    args = p.parse_args()
    if args.one is not None:
        print(json.dumps(one_seed(args, args.one)))
        return
    args.work = args.work or tempfile.mkdtemp(prefix="demo_dims_")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def child(seed: int) -> dict:
        done = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--work", args.work, "--one", str(seed)],
                              check=True, capture_output=True, text=True, env=env)
        return json.loads(done.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(child, [int(s) for s in args.seeds.split(",")]))
    for row in rows:
        print(f"seed {row['seed']}: {len(row['named'])} named ({', '.join(row['named'])}); "
              f"{row['active']} active dims; trained in {row['train_s']} s")
    counts = [len(r["named"]) for r in rows]
    spread = statistics.stdev(counts) if len(counts) > 1 else 0.0
    print(f"named factors: {statistics.mean(counts):.2f} ± {spread:.2f} over {len(counts)} seeds; runs in {args.work}")


if __name__ == "__main__":
    main()
