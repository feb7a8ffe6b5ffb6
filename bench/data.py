"""Data-layer benchmarks: render speed, prepare speed, one epoch's read speed.

Each figure is compared with a plain baseline measured in the same run, as a ratio, because
these machines are noisy. Prints a Markdown table for docs/benchmarks.md.

    .venv/bin/python bench/data.py [--n 4000] [--workdir /tmp/facevae-bench]
"""

from __future__ import annotations

import argparse
import platform
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from baselines import JpegFolderDataset  # bench/ is on sys.path when a bench script runs


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def bench_render(n: int) -> dict:
    from facevae.data.synthetic import SyntheticFaces

    faces = SyntheticFaces(size=64)
    factors = faces.sample_factors(n, np.random.default_rng(0))
    faces.render(factors[:64])  # warm-up
    seconds, _ = timed(lambda: faces.render(factors))
    return {"render_64_img_s": n / seconds}


def pil_loop(folder: Path, names: list[str], size: int = 64) -> np.ndarray:
    """The obvious baseline: one process, full decode, crop, resize, per image."""
    out = np.empty((len(names), size, size, 3), np.uint8)
    for i, name in enumerate(names):
        with Image.open(folder / name) as img:
            face = img.convert("RGB").crop((15, 35, 163, 183)).resize((size, size), Image.Resampling.BILINEAR)
        out[i] = np.asarray(face)
    return out


def bench_prepare(src: Path, work: Path, n: int) -> dict:
    from facevae.data.prepare import PrepareOptions, prepare_celeba

    folder = src / "img_align_celeba"
    names = sorted(p.name for p in folder.iterdir())
    _ = [(folder / nm).read_bytes() for nm in names]  # both sides read from a warm page cache
    base_s, _ = timed(lambda: pil_loop(folder, names))
    out = work / "prepared"
    shutil.rmtree(out, ignore_errors=True)
    prep_s, _ = timed(lambda: prepare_celeba(src, out, PrepareOptions(size=64), progress=False))
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "prepare_img_s": n / prep_s,
        "pil_loop_img_s": n / base_s,
        "prepare_ratio": base_s / prep_s,
        "prepare_full_celeba_s": 202_599 / (n / prep_s),
        "prepare_peak_worker_mib": children,
        "prepared": out,
    }


def epoch(loader) -> int:
    seen = 0
    for x, _ in loader:
        seen += len(x)
    return seen


def bench_read(prepared: Path, src: Path, batch_size: int = 128) -> dict:
    from facevae.data.datamodule import PackedDataModule

    dm = PackedDataModule(prepared, split="official", batch_size=batch_size, num_workers=0)
    dm.setup("fit")
    loader = dm.train_dataloader()
    packed_s, seen = timed(lambda: sum(len(dm.on_after_batch_transfer(b, 0)[0]) for b in loader))
    jpeg = torch.utils.data.DataLoader(JpegFolderDataset(src), batch_size=batch_size,
                                       shuffle=True, num_workers=2)
    jpeg_s, jpeg_seen = timed(lambda: epoch(jpeg))
    return {
        "read_packed_img_s": seen / packed_s,
        "read_jpeg_img_s": jpeg_seen / jpeg_s,
        "read_ratio": (seen / packed_s) / (jpeg_seen / jpeg_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4000, help="fake CelebA images to prepare")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/facevae-bench"))
    args = parser.parse_args()
    from facevae.data.fake_celeba import write_fake_celeba

    args.workdir.mkdir(parents=True, exist_ok=True)
    src = args.workdir / "fake_celeba"
    if not (src / "list_attr_celeba.txt").exists():
        write_fake_celeba(src, args.n, seed=0)
    r = bench_render(2000)
    r |= bench_prepare(src, args.workdir, args.n)
    r |= bench_read(r.pop("prepared"), src)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}\n")
    print("| figure | value | baseline (same run) | ratio |\n|---|---|---|---|")
    print(f"| render 64x64 | {r['render_64_img_s']:,.0f} img/s | | |")
    print(f"| prepare {args.n} fake CelebA JPEGs (178x218 → 64) | {r['prepare_img_s']:,.0f} img/s "
          f"| PIL per-image loop {r['pil_loop_img_s']:,.0f} img/s | {r['prepare_ratio']:.2f}x |")
    print(f"| projected full CelebA (202,599) prepare | {r['prepare_full_celeba_s']:.0f} s | | |")
    print(f"| prepare peak RSS per worker | {r['prepare_peak_worker_mib']:.0f} MiB | | |")
    print(f"| one epoch read (train split, batch 128) | {r['read_packed_img_s']:,.0f} img/s "
          f"| per-item JPEG Dataset, 2 workers {r['read_jpeg_img_s']:,.0f} img/s | {r['read_ratio']:.1f}x |")


if __name__ == "__main__":
    main()
