"""Classifier training settings, saved as ``config.yaml`` beside every classifier run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml

from facevae.common.settings import setting
from facevae.training.config import CLASSIFIER_KIND, TrainerSettings

BALANCING = ("none", "pos-weight", "sampler")
THRESHOLD_RULES = ("accuracy", "balanced_accuracy", "fixed")


@dataclass
class ClassifierConfig(TrainerSettings):
    """A classifier run's settings; ``facevae classify train`` derives its flags from the fields.

    The backbone and augmentation names are checked when a run starts (recognition.train), by the
    modules that define them.
    """

    data: str = setting("", "packed dataset folder", group="run")
    split: str = setting("official", "stored split to train on", group="run")
    run_dir: str = setting("", "where the run goes", group="run")
    backbone: str = setting("small", "small, resnet18, resnet50 or inception_v3", metavar="NAME", group="model")
    weights: str = setting("none", "imagenet: torchvision's ImageNet weights (downloaded once into torch.hub's "
                           "cache); PATH: a local state dict (.pth/.pt/.ckpt/.safetensors); none: from scratch. Only "
                           "read when a run starts: checkpoints hold them after", metavar="imagenet|PATH|none",
                           group="model")
    attributes: list[str] = setting([], "attribute names A,B,C, or all (the default); kept in the dataset's order",
                                    group="model")
    image_size: int = setting(0, "input side the backbone sees (0: small = stored size, ResNets 224, InceptionV3 "
                              "299)", at_least=0, group="model")
    width: int = setting(32, "the small CNN's base channel count", at_least=1, group="model")
    augment: str = setting("light", "none; light: flips, small shifts/zoom/rotation; heavy: the report's flip, "
                           "rotation 30°, zoom 0.2, shifts 0.2, shear 0.2, plus colour jitter",
                           metavar="{none,light,heavy}")
    balance: str = setting("none", "class imbalance: BCE positive weights (neg/pos) or a balanced sampler",
                           choices=BALANCING)
    freeze_epochs: int = setting(-1, "head-only epochs before fine-tuning (-1: 1 with pretrained weights, else 0)",
                                 at_least=-1)
    epochs: int = setting(10, "passes over the training split", at_least=1)
    patience: int = setting(0, "epochs without a lower validation loss before early stopping (0: off)", at_least=0)
    batch_size: int = setting(64, "images per step", at_least=1)
    lr: float = setting(2e-3, "learning rate of the head (and of a backbone trained from scratch)", above=0)
    backbone_lr: float = setting(-1.0, "fine-tuning learning rate of a pretrained backbone (-1: lr/10)")
    weight_decay: float = setting(1e-4, "AdamW weight decay", at_least=0)
    aux_weight: float = setting(0.4, "InceptionV3's auxiliary loss weight", at_least=0)
    seed: int = setting(0, "seed of the initial weights, the data order and the augmentations", at_least=0)
    num_workers: int = setting(0, "data-loading processes (0: in the training process)", at_least=0)
    threshold_by: str = setting("accuracy", "how the final evaluation picks each attribute's threshold on the "
                                "validation split", choices=THRESHOLD_RULES)
    evaluate: bool = setting(True, "skip the test evaluation at the end", flag="--no-eval")

    def __post_init__(self):
        super().__post_init__()
        if self.backbone_lr != -1 and self.backbone_lr <= 0:
            raise ValueError(f"--backbone-lr must be > 0, or -1 for lr/10; got {self.backbone_lr}")

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
        tmp.write_text(yaml.safe_dump({"kind": CLASSIFIER_KIND, "classifier": self.to_dict()}, sort_keys=False))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ClassifierConfig:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: cannot read run config ({exc})") from None
        if raw.get("kind") != CLASSIFIER_KIND:
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
    return isinstance(raw, dict) and raw.get("kind") == CLASSIFIER_KIND
