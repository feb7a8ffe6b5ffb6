"""``facevae train``: fit a model of the VAE family on a packed dataset, or resume a run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    from facevae.cli import add_command

    p = add_command(
        subparsers, "train", cmd_train, "train a VAE / conditional VAE / β-VAE (Lightning)",
        "facevae train --data runs/demo/data --model cvae --run-dir runs/cvae --epochs 10 --split stratified",
        description="Train into a run directory (config.yaml, checkpoints, logs, figures, metrics.json, "
        "model.safetensors). --resume RUN continues a killed run from its last checkpoint.",
    )
    p.add_argument("--resume", type=Path, metavar="RUN", help="continue this run from checkpoints/last.ckpt")
    p.add_argument("--run-dir", type=Path, help="where the run goes")
    add_train_arguments(p)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that make a RunConfig (see run_config_from_args); `facevae sweep` shares them."""
    from facevae.cli import add_scale_arguments

    p.add_argument("--data", type=Path, help="packed dataset folder")
    p.add_argument("--split", default="official", help="stored split to train on")
    m = p.add_argument_group("model")
    m.add_argument("--model", choices=["vae", "cvae", "betavae"], default="cvae")
    m.add_argument("--latent-dim", type=int, default=64)
    m.add_argument("--width", type=int, default=2, help="channel multiplier k (the report's k=1,2,4)")
    m.add_argument("--image-size", type=int, default=64, choices=[32, 64, 128])
    m.add_argument("--conditions", default="all",
                   help="cvae condition: 'all' attributes, 'report' (hair colour, beard, gender, pale skin) or names a,b,c")
    m.add_argument("--condition-mode", choices=["vector", "embedding"], default="vector")
    m.add_argument("--conditional", action="store_true", help="betavae: condition on attributes too")
    m.add_argument("--beta", type=float, default=1.0)
    m.add_argument("--beta-norm", type=float, default=None, help="normalised β: β = β_norm·N/M")
    m.add_argument("--likelihood", choices=["discretized_logistic", "gaussian"], default="discretized_logistic")
    m.add_argument("--free-bits", type=float, default=0.0, help="nats per latent dimension")
    m.add_argument("--kl-warmup-steps", type=int, default=0)
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=20)
    t.add_argument("--patience", type=int, default=5, help="early stopping on validation ELBO (0: off)")
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--lr-schedule", choices=["cosine", "plateau", "none"], default="cosine")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--flip", action="store_true", help="random horizontal flips")
    t.add_argument("--num-workers", type=int, default=0)
    t.add_argument("--on-device", action="store_true", help="hold the training set as one tensor on the device")
    t.add_argument("--gradient-clip", type=float, default=0.0)
    t.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="validate, keep and export an exponential moving average of the weights, e.g. 0.999 (0: off)")
    t.add_argument("--checkpoint-every-steps", type=int, default=50)
    t.add_argument("--limit-train-batches", type=float, default=1.0)
    t.add_argument("--max-time", default=None, help="wall-clock budget DD:HH:MM:SS")
    t.add_argument("--eval-k", type=int, default=100, help="importance samples for test log p(x)")
    t.add_argument("--eval-batches", type=int, default=0, help="test batches for the IWAE estimate (0: all)")
    s = add_scale_arguments(p)
    s.add_argument("--compile", action="store_true", help="torch.compile the model")
    s.add_argument("--channels-last", action="store_true")


def run_config_from_args(args: argparse.Namespace):
    from facevae.data.packed import PackedDataset
    from facevae.models.config import REPORT_CONDITION_NAMES, ModelConfig
    from facevae.training.config import RunConfig, TrainConfig

    if args.data is None or args.run_dir is None:
        raise ValueError("--data and --run-dir are needed (or --resume RUN)")
    if not 0.0 <= args.ema < 1.0:
        raise ValueError(f"--ema is a decay in [0, 1), e.g. 0.999 (0: off); got {args.ema}")
    conditional = args.model == "cvae" or (args.model == "betavae" and args.conditional)
    names: list[str] = []
    if conditional:
        available = PackedDataset(args.data).attribute_names
        if args.conditions == "all":
            names = available
        elif args.conditions == "report":
            names = [n for n in REPORT_CONDITION_NAMES if n in available]
        else:
            from facevae.data.attributes import check_attribute_names

            names = check_attribute_names([n.strip() for n in args.conditions.split(",") if n.strip()], available)
    model = ModelConfig(model=args.model, latent_dim=args.latent_dim, width=args.width, image_size=args.image_size,
                        conditional=conditional, condition_names=names, condition_mode=args.condition_mode,
                        beta=args.beta, beta_norm=args.beta_norm, likelihood=args.likelihood,
                        free_bits=args.free_bits, kl_warmup_steps=args.kl_warmup_steps)
    train = TrainConfig(
        data=str(args.data), split=args.split, run_dir=str(args.run_dir), epochs=args.epochs, patience=args.patience,
        lr=args.lr, lr_schedule=args.lr_schedule, batch_size=args.batch_size, seed=args.seed, flip=args.flip,
        num_workers=args.num_workers, on_device=args.on_device, accelerator=args.accelerator, devices=args.devices,
        num_nodes=args.num_nodes, strategy=args.strategy, precision=args.precision, compile=args.compile,
        channels_last=args.channels_last, gradient_clip=args.gradient_clip, ema=args.ema,
        checkpoint_every_steps=args.checkpoint_every_steps, limit_train_batches=args.limit_train_batches,
        max_time=args.max_time, eval_k=args.eval_k, eval_batches=args.eval_batches, progress=not args.no_progress,
    )
    return RunConfig(model, train)


def cmd_train(args: argparse.Namespace) -> int:
    from facevae.training.run import resume, train

    if args.resume is not None:
        metrics = resume(args.resume, progress=not args.no_progress)
        run_dir = args.resume
    else:
        config = run_config_from_args(args)
        metrics = train(config)
        run_dir = args.run_dir
    if metrics:
        test = metrics.get("test", {})
        print(json.dumps({"best_epoch": metrics.get("best_epoch"), "best_val_elbo": metrics.get("best_val_elbo"),
                          **{k: round(v, 4) if isinstance(v, float) else v for k, v in test.items()}}, indent=2))
        print(f"run directory: {run_dir}  (model.safetensors, metrics.json, figures/, logs/)")
    return 0
