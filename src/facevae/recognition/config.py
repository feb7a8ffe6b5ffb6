"""Classifier training settings, saved as ``config.yaml`` beside every classifier run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

BALANCING = ("none", "pos-weight", "sampler")
THRESHOLD_RULES = ("accuracy", "balanced_accuracy", "fixed")


@dataclass
class ClassifierConfig:
    data: str = ""
    split: str = "official"
    run_dir: str = ""
    backbone: str = "small"  # small | resnet18 | resnet50 | inception_v3
    weights: str = "none"  # imagenet | none | PATH (only read when a run starts; checkpoints hold them after)
    attributes: list[str] = field(default_factory=list)  # resolved names, in the dataset's order
    image_size: int = 0  # the backbone's input side; 0 = its default (small: stored size, ResNet 224, Inception 299)
    width: int = 32  # the small CNN's base channel count
    augment: str = "light"  # none | light | heavy
    balance: str = "none"  # none | pos-weight | sampler
    freeze_epochs: int = -1  # head-only epochs before fine-tuning; -1 = 1 with pretrained weights, else 0
    epochs: int = 10
    patience: int = 0  # epochs without a lower validation loss before early stopping; 0 disables
    batch_size: int = 64
    lr: float = 2e-3  # the head's learning rate (and the backbone's when trained from scratch)
    backbone_lr: float = -1.0  # fine-tuning learning rate of a pretrained backbone; -1 = lr / 10
    weight_decay: float = 1e-4
    aux_weight: float = 0.4  # InceptionV3's auxiliary loss weight
    seed: int = 0
    num_workers: int = 0
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    gradient_clip: float = 0.0
    checkpoint_every_steps: int = 50
    limit_train_batches: float = 1.0  # a fraction (float) or a number of batches (int)
    limit_val_batches: float = 1.0
    max_time: str | None = None  # "DD:HH:MM:SS"
    threshold_by: str = "accuracy"  # how `classify eval` picks each attribute's threshold on the validation split
    evaluate: bool = True  # run `classify eval` when training ends
    progress: bool = True

    @property
    def pretrained(self) -> bool:
        return self.weights != "none"

    @property
    def head_only_epochs(self) -> int:
        if self.freeze_epochs >= 0:
            return self.freeze_epochs
        return 1 if self.pretrained else 0

    @property
    def fine_tune_lr(self) -> float:
        if self.backbone_lr > 0:
            return self.backbone_lr
        return self.lr / 10 if self.pretrained else self.lr

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ClassifierConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in known})

    def save(self, path: Path) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(yaml.safe_dump({"kind": "attribute_classifier", "classifier": self.to_dict()}, sort_keys=False))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ClassifierConfig:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: cannot read run config ({exc})") from None
        if raw.get("kind") != "attribute_classifier":
            raise ValueError(f"{Path(path).parent}: not an attribute-classifier run (a VAE run? "
                             "`facevae classify` takes runs made by `facevae classify train`)")
        return cls.from_dict(raw.get("classifier", {}))


def is_classifier_run(run_dir: str | Path) -> bool:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return False
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(raw, dict) and raw.get("kind") == "attribute_classifier"
