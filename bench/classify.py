"""Attribute-classifier benchmarks: training and evaluation images/s per backbone, batched augmentation.

For each backbone (small, resnet18, resnet50, inception_v3; weights none, 17 attributes, stored
64×64 images resized to the backbone's input side as ``facevae classify train`` does):

  train    one optimiser step: heavy augmentation on the batch, forward (InceptionV3 with its
           auxiliary head), BCE, backward, AdamW, the whole network trained (the fine-tuning
           stage, the slower of the two)
  eval     forward in eval mode under no_grad, as ``facevae classify eval`` runs it

and the heavy augmentation alone: the batched form (``BatchAugment``, one ``grid_sample`` per
batch) against torchvision.transforms.v2 applied image by image (``torchvision_per_image``), the only way v2
gives each image its own draw.

The timed steps of the contestants are interleaved (``bench/train.py``'s ``interleaved``), so a
change in the machine's load falls on all of them alike. Prints a Markdown table; ``--json PATH``
keeps the numbers. A GPU, when present, is measured as well (``--device``).

    .venv/bin/python bench/classify.py                       # ~5 min on 2 CPU cores
    .venv/bin/python bench/classify.py --backbones small,resnet18 --steps 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from facevae.recognition.augment import BatchAugment, augment_spec, torchvision_per_image
from facevae.recognition.backbones import BACKBONES, AttributeClassifier, count_parameters, default_input_size
from train import interleaved, machine_line  # bench/train.py, beside this file

NUM_ATTRIBUTES = 17  # the synthetic faces' attributes
STORED_SIZE = 64
DEFAULT_BATCH = {"small": 64, "resnet18": 16, "resnet50": 8, "inception_v3": 8}


def batches(batch_size: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch_size, 3, STORED_SIZE, STORED_SIZE, generator=g).to(device)
    y = torch.randint(0, 2, (batch_size, NUM_ATTRIBUTES), generator=g).float().to(device)
    while True:
        yield x, y


def build(backbone: str, device: torch.device) -> AttributeClassifier:
    torch.manual_seed(0)
    size = default_input_size(backbone, STORED_SIZE)
    return AttributeClassifier(backbone, NUM_ATTRIBUTES, input_size=size).to(device)


def synced(fn, device: torch.device):
    """``fn`` followed by a device sync, so a GPU's queued work is inside the timing."""
    if device.type != "cuda":
        return fn

    def run(*args):
        out = fn(*args)
        torch.cuda.synchronize(device)
        return out

    return run


def train_step(model: AttributeClassifier, aux_weight: float = 0.4):
    augment = BatchAugment("heavy")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(x, y):
        model.train()
        logits, aux = model(augment(x), with_aux=True)
        loss = F.binary_cross_entropy_with_logits(logits, y)
        if aux is not None:
            loss = loss + aux_weight * F.binary_cross_entropy_with_logits(aux, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def eval_step(model: AttributeClassifier):
    def step(x, _y):
        model.eval()
        with torch.no_grad():
            model(x)

    return step


def bench_backbones(names, device, steps: int, warmup: int, rounds: int, batch_size: int | None) -> dict:
    models = {name: build(name, device) for name in names}
    sizes = {name: batch_size or DEFAULT_BATCH[name] for name in names}
    train = interleaved({n: (synced(train_step(m), device), batches(sizes[n], device)) for n, m in models.items()},
                        steps, warmup, rounds)
    evals = interleaved({n: (synced(eval_step(m), device), batches(4 * sizes[n], device)) for n, m in models.items()},
                        steps, warmup, rounds)
    return {name: {"input_size": models[name].input_size, "parameters": count_parameters(models[name]),
                   "train_batch": sizes[name], "eval_batch": 4 * sizes[name],
                   "train_images_per_s": train[name], "eval_images_per_s": evals[name]} for name in names}


def bench_augment(device, steps: int, warmup: int, rounds: int, batch_size: int = 64) -> dict:
    batched = BatchAugment("heavy")
    per_image = torchvision_per_image(augment_spec("heavy"))

    def v2_loop(x, _y):
        torch.stack([per_image(img) for img in x])

    contestants = {"batched (BatchAugment)": (synced(lambda x, _y: batched(x), device), batches(batch_size, device)),
                   "torchvision.transforms.v2, per image": (synced(v2_loop, device), batches(batch_size, device))}
    return {"batch": batch_size, **interleaved(contestants, steps, warmup, rounds)}


def table(results: dict, device: str) -> str:
    lines = [f"Training step: heavy augmentation, forward, BCE, backward, AdamW (weights none, {NUM_ATTRIBUTES} "
             f"attributes, {STORED_SIZE}×{STORED_SIZE} stored images resized to the input side).", "",
             f"| backbone ({device}) | input | parameters | train batch | train images/s | eval batch | eval images/s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in results["backbones"].items():
        lines.append(f"| {name} | {r['input_size']}×{r['input_size']} | {r['parameters'] / 1e6:.1f} M "
                     f"| {r['train_batch']} | {r['train_images_per_s']:.1f} | {r['eval_batch']} "
                     f"| {r['eval_images_per_s']:.1f} |")
    aug = results["augment"]
    names = [k for k in aug if k != "batch"]
    lines += ["", f"| heavy augmentation ({device}, batch {aug['batch']}, 64×64) | images/s |", "|---|---:|"]
    lines += [f"| {k} | {aug[k]:.0f} |" for k in names]
    lines.append(f"| ratio | {aug[names[0]] / aug[names[1]]:.1f}× |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", default=",".join(BACKBONES), help="comma-separated")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, or all (cpu, then cuda when present)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per figure")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    parser.add_argument("--rounds", type=int, default=2, help="the timed steps are interleaved in this many rounds")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"training batch for every backbone (default {DEFAULT_BATCH}; eval uses 4×)")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here too")
    args = parser.parse_args()
    names = [n.strip() for n in args.backbones.split(",") if n.strip()]
    unknown = set(names) - set(BACKBONES)
    if unknown:
        parser.error(f"--backbones: unknown {', '.join(sorted(unknown))}; choose from {', '.join(BACKBONES)}")
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()] or ["cpu"]

    out = {"machine": machine_line(), "date": time.strftime("%Y-%m-%d %H:%M"), "argv": sys.argv[1:], "devices": {}}
    print(f"machine: {out['machine']}\n")
    for name in devices:
        device = torch.device(name)
        results = {"backbones": bench_backbones(names, device, args.steps, args.warmup, args.rounds, args.batch_size),
                   "augment": bench_augment(device, max(args.steps, 10), args.warmup, args.rounds)}
        out["devices"][name] = results
        print(table(results, name) + "\n", flush=True)
    if args.device == "all" and not torch.cuda.is_available():
        print("no GPU: CPU figures only")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
