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


def _batches(text: str):
    """--limit-*-batches: '0.25' is a fraction of the batches, '3' a number of batches."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return int(value) if "." not in text and value > 1 else value


def register(subparsers) -> None:
    from facevae.cli import HelpFormatter, add_command, add_scale_arguments

    group = subparsers.add_parser(
        "classify",
        help="train and evaluate attribute classifiers (InceptionV3 transfer learning, ResNets, a small CNN)",
        description="Attribute recognition: `classify train` fits a multi-label classifier into a run directory, "
        "`classify eval` measures it per attribute on the test split.",
        epilog="example:\n  facevae classify train --data data/synth --run-dir runs/cls --backbone small --epochs 5",
        formatter_class=HelpFormatter,
    )
    sub = group.add_subparsers(title="classify commands", metavar="COMMAND")

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
    p.add_argument("--resume", type=Path, metavar="RUN", help="continue this run from checkpoints/last.ckpt")
    p.add_argument("--data", type=Path, help="packed dataset folder")
    p.add_argument("--run-dir", type=Path, help="where the run goes")
    p.add_argument("--split", default="official", help="stored split to train on")
    m = p.add_argument_group("model")
    m.add_argument("--backbone", default="small", metavar="NAME",
                   help="small, resnet18, resnet50 or inception_v3")
    m.add_argument("--weights", default="none", metavar="imagenet|PATH|none",
                   help="imagenet: torchvision's ImageNet weights (downloaded once into torch.hub's cache); "
                   "PATH: a local state dict (.pth/.pt/.ckpt/.safetensors); none: from scratch")
    m.add_argument("--attributes", default="all", help="'all' or names a,b,c")
    m.add_argument("--image-size", type=int, default=0,
                   help="input side the backbone sees (0: small = stored size, ResNets 224, InceptionV3 299)")
    m.add_argument("--width", type=int, default=32, help="the small CNN's base channel count")
    t = p.add_argument_group("training")
    t.add_argument("--augment", choices=["none", "light", "heavy"], default="light",
                   help="light: flips, small shifts/zoom/rotation; heavy: the report's flip, rotation 30°, "
                   "zoom 0.2, shifts 0.2, shear 0.2, plus colour jitter")
    t.add_argument("--balance", choices=["none", "pos-weight", "sampler"], default="none",
                   help="class imbalance: BCE positive weights (neg/pos) or a balanced sampler")
    t.add_argument("--freeze-epochs", type=int, default=-1,
                   help="head-only epochs before fine-tuning (-1: 1 with pretrained weights, else 0)")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--patience", type=int, default=0, help="early stopping on validation loss (0: off)")
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=2e-3, help="learning rate of the head (and of a backbone from scratch)")
    t.add_argument("--backbone-lr", type=float, default=-1.0,
                   help="fine-tuning learning rate of a pretrained backbone (-1: lr/10)")
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--num-workers", type=int, default=0)
    t.add_argument("--gradient-clip", type=float, default=0.0)
    t.add_argument("--checkpoint-every-steps", type=int, default=50)
    t.add_argument("--limit-train-batches", type=_batches, default=1.0, help="fraction (0.25) or count (3)")
    t.add_argument("--limit-val-batches", type=_batches, default=1.0, help="fraction (0.25) or count (3)")
    t.add_argument("--max-time", default=None, help="wall-clock budget DD:HH:MM:SS")
    t.add_argument("--threshold-by", choices=["accuracy", "balanced_accuracy", "fixed"], default="accuracy",
                   help="how the final evaluation picks each attribute's threshold on the validation split")
    t.add_argument("--no-eval", action="store_true", help="skip the test evaluation at the end")
    add_scale_arguments(p)

    p = add_command(
        sub, "eval", cmd_eval, "per-attribute accuracy, balanced accuracy, F1, ROC AUC of a classifier run",
        "facevae classify eval runs/cls --threshold-by balanced_accuracy",
        description="Thresholds are chosen per attribute on the validation split (to maximise accuracy, balanced "
        "accuracy, or fixed at 0.5) and applied to the test split. Prints the table and writes "
        "RUN/analysis/eval.json, eval.png (bar chart) and eval.md.",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="a finished classifier run directory")
    p.add_argument("--threshold-by", choices=["accuracy", "balanced_accuracy", "fixed"], default=None,
                   help="default: the run's own setting (accuracy unless trained with another)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, auto")

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
    p.add_argument("--threshold-by", choices=["accuracy", "balanced_accuracy", "fixed"], default="accuracy")
    p.add_argument("--seed", type=int, default=0)


def config_from_args(args: argparse.Namespace):
    from facevae.recognition.config import ClassifierConfig

    if args.data is None or args.run_dir is None:
        raise ValueError("--data and --run-dir are needed (or --resume RUN)")
    names = [] if args.attributes.strip() == "all" else [a.strip() for a in args.attributes.split(",") if a.strip()]
    return ClassifierConfig(
        data=str(args.data), split=args.split, run_dir=str(args.run_dir), backbone=args.backbone,
        weights=args.weights, attributes=names, image_size=args.image_size, width=args.width, augment=args.augment,
        balance=args.balance, freeze_epochs=args.freeze_epochs, epochs=args.epochs, patience=args.patience,
        batch_size=args.batch_size, lr=args.lr, backbone_lr=args.backbone_lr, weight_decay=args.weight_decay,
        seed=args.seed, num_workers=args.num_workers, accelerator=args.accelerator, devices=args.devices,
        num_nodes=args.num_nodes, strategy=args.strategy, precision=args.precision, gradient_clip=args.gradient_clip,
        checkpoint_every_steps=args.checkpoint_every_steps, limit_train_batches=args.limit_train_batches,
        limit_val_batches=args.limit_val_batches, max_time=args.max_time, threshold_by=args.threshold_by,
        evaluate=not args.no_eval, progress=not args.no_progress,
    )


def cmd_train(args: argparse.Namespace) -> int:
    from facevae.recognition.train import resume_classifier, train_classifier

    if args.resume is not None:
        metrics = resume_classifier(args.resume, progress=not args.no_progress)
        run_dir = args.resume
    else:
        metrics = train_classifier(config_from_args(args))
        run_dir = args.run_dir
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
                       threshold_by=args.threshold_by, seed=args.seed)
    print(result["table_text"])
    if result["classifier"] is not None:
        c = result["classifier"]
        print(f"classifier {c['run']}: mean accuracy {c['mean']['accuracy']:.3f} "
              f"(probe {result['mean']['accuracy']:.3f})")
        for note in c["notes"]:
            print(f"note: {note}")
    print(f"wrote {args.run / 'analysis' / 'probe.json'}, probe.png, probe.md")
    return 0
