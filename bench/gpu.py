"""The one prepared GPU run: everything the speed issue asks of a lent GPU, in one table, in under 8 minutes.

On the GPU (bf16 autocast, channels_last, torch.compile, the training set resident on the device):

  1. the default CVAE's training step at 64x64 for batch 256 and 1024: img/s, peak memory, and the
     share of the arithmetic limit (the device's measured bf16 matmul rate / the step's FLOPs per
     image) — bench/train.py's `gpu` figure
  2. one epoch over a CelebA-size set (202,599 images: 20,000 built-in faces rendered once and
     tiled, since the content does not change the time), batch 1024, shuffled on the device
  3. the hierarchical VAE's 64x64 preset (hvae-gpu64) for a fixed number of steps — bench/hvae.py's
     `gpu` figure: img/s, peak memory, bits/dim

Goal on an H100/H200: ≥ 50,000 img/s for the CVAE and a CelebA-size epoch in ≤ 5 s. Without a GPU it
says so and stops (exit 0): the tests never depend on it.

    python3 bench/gpu.py                     # on the GPU machine, from the repository root
    python3 bench/gpu.py --work /tmp/g --steps 30
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # a copied tree without an install

CELEBA_IMAGES = 202_599
RENDERED = 20_000


def celeba_size_epoch(work: Path, batch: int = 1024, n: int = CELEBA_IMAGES, device: str = "cuda",
                      rendered: int = RENDERED, compile_: bool = True) -> dict:
    """Seconds of one shuffled epoch of the default CVAE over ``n`` images on the device."""
    import numpy as np

    import train as train_bench
    from facevae.data.packed import PackedDataset

    dataset = PackedDataset(train_bench.ensure_synthetic(work, rendered))
    reps = -(-n // len(dataset))
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    images = torch.from_numpy(np.array(dataset.images)).to(dev).permute(0, 3, 1, 2)
    images = images.repeat(reps, 1, 1, 1)[:n].contiguous()
    attributes = torch.from_numpy(np.asarray(dataset.attributes)).to(dev).float().repeat(reps, 1)[:n]
    model = train_bench.default_cvae(dataset.attribute_names).to(dev, memory_format=torch.channels_last)
    loss_fn = lambda x, c: model.loss(x, c)["loss"]  # noqa: E731
    loss_fn = torch.compile(loss_fn) if compile_ else loss_fn
    step = train_bench.make_step(model, loss_fn)

    def epoch():
        order = torch.randperm(n, device=dev)
        for lo in range(0, n - batch + 1, batch):  # drop_last, as training does
            idx = order[lo:lo + batch]
            x = images[idx].float().div_(255).contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                step(x, attributes[idx])
        sync()

    compile_s, _ = train_bench.timed(epoch)  # the first epoch compiles
    seconds, _ = train_bench.timed(epoch)
    return {"epoch_images": n, "epoch_batch": batch, "epoch_s": seconds, "first_epoch_s": compile_s}


def table(r: dict) -> str:
    rows = [f"device: {r['gpu']}, torch {torch.__version__}", "",
            "| figure | value | arithmetic limit | share of the limit | peak memory |", "|---|---:|---:|---:|---:|"]
    limit = r["gpu_limit_img_s"]
    for key in sorted(k for k in r if k.startswith("gpu_batch_")):
        b = r[key]
        rows.append(f"| CVAE 64x64 training, batch {key.rsplit('_', 1)[1]}, bf16 + compile + on device | "
                    f"{b['img_s']:,.0f} img/s | {limit:,.0f} img/s | {b['utilisation']:.1%} | {b['peak_mem_gib']:.1f} GiB |")
    e = r["epoch"]
    rows.append(f"| one epoch of {e['epoch_images']:,} images, batch {e['epoch_batch']} | {e['epoch_s']:.1f} s "
                f"(first, compiling: {e['first_epoch_s']:.1f} s) | {e['epoch_images'] / limit:.2f} s | "
                f"{e['epoch_images'] / limit / e['epoch_s']:.1%} | |")
    h = r.get("hvae") or {}
    if h:
        rows.append(f"| hvae-gpu64 training, batch {h['batch']}, bf16 + compile | {h['img_per_s']:,.0f} img/s | | | "
                    f"{h['peak_gib']:.1f} GiB |")
    return "\n".join(rows)


def smoke(work: Path) -> None:
    import train as train_bench

    names = json.loads((train_bench.ensure_synthetic(work, 200) / "meta.json").read_text())["attribute_names"]
    r = train_bench.bench_gpu(work, names, batch_sizes=(8,), steps=1, warmup=1, device="cpu", compile_=False,
                              data_images=200)
    r["gpu_batch_8"]["peak_mem_gib"] = 0.0
    r["epoch"] = celeba_size_epoch(work, batch=8, n=32, device="cpu", rendered=200, compile_=False)
    print(table(r))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "facevae-bench-gpu")
    parser.add_argument("--steps", type=int, default=50, help="timed steps of each step figure")
    parser.add_argument("--smoke", action="store_true", help="a tiny CPU run of every part (checks the script)")
    args = parser.parse_args()
    if args.smoke:
        return smoke(args.work)
    if not torch.cuda.is_available():
        print("bench/gpu.py: no GPU here; nothing measured")
        return
    import hvae as hvae_bench
    import train as train_bench

    args.work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    names = json.loads((train_bench.ensure_synthetic(args.work, RENDERED) / "meta.json").read_text())["attribute_names"]
    r = train_bench.bench_gpu(args.work, names, steps=args.steps, data_images=RENDERED)
    r["epoch"] = celeba_size_epoch(args.work)
    r["hvae"] = hvae_bench.bench_gpu(args.steps)
    r["seconds"] = time.perf_counter() - start
    (args.work / "results.json").write_text(json.dumps(r, indent=2))
    print(table(r))
    print(f"\n({r['seconds']:.0f} s in all)")


if __name__ == "__main__":
    main()
