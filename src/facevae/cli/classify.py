"""``facevae classify train|eval`` and ``facevae probe``: recognise attributes in faces.

``classify train`` fits an attribute classifier (InceptionV3 / ResNet transfer learning or a small
CNN) into a run directory; ``classify eval`` measures it per attribute on the test split;
``probe`` fits logistic regressions from a VAE run's latents to the attributes and can compare
them with a classifier. The work is done by :mod:`facevae.recognition`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# facevae.recognition.config's THRESHOLD_RULES, which cannot be imported here without torch (see DeferredFlagsParser).
THRESHOLD_RULES = ("accuracy", "balanced_accuracy", "fixed")


def register(subparsers) -> None:
    from facevae.cli import DeferredFlagsParser, HelpFormatter

    group = subparsers.add_parser(
        "classify",
        help="train and evaluate attribute classifiers (InceptionV3 transfer learning, ResNets, a small CNN)",
        description="Attribute recognition: `classify train` fits a multi-label classifier into a run directory, "
        "`classify eval` measures it per attribute on the test split.",
        epilog="example:\n  facevae classify train --data data/synth --run-dir runs/cls --backbone small --epochs 5",
        formatter_class=HelpFormatter,
    )
    sub = group.add_subparsers(title="classify commands", metavar="COMMAND", parser_class=DeferredFlagsParser)
    _register_train(sub)
    _register_eval(sub)
    _register_probe(subparsers)


def _register_train(sub) -> None:
    from facevae.cli import add_command

    p = add_command(
        sub, "train", cmd_train, "train an attribute classifier (Lightning)",
        "facevae classify train --data data/synth --run-dir runs/cls --backbone inception_v3 --weights imagenet "
        "--augment heavy --balance pos-weight --freeze-epochs 2 --epochs 10",
        description="Multi-label BCE over the chosen attributes. Backbones: small (a compact CNN for 64×64, "
        "fast on CPU), resnet18, resnet50, inception_v3 (299×299 with its auxiliary head). Pretrained weights "
        "train in two stages: --freeze-epochs epochs of the head alone (backbone frozen), then fine-tuning. "
        "Writes config.yaml, checkpoints/{last,best}.ckpt, logs/, metrics.json, model.safetensors + "
        "model.json, and (unless --no-eval) analysis/eval.{json,png,md}. --resume RUN continues a killed run.",
    )
    p.add_flags = _add_train_flags


def _add_train_flags(p) -> None:
    """ClassifierConfig's fields as flags; added when `classify train` runs (facevae.recognition imports torch)."""
    from facevae.common.settings import add_arguments, argument_group
    from facevae.recognition.config import ClassifierConfig

    argument_group(p, "run").add_argument("--resume", type=Path, metavar="RUN",
                                          help="continue this run from checkpoints/last.ckpt")
    argument_group(p, "model")  # before the training section
    add_arguments(p, ClassifierConfig, group="training")


def _register_eval(sub) -> None:
    from facevae.cli import add_command

    p = add_command(
        sub, "eval", cmd_eval, "per-attribute accuracy, balanced accuracy, F1, ROC AUC of a classifier run",
        "facevae classify eval runs/cls --threshold-by balanced_accuracy",
        description="Thresholds are chosen per attribute on the validation split (to maximise accuracy, balanced "
        "accuracy, or fixed at 0.5) and applied to the test split. Prints the table and writes "
        "RUN/analysis/eval.json, eval.png (bar chart) and eval.md.",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="a finished classifier run directory")
    p.add_argument("--threshold-by", choices=THRESHOLD_RULES, default=None,
                   help="default: the run's own setting (accuracy unless trained with another)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, auto")


def _register_probe(subparsers) -> None:
    from facevae.cli import add_command, add_group_argument

    p = add_command(
        subparsers, "probe", cmd_probe, "logistic-regression probes from a VAE's latents to every attribute",
        "facevae probe runs/cvae --classifier runs/cls",
        description="Recognition with a VAE: encode the data to posterior means, fit one logistic regression per "
        "attribute on the training split, choose thresholds on the validation split, measure on the test split. "
        "Writes VAE_RUN/analysis/probe.json, probe.png and probe.md; with --classifier RUN the chart sets probe and "
        "classifier side by side per attribute.",
    )
    p.add_argument("run", type=Path, metavar="VAE_RUN", help="a finished VAE run directory")
    p.add_argument("--classifier", type=Path, metavar="RUN", default=None, help="a classifier run to compare with")
    p.add_argument("--max-train", type=int, default=20000, help="training images for the probes (a seeded subset)")
    p.add_argument("--C", type=float, default=1.0, dest="C", help="inverse L2 strength of the logistic regressions")
    p.add_argument("--threshold-by", choices=THRESHOLD_RULES, default="accuracy")
    p.add_argument("--seed", type=int, default=0)
    add_group_argument(p, "whose posterior means are probed")


def config_from_args(args: argparse.Namespace):
    from facevae.common.settings import values_from_args
    from facevae.recognition.config import ClassifierConfig

    settings = values_from_args(args, ClassifierConfig)
    if not settings["data"] or not settings["run_dir"]:
        raise ValueError("--data and --run-dir are needed (or --resume RUN)")
    return ClassifierConfig(**settings)


def cmd_train(args: argparse.Namespace) -> int:
    from facevae.recognition.train import resume_classifier, train_classifier

    if args.resume is not None:
        from facevae.cli.train import resume_overrides
        from facevae.common.settings import values_from_args
        from facevae.recognition.config import ClassifierConfig

        longer = resume_overrides(args, values_from_args(args, ClassifierConfig), ClassifierConfig, "the classifier")
        metrics = resume_classifier(args.resume, progress=args.progress, verbose=args.verbose, **longer)
        run_dir = args.resume
    else:
        config = config_from_args(args)
        metrics = train_classifier(config)
        run_dir = config.run_dir
    if metrics:
        summary = {"best_epoch": metrics.get("best_epoch"), "best_val_loss": metrics.get("best_val_loss"),
                   "train_seconds": metrics.get("train_seconds")}
        test = metrics.get("test")
        if test:
            summary |= {f"test_mean_{k}": round(v, 4) for k, v in test["mean"].items() if v is not None}
        print(json.dumps(summary, indent=2))
        if test:
            print((Path(run_dir) / "analysis" / "eval.md").read_text())
        else:
            print(f"evaluate it with: facevae classify eval {run_dir}")
        print(f"run directory: {run_dir}  (model.safetensors, metrics.json, logs/, analysis/)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from facevae.recognition.evaluate import evaluate

    result = evaluate(args.run, threshold_by=args.threshold_by, batch_size=args.batch_size, device=args.device)
    print(result["table_text"])
    print(f"thresholds chosen on the validation split by {result['threshold_by']}; "
          f"test images: {result['test_images']}; {result['eval_images_per_second']:.0f} images/s on {result['device']}")
    print(f"wrote {args.run / 'analysis' / 'eval.json'}, eval.png, eval.md")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from facevae.recognition.probe import probe_run

    result = probe_run(args.run, args.classifier, max_train=args.max_train, C=args.C,
                       threshold_by=args.threshold_by, seed=args.seed, group=args.group)
    print(result["table_text"])
    if result["classifier"] is not None:
        c = result["classifier"]
        print(f"classifier {c['run']}: mean accuracy {c['mean']['accuracy']:.3f} "
              f"(probe {result['mean']['accuracy']:.3f})")
        for note in c["notes"]:
            print(f"note: {note}")
    print(f"wrote {args.run / 'analysis' / 'probe.json'}, probe.png, probe.md")
    return 0
