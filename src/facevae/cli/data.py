"""``facevae data ...``: make, prepare, inspect, explore and split packed datasets."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    from facevae.cli import HelpFormatter, add_command

    group = subparsers.add_parser(
        "data",
        help="make, prepare, inspect, explore and split datasets",
        description="Datasets: render synthetic faces or dSprites, pack CelebA, look at them, split them.",
        epilog="example:\n  facevae data synth data/synth --n 5000 --size 64 --seed 0",
        formatter_class=HelpFormatter,
    )
    sub = group.add_subparsers(title="data commands", metavar="COMMAND")

    p = add_command(sub, "synth", cmd_synth, "render synthetic faces into a packed dataset",
                    "facevae data synth data/synth --n 5000 --size 64 --seed 0")
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--n", type=int, default=5000, help="number of faces")
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prior", choices=["celeba", "uniform"], default="celeba",
                   help="celeba: correlated, imbalanced factors like CelebA's; uniform: independent")

    p = add_command(sub, "dsprites", cmd_dsprites, "render a random subset of the dSprites factor grid (procedural)",
                    "facevae data dsprites data/dsprites --n 50000 --seed 0")
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--n", type=int, default=50000, help="grid points, drawn uniformly (the full grid is 737,280)")
    p.add_argument("--seed", type=int, default=0)

    p = add_command(sub, "fake-celeba", cmd_fake_celeba,
                    "write synthetic faces in CelebA's distributed layout (JPEGs + annotation files)",
                    "facevae data fake-celeba data/fake_celeba --n 2000 --zip")
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--n", type=int, default=2000, help="number of images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--zip", action="store_true", help="write img_align_celeba.zip instead of the folder")

    p = add_command(sub, "prepare", cmd_prepare,
                    "pack CelebA (folder, zip, CSV variant or torchvision layout) for training",
                    "facevae data prepare ~/datasets/celeba data/celeba64 --size 64",
                    description="Centre crop 148, antialiased resize, packed as memory-mappable uint8. "
                    "Corrupt images are skipped and listed; an interrupted run continues where it stopped.")
    p.add_argument("src", type=Path, help="CelebA folder, img_align_celeba.zip, or torchvision root")
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--size", type=int, default=64, help="output image side")
    p.add_argument("--crop", type=int, default=148, help="centre crop side before resizing")
    p.add_argument("--workers", type=int, default=0, help="decoder processes (0: one per core)")
    p.add_argument("--chunk", type=int, default=512, help="images per work unit (and per resume step)")
    p.add_argument("--full-decode", action="store_true", help="decode JPEGs at full scale (slower, marginally sharper)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing packed dataset")

    p = add_command(sub, "info", cmd_info, "image count, size, attributes, factors, splits, integrity",
                    "facevae data info data/synth --json")
    p.add_argument("dataset", type=Path)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = add_command(sub, "show", cmd_show, "save a labelled grid of example faces",
                    "facevae data show data/synth --out grid.png --n 32")
    p.add_argument("dataset", type=Path)
    p.add_argument("--out", type=Path, default=Path("grid.png"))
    p.add_argument("--n", type=int, default=32, help="number of faces")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default=None, help="show only this split's test part")

    p = add_command(sub, "explore", cmd_explore,
                    "attribute frequencies, correlation heatmap, top pairs, imbalance (PNG, CSV, JSON)",
                    "facevae data explore data/synth --out runs/explore")
    p.add_argument("dataset", type=Path)
    p.add_argument("--out", type=Path, required=True, help="output folder")

    p = add_command(sub, "split", cmd_split,
                    "split into train/valid/test and check each attribute's distribution",
                    "facevae data split data/synth --strategy stratified --ratios 0.8,0.1,0.1 --seed 0")
    p.add_argument("dataset", type=Path)
    p.add_argument("--strategy", choices=["official", "random", "stratified"], default="stratified")
    p.add_argument("--ratios", default="0.8,0.1,0.1", help="train,valid,test fractions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default=None, help="name to store the split under (default: the strategy)")


def parse_ratios(text: str) -> tuple[float, float, float]:
    try:
        ratios = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"--ratios {text!r}: expected three numbers like 0.8,0.1,0.1") from None
    if len(ratios) != 3:
        raise ValueError(f"--ratios {text!r}: expected three numbers like 0.8,0.1,0.1")
    return ratios


def cmd_synth(args: argparse.Namespace) -> int:
    from facevae.data.synthetic import write_synthetic_packed

    dataset = write_synthetic_packed(args.out, args.n, size=args.size, seed=args.seed, prior=args.prior)
    print(f"wrote {dataset}")
    return 0


def cmd_dsprites(args: argparse.Namespace) -> int:
    from facevae.data.sprites import write_dsprites_packed

    print(f"wrote {write_dsprites_packed(args.out, args.n, seed=args.seed)}")
    return 0


def cmd_fake_celeba(args: argparse.Namespace) -> int:
    from facevae.data.fake_celeba import write_fake_celeba

    path = write_fake_celeba(args.out, args.n, seed=args.seed, zip=args.zip)
    print(f"wrote a CelebA-layout folder with {args.n} images at {path}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from facevae.data.prepare import PreparationInterrupted, PrepareOptions, format_integrity, prepare_celeba

    options = PrepareOptions(size=args.size, crop=args.crop, workers=args.workers, chunk=args.chunk,
                             fast_decode=not args.full_decode)
    try:
        dataset, report = prepare_celeba(args.src, args.out, options, overwrite=args.overwrite)
    except PreparationInterrupted as exc:
        # the shell's convention for a process stopped by a signal: 130 for Ctrl-C, 143 for SIGTERM
        print(f"facevae: {exc}", file=sys.stderr)
        return 128 + exc.signum
    print(format_integrity(report))
    print(f"wrote {dataset} in {report['seconds']} s; integrity report: {dataset.root / 'integrity.json'}")
    return 0


def dataset_info(dataset) -> dict:
    rates = dataset.attributes.mean(axis=0) if len(dataset) else []
    splits = {}
    for name in dataset.split_names():
        assignment = dataset.load_split(name)
        splits[name] = {part: int((assignment == i).sum()) for i, part in enumerate(("train", "valid", "test"))}
    return {
        "path": str(dataset.root),
        "count": len(dataset),
        "height": dataset.meta.height,
        "width": dataset.meta.width,
        "source": dataset.meta.source,
        "preprocessing": dataset.meta.preprocessing,
        "attribute_rates": {n: round(float(r), 4) for n, r in zip(dataset.attribute_names, rates)},
        "factors": dict(zip(dataset.factor_names, dataset.factor_sizes)),
        "splits": splits,
        "integrity": dataset.integrity,
    }


def cmd_info(args: argparse.Namespace) -> int:
    from facevae.data.packed import PackedDataset

    info = dataset_info(PackedDataset(args.dataset))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['path']}: {info['count']} images, {info['height']}x{info['width']}")
    print(f"source: {info['source']}\npreprocessing: {info['preprocessing']}")
    print(f"{len(info['attribute_rates'])} attributes (positive rate):")
    for name, rate in info["attribute_rates"].items():
        print(f"  {name:<22} {rate:6.3f}")
    if info["factors"]:
        print("factors: " + ", ".join(f"{n} ({s})" for n, s in info["factors"].items()))
    for name, sizes in info["splits"].items():
        print(f"split {name}: " + ", ".join(f"{part} {n}" for part, n in sizes.items()))
    if info["integrity"]:
        from facevae.data.prepare import format_integrity

        print("integrity report:\n" + format_integrity(info["integrity"]))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from facevae.data.packed import PackedDataset
    from facevae.data.show import show_dataset

    path = show_dataset(PackedDataset(args.dataset), args.out, n=args.n, seed=args.seed, split=args.split)
    print(f"wrote {path}")
    return 0


def cmd_explore(args: argparse.Namespace) -> int:
    from facevae.data.explore import explore, format_summary
    from facevae.data.packed import PackedDataset

    summary = explore(PackedDataset(args.dataset), args.out)
    print(format_summary(summary))
    print(f"wrote figures, tables and summary.json to {args.out}")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from facevae.data.packed import PackedDataset
    from facevae.data.splits import format_distribution_check, split_dataset

    dataset = PackedDataset(args.dataset)
    name, report = split_dataset(dataset, args.strategy, parse_ratios(args.ratios), args.seed, name=args.name)
    print(format_distribution_check(report))
    print(f"stored split {name!r} in {dataset.root / 'splits'}")
    return 0
