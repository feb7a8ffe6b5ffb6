"""``facevae reconstruct|sample|traverse|edit``: look at what a trained run learned.

Each command takes a finished run directory, writes its PNG and JSON into RUN/analysis/ and prints
where. The work is done by :mod:`facevae.analysis` (``reconstruct``, ``sample``, ``traverse``,
``edit``), which the HTML report calls too.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    from facevae.cli import add_command, add_group_argument

    p = add_command(
        subparsers, "reconstruct", cmd_reconstruct, "originals above their reconstructions, with per-image error",
        "facevae reconstruct runs/cvae --n 16",
        description="Encode test images to their posterior means, decode them, and show originals above "
        "reconstructions with each image's MSE and PSNR. Writes RUN/analysis/reconstruct.png and "
        "reconstruct.json (per-image MSE, PSNR, reconstruction bits/dim, and their means).",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="a finished run directory")
    p.add_argument("--n", type=int, default=16, help="number of test images")
    p.add_argument("--offset", type=int, default=0, help="first test image (position in the test split)")

    p = add_command(
        subparsers, "sample", cmd_sample, "prior samples; a conditional model's with chosen attributes",
        "facevae sample runs/cvae --n 64 --set Smiling=1 --set Eyeglasses=0 --temperature 0.8",
        description="Decode z ~ N(0, T²·I). A conditional model's samples take the attribute rows of random "
        "test images as their conditions; --set fixes the named attributes (which must be in the model's "
        "condition) in all of them, and a second sheet shows the same z with the opposite values. Writes "
        "RUN/analysis/sample[_SETTINGS].png, [_compare.png] and .json (the conditions used).",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="a finished run directory")
    p.add_argument("--n", type=int, default=64, help="number of samples")
    p.add_argument("--set", action="append", default=[], metavar="NAME=0|1", dest="settings",
                   help="fix an attribute of the condition (repeatable)")
    p.add_argument("--temperature", type=float, default=1.0, help="prior standard deviation of z")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same z and conditions")

    p = add_command(
        subparsers, "traverse", cmd_traverse, "latent traversals: one dimension moved across a range, per face",
        "facevae traverse runs/cvae --dims 2,9,12 --faces 5 --range -3 3 --steps 9",
        description="For each dimension, several test faces (posterior means) with that one latent set to "
        "evenly spaced values; one sheet per dimension (RUN/analysis/traverse/dim_NNN.png), an overview of "
        "all dimensions sorted by KL (traverse_overview.png) and traverse.json. Dimensions are labelled with "
        "the names in RUN/analysis/dims.json when it exists. --dims all = every active dimension.",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="a finished run directory")
    p.add_argument("--dims", default="all", help="'all' (the active ones) or numbers, e.g. 2,9,12 or 0-7")
    p.add_argument("--faces", type=int, default=5, help="test faces per sheet")
    p.add_argument("--range", type=float, nargs=2, default=[-3.0, 3.0], metavar=("LOW", "HIGH"), dest="value_range",
                   help="values of the latent (prior standard deviations)")
    p.add_argument("--steps", type=int, default=9, help="values across the range")
    p.add_argument("--offset", type=int, default=0, help="first test face (position in the test split)")
    add_group_argument(p, "to traverse")

    p = add_command(
        subparsers, "edit", cmd_edit, "edit a face's attributes and show it before and after",
        "facevae edit runs/cvae --index 17 --set Smiling=1 --set Bangs=0",
        description="Change a face's attributes: through the condition for a conditional model's condition "
        "attributes (z fixed), along the attribute's latent direction (difference of class means of posterior "
        "means) otherwise. An image given by path is centre-cropped and resized as in the dataset's "
        "preparation. Writes RUN/analysis/edit_FACE_SETTINGS.png (input, a strength strip from before to "
        "after, and the difference) and .json (attributes changed, direction norms).",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="a finished run directory")
    face = p.add_mutually_exclusive_group(required=True)
    face.add_argument("--image", type=Path, metavar="PATH", help="a picture file of a face")
    face.add_argument("--index", type=int, metavar="I", help="a test image (position in the test split)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=0|1", dest="settings",
                   help="an attribute to set (repeatable; at least one)")
    p.add_argument("--given", action="append", default=[], metavar="NAME=0|1",
                   help="an attribute the --image face has, for a conditional model's starting condition "
                   "(others: the training split's most common value)")
    p.add_argument("--steps", type=int, default=5, help="edit strengths from before (0) to after (1)")
    p.add_argument("--direction-split", choices=["test", "train"], default="test",
                   help="where the latent directions' class means come from (train if the test split lacks a class)")


def _open(args: argparse.Namespace):
    from facevae.training.rundir import open_run

    return open_run(args.run)


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from facevae.analysis.reconstruct import reconstruct

    result = reconstruct(_open(args), n=args.n, offset=args.offset)
    mean = result["mean"]
    print(f"{result['n']} test images: mean MSE {mean['mse']:.5f}, PSNR {mean['psnr_db']:.2f} dB, "
          f"reconstruction {mean['recon_bits_per_dim']:.3f} bits/dim")
    print(f"wrote {result['png']}")
    print(f"wrote {result['json']}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from facevae.analysis.sample import parse_settings, sample

    settings = parse_settings(args.settings)
    run = _open(args)
    result = sample(run, n=args.n, settings=settings, temperature=args.temperature, seed=args.seed)
    for key in ("png", "compare_png", "json"):
        if result.get(key):
            print(f"wrote {result[key]}")
    return 0


def cmd_traverse(args: argparse.Namespace) -> int:
    from facevae.analysis.traverse import traverse

    run = _open(args)
    result = traverse(run, dims=args.dims, faces=args.faces, value_range=tuple(args.value_range), steps=args.steps,
                      offset=args.offset, group=args.group)
    if result["all_inactive"]:
        print("note: no dimension is active (the posterior means do not vary); showing every dimension")
    if not result["names_from"]:
        print("note: no analysis/dims.json, so the dimensions are unnamed")
    for entry in result["dims"]:
        print(f"wrote {entry['png']}  ({entry['label']}, KL {entry['kl']:.3f})")
    print(f"wrote {result['overview']['png']}")
    print(f"wrote {result['json']}")
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    from facevae.analysis.edit import edit
    from facevae.analysis.sample import parse_settings

    settings = parse_settings(args.settings)
    given = parse_settings(args.given)
    if not settings:
        raise ValueError("nothing to edit: give the attributes to change, e.g. --set Smiling=1")
    run = _open(args)
    result = edit(run, image=args.image, index=args.index, settings=settings, steps=args.steps, given=given,
                  direction_split=args.direction_split)
    for change in result["changes"]:
        before = "?" if change["before"] is None else change["before"]
        line = f"{change['attribute']}: {before} -> {change['after']} ({change['method']}"
        if change["method"] == "latent direction":
            line += f", |d| = {change['direction_norm']:.3f} from the {change['split']} split, alpha = {change['alpha']:+.3f}"
        print(line + ")")
        if change["method"] == "condition" and change["before"] == change["after"]:
            print(f"note: the face already has {change['attribute']}={change['after']}; its condition does not change")
    print(f"latent shift |z' - z| = {result['latent_shift_norm']:.3f}; image change MSE {result['image_change_mse']:.5f}")
    print(f"wrote {result['png']}")
    print(f"wrote {result['json']}")
    return 0
