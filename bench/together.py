"""A β sweep trained as one stack (``facevae sweep --together``) against the same members trained one by one.

For each stack size M: M members (β = 1, 2, 3, ...; one seed) of one small VAE train the same steps as one
stack, and the first member alone trains them too, in the same run: the baseline. The figure is the ratio of
M times the member's training time alone to the stack's (above 1: the stack is faster than a loop over its
members). Training seconds are the fit's alone (Lightning's loop, validation included; no test pass), after
an unmeasured warm-up run.

    .venv/bin/python bench/together.py [--sizes 1,4,8,16] [--steps 60] [--precision 32-true] [--data DIR]
    python3 bench/together.py --accelerator gpu --sizes 1,16 --steps 200   # on a lent GPU
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from machine import cpu_name

MEMBER = dict(model="vae", latent_dim=10, width=1, image_size=32, epochs=1, patience=0, progress=False,
              eval_k=1, eval_batches=1, limit_val_batches=2.0, checkpoint_every_steps=0)


def member(data: Path, run_dir: Path, beta: float, args):
    from facevae.training.config import RunConfig

    return RunConfig.from_settings({**MEMBER, "data": str(data), "run_dir": str(run_dir), "beta": beta,
                                    "batch_size": args.batch_size, "limit_train_batches": float(args.steps),
                                    "precision": args.precision, "accelerator": args.accelerator})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1,4,8,16")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", default="32-true")
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--data", type=Path, default=None, help="a packed dataset at 32x32 (default: 3,000 synthetic faces)")
    args = p.parse_args()
    import torch

    from facevae.data.synthetic import write_synthetic_packed
    from facevae.training.run import train
    from facevae.training.together import train_together

    work = Path(tempfile.mkdtemp(prefix="facevae-together-"))
    data = args.data or write_synthetic_packed(work / "data", 3000, size=32, seed=0, progress=False).root
    train(member(data, work / "warm-up", 1.0, args))  # the first fit in a process pays for set-ups the others do not
    alone = train(member(data, work / "alone", 1.0, args))["train_seconds"]
    print(f"{cpu_name()}, {torch.get_num_threads()} torch threads, {args.accelerator}, {args.precision}; "
          f"{args.steps} steps of batch {args.batch_size}, 32x32, VAE width 1, latent 10\n")
    print(f"one member alone (baseline): {alone:.1f} s\n")
    print("| members | stack's seconds | M × one alone | ratio |\n|---:|---:|---:|---:|")
    for size in [int(s) for s in args.sizes.split(",")]:
        configs = [member(data, work / f"m{size}-{i}", 1.0 + i, args) for i in range(size)]
        results = train_together(configs, work / f"stack-{size}")
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            raise SystemExit(f"a member failed: {failed[0]}")
        seconds = results[0]["train_seconds"]
        print(f"| {size} | {seconds:.1f} | {size * alone:.1f} | {size * alone / seconds:.2f} |", flush=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
