"""Training settings, saved as ``config.yaml`` beside every run so the run can be rebuilt exactly."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from facevae.models.config import ModelConfig


@dataclass
class TrainConfig:
    data: str = ""
    split: str = "official"
    run_dir: str = ""
    epochs: int = 20
    patience: int = 5  # epochs without a better validation ELBO before early stopping; 0 disables
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"  # cosine | plateau | none
    batch_size: int = 128
    seed: int = 0
    flip: bool = False
    num_workers: int = 0
    on_device: bool = False
    accelerator: str = "auto"
    devices: str = "auto"  # "auto", a count ("2") or a list ("0,1")
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    compile: bool = False
    channels_last: bool = False
    gradient_clip: float = 0.0
    ema: float = 0.0  # decay of an exponential moving average of the weights (0: off); validated, saved and exported
    checkpoint_every_steps: int = 50  # how often last.ckpt is refreshed within an epoch (resume granularity)
    limit_train_batches: float = 1.0
    limit_val_batches: float = 1.0
    max_time: str | None = None  # "DD:HH:MM:SS" wall-clock budget
    eval_k: int = 100  # importance samples for the test log-likelihood
    eval_batches: int = 0  # test batches for the IWAE estimate (0: all)
    progress: bool = True


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "train": dataclasses.asdict(self.train)}

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        return cls(ModelConfig.from_dict(d.get("model", {})),
                   TrainConfig(**{k: v for k, v in d.get("train", {}).items() if k in known}))

    def save(self, path: Path) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "RunConfig":
        try:
            return cls.from_dict(yaml.safe_load(Path(path).read_text()) or {})
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: cannot read run config ({exc})") from None
