"""Train an attribute classifier into a run directory; resume it; export and load its weights.

A classifier run directory holds (the same conventions as VAE runs)::

    config.yaml              kind: attribute_classifier + the full ClassifierConfig
    checkpoints/last.ckpt    refreshed every few steps and at each epoch end (what --resume uses)
    checkpoints/best.ckpt    the lowest validation loss so far
    model.safetensors        the best weights, for loading without Lightning or pickle
    model.json               backbone, input size, normalisation, attribute names
    logs/                    CSV and TensorBoard logs
    metrics.json             per-epoch training/validation numbers, best epoch, the test summary
    analysis/eval.json|png|md   `facevae classify eval` (run at the end of training unless --no-eval)
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import lightning as L
import torch

from facevae.common.errors import RunError
from facevae.data.packed import PackedDataset
from facevae.recognition.augment import augment_spec
from facevae.recognition.backbones import AttributeClassifier, check_backbone, check_input_size, default_input_size
from facevae.recognition.config import ClassifierConfig
from facevae.recognition.data import ClassifierDataModule
from facevae.recognition.module import ClassifierModule
from facevae.training.callbacks import MetricsFile
from facevae.training.checkpoints import export_weights, read_exported
from facevae.training.config import CLASSIFIER_KIND, resolve_precision
from facevae.training.console import lightning_quiet
from facevae.training.run import (
    best_model,
    check_accelerator,
    check_resumable,
    claim_run_dir,
    fit,
    holding_run_dir,
    lightning_trainer,
)


def resolve_config(config: ClassifierConfig) -> ClassifierConfig:
    """Check the choices the config cannot (the backbone's and augmentation's names live with them, the attributes
    with the data) before anything is written; fill in the defaults."""
    check_backbone(config.backbone)
    augment_spec(config.augment)
    if not config.data or not config.run_dir:
        raise ValueError("--data and --run-dir are needed (or --resume RUN)")
    config.precision = resolve_precision(config.precision, config.accelerator)
    packed = PackedDataset(config.data)
    available = packed.attribute_names
    if not config.attributes or config.attributes == ["all"]:
        config.attributes = list(available)
    else:
        from facevae.data.attributes import check_attribute_names

        check_attribute_names(list(config.attributes), available)
        config.attributes = [a for a in available if a in set(config.attributes)]  # the dataset's order
    if not config.image_size:
        config.image_size = default_input_size(config.backbone, packed.meta.height)
    check_input_size(config.backbone, config.image_size)
    return config


def make_datamodule(config: ClassifierConfig) -> ClassifierDataModule:
    return ClassifierDataModule(config.data, split=config.split, batch_size=config.batch_size,
                                num_workers=config.num_workers, flip=False, attributes=config.attributes,
                                image_size=None, seed=config.seed, balance=config.balance)


def train_classifier(config: ClassifierConfig, resume: bool = False) -> dict:
    """Fit, keep the best checkpoint, export it, evaluate it (unless ``config.evaluate`` is off)."""
    run_dir = Path(config.run_dir)
    check_accelerator(config.accelerator, config.devices)
    claim_run_dir(run_dir, resume)
    config = resolve_config(config)
    L.seed_everything(config.seed, workers=True, verbose=False)
    datamodule = make_datamodule(config)
    pos_weight = datamodule.pos_weight().tolist() if config.balance == "pos-weight" else None
    module = ClassifierModule(config.to_dict(), pos_weight)
    weights_info = None
    if not resume and config.weights != "none":
        # Before the run directory exists: a download that fails or a file that does not fit leaves nothing behind.
        weights_info = module.model.load_backbone_weights(config.weights)
    with holding_run_dir(run_dir, resume, what="training a classifier") as (last_ckpt, launched_copy):
        if resume:
            check_resumable(run_dir)
        if not launched_copy and not resume:
            config.save(run_dir / "config.yaml")
        return _fit_and_export(config, module, datamodule, weights_info, last_ckpt if resume else None)


def _fit_and_export(config: ClassifierConfig, module: ClassifierModule, datamodule, weights_info: dict | None,
                    resume_from: Path | None) -> dict:
    run_dir = Path(config.run_dir)
    metrics = MetricsFile(run_dir / "metrics.json")
    if weights_info is not None:
        metrics.update(weights={k: v for k, v in weights_info.items() if k != "head_initialised"})
    started = time.perf_counter()
    with lightning_quiet(config.verbose), warnings.catch_warnings():
        trainer = lightning_trainer(config, run_dir, "val_loss", "min", [metrics], num_sanity_val_steps=0)
        warnings.filterwarnings("ignore", message=".*upsample_bilinear2d_backward_out_cuda.*")
        # The head-only stage puts the frozen batch-norm layers in eval mode on purpose.
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
        fit(trainer, module, datamodule, resume_from, run_dir, command="facevae classify train")
    if not trainer.is_global_zero:
        return {}
    seconds = time.perf_counter() - started
    model = best_model(module, run_dir, "finite validation loss")
    export(model, run_dir, config.attributes)
    epochs = metrics.data.get("epochs", [])
    losses = [e["val_loss"] for e in epochs if e.get("val_loss") is not None]
    best_loss = min(losses) if losses else None
    metrics.update(best_epoch=next((e["epoch"] for e in epochs if e.get("val_loss") == best_loss), None),
                   best_val_loss=best_loss, train_seconds=round(seconds, 1), global_step=trainer.global_step)
    if config.evaluate:
        from facevae.recognition.evaluate import evaluate

        result = evaluate(run_dir, threshold_by=config.threshold_by)
        metrics.update(test={"mean": result["mean"], "threshold_by": result["threshold_by"],
                             "eval": "analysis/eval.json"})
    return metrics.data


def export(model: AttributeClassifier, run_dir: Path, attribute_names: list[str]) -> Path:
    """model.safetensors + model.json: everything :func:`load_classifier` needs, no pickle, no Lightning."""
    info = {"kind": CLASSIFIER_KIND, "backbone": model.backbone, "input_size": model.input_size,
            "pretrained_normalisation": model.pretrained, "attribute_names": list(attribute_names),
            "width": model.width}
    return export_weights(model, run_dir, info)


def load_classifier(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> AttributeClassifier:
    """A trained classifier from a run directory, in eval mode; ``.attribute_names`` lists its outputs."""
    state, info = read_exported(run_dir, "classifier")
    if info.get("kind") != CLASSIFIER_KIND:
        raise RunError(f"{run_dir}: not an attribute-classifier run (a VAE run?)")
    model = AttributeClassifier(info["backbone"], len(info["attribute_names"]), input_size=info["input_size"],
                                pretrained=info["pretrained_normalisation"], width=info.get("width") or 32, init=False)
    model.load_state_dict(state)
    model.attribute_names = list(info["attribute_names"])
    return model.to(device).eval()


def resume_classifier(run_dir: str | os.PathLike, **overrides) -> dict:
    config = ClassifierConfig.load(Path(run_dir) / "config.yaml")
    config.run_dir = str(run_dir)
    for key, value in overrides.items():
        setattr(config, key, value)
    return train_classifier(config, resume=True)
