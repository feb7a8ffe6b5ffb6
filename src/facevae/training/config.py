"""Training settings, saved as ``config.yaml`` beside every run so the run can be rebuilt exactly.

Each setting is declared once, as a field with its help and checks; ``facevae train``, ``facevae
sweep`` and ``facevae classify train`` derive their flags from the fields (facevae.common.settings).
"""

from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from facevae.common.errors import FacevaeError, RunError
from facevae.common.files import write_text_atomic
from facevae.common.settings import check_settings, flag_name, setting
from facevae.models.config import REPORT_CONDITION_NAMES, ModelConfig, is_conditional_model

LR_SCHEDULES = ("cosine", "plateau", "none")
# What Lightning's Trainer accepts as a precision (its own names and their short aliases).
PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "64", "16", "bf16",
              "transformer-engine", "transformer-engine-float16")
_DEVICES = re.compile(r"auto|-1|[1-9]\d*|\d+(,\d+)*,|\d+(,\d+)+")
_DURATION = re.compile(r"\d+:\d+:\d+:\d+")


@dataclass
class TrainerSettings:
    """What every training command hands Lightning's Trainer, with the same meaning for each of them."""

    accelerator: str = setting("auto", "cpu, gpu, auto", group="scale")
    devices: str = setting("auto", "auto, a count (2), -1 (all) or a list of indices (0,1)", group="scale")
    num_nodes: int = setting(1, "machines", at_least=1, group="scale")
    strategy: str = setting("auto", "auto, ddp, ddp_spawn, ...", group="scale")
    precision: str = setting("auto", "auto (bf16-mixed where the device computes bfloat16 natively: a CPU with "
                             "AMX, a GPU that supports it; else 32-true), 32-true, bf16-mixed, 16-mixed, ...",
                             choices=PRECISIONS, metavar="PRECISION", group="scale")
    progress: bool = setting(True, "no progress bar", group="scale")
    verbose: bool = setting(False, "show Lightning's own messages too (hardware found, tips, its advice and "
                            "deprecation warnings), which are hidden otherwise (as with FACEVAE_DEBUG=1)", group="scale")
    gradient_clip: float = setting(0.0, "clip the gradient norm to this (0: off)", at_least=0)
    checkpoint_every_steps: int = setting(50, "how often last.ckpt is refreshed within an epoch (resume "
                                          "granularity; 0: at epoch ends only)", at_least=0)
    limit_train_batches: float = setting(1.0, "fraction (0.25) or count (3) of the training batches per epoch")
    limit_val_batches: float = setting(1.0, "fraction (0.25) or count (3) of the validation batches")
    max_time: str | None = setting(None, "wall-clock budget", metavar="DD:HH:MM:SS")

    def __post_init__(self):
        check_settings(self)
        if not _DEVICES.fullmatch(self.devices):
            raise ValueError(f"--devices must be auto, a count (2), -1 (all) or a list of device indices (0,1); "
                             f"got {self.devices!r}")
        for name in ("limit_train_batches", "limit_val_batches"):
            value = getattr(self, name)
            # Lightning reads a number up to 1 as a fraction and a whole number above it as a count.
            if value <= 0 or (value > 1 and not value.is_integer()):
                raise ValueError(f"{flag_name(name)} must be a fraction in (0, 1] or a whole number of batches, "
                                 f"got {value:g}")
        if self.max_time is not None and not _positive_duration(self.max_time):
            raise ValueError(f"--max-time must be DD:HH:MM:SS in whole non-negative numbers, more than zero in all "
                             f"(e.g. 00:02:30:00); got {self.max_time!r}")


def resolve_precision(precision: str, accelerator: str) -> str:
    """The precision that "auto" means on this machine (any other value is returned as it is).

    bfloat16 autocast pays where the hardware multiplies bfloat16 itself: measured 1.4x the CVAE's steps on a
    Xeon with AMX (docs/benchmarks.md). On CPUs without AMX it has not been measured to pay, so they keep float32.
    """
    if precision != "auto":
        return precision
    import torch

    name = accelerator.strip().lower()
    if name in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    if name == "auto" and torch.backends.mps.is_available():
        return "32-true"
    native = name in ("auto", "cpu") and getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return "bf16-mixed" if native else "32-true"


def _positive_duration(text: str) -> bool:
    return bool(_DURATION.fullmatch(text.strip())) and any(int(part) for part in text.split(":"))


@dataclass
class TrainConfig(TrainerSettings):
    data: str = setting("", "packed dataset folder", group="run")
    split: str = setting("official", "stored split to train on", group="run")
    run_dir: str = setting("", "where the run goes", group="run")
    note: str = setting("", "a line kept in config.yaml and shown at the top of the run's report: what the run "
                        "tries, why these settings", metavar="TEXT", group="run")
    epochs: int = setting(20, "passes over the training split", at_least=1)
    patience: int = setting(5, "epochs without a better validation ELBO before early stopping (0: off)", at_least=0)
    lr: float = setting(2e-3, "learning rate", above=0)
    weight_decay: float = setting(0.0, "AdamW weight decay", at_least=0)
    lr_schedule: str = setting("cosine", "learning-rate schedule", choices=LR_SCHEDULES)
    lr_warmup_steps: int = setting(0, "the learning rate rises linearly over these many first steps (0: off)",
                                   at_least=0)
    skip_updates: float = setting(0.0, "skip an update whose gradient norm is non-finite or more than this many "
                                  "times the median of the recent ones, instead of stopping the run (VDVAE's rule; "
                                  "0: off, a non-finite loss stops the run)", at_least=0, metavar="FACTOR")
    # 32 and 2e-3: of those measured, what reaches a given held-out error soonest on 2 cores (docs/benchmarks.md)
    batch_size: int = setting(32, "images per step", at_least=1)
    seed: int = setting(0, "seed of the initial weights, the data order and the flips", at_least=0)
    flip: bool = setting(False, "random horizontal flips")
    num_workers: int = setting(0, "data-loading processes (0: in the training process)", at_least=0)
    on_device: bool = setting(False, "hold the training set as one tensor on the device")
    compile: bool = setting(False, "torch.compile the model", group="scale")
    channels_last: bool = setting(False, "channels-last memory format", group="scale")
    ema: float = setting(0.0, "validate, keep and export an exponential moving average of the weights with this "
                         "decay, e.g. 0.999 (0: off)", metavar="DECAY")
    eval_k: int = setting(100, "importance samples for the test log p(x)", at_least=1)
    eval_batches: int = setting(0, "test batches for the IWAE estimate (0: all)", at_least=0)

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"--ema is a decay in [0, 1), e.g. 0.999 (0: off); got {self.ema}")
        if self.lr_warmup_steps and self.lr_schedule == "plateau":
            raise ValueError("--lr-warmup-steps works with --lr-schedule cosine or none, not plateau")
        if 0 < self.skip_updates <= 1:
            raise ValueError(f"--skip-updates is a factor above 1 (e.g. 10), or 0 for off; got {self.skip_updates:g}")


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

    @classmethod
    def from_settings(cls, settings: dict, conditions: str = "all") -> "RunConfig":
        """A run from settings by field name (ModelConfig's and TrainConfig's; the others keep their defaults).

        ``conditions`` picks a conditional model's condition_names among its data's attributes:
        "all", "report" (REPORT_CONDITION_NAMES) or names "A,B,C".
        """
        model_fields, train_fields = _field_names(ModelConfig), _field_names(TrainConfig)
        unknown = sorted(set(settings) - model_fields - train_fields)
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(unknown)}")
        train = TrainConfig(**{k: v for k, v in settings.items() if k in train_fields})  # needs no data: first
        model = {k: v for k, v in settings.items() if k in model_fields}
        conditional = is_conditional_model(model.get("model", ModelConfig.model),
                                           model.get("conditional", ModelConfig.conditional))
        if conditional and "condition_names" not in model:
            model["condition_names"] = condition_names(conditions, train.data)
        return cls(ModelConfig(**model), train)

    def save(self, path: Path) -> None:
        write_text_atomic(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: Path) -> "RunConfig":
        """The config of a run directory; a RunError naming the file when it is damaged or incomplete."""
        path = Path(path)
        raw = _read_yaml_mapping(path)
        if "kind" in raw:  # a VAE run's config has none; `facevae classify train` writes kind: attribute_classifier
            what = ("an attribute-classifier run (`facevae classify eval` takes it)"
                    if raw["kind"] == CLASSIFIER_KIND else f"a run of another kind ({raw['kind']!r})")
            raise RunError(f"{path.parent}: {what}, not a VAE run; this command takes a run of `facevae train`")
        for section, keys in REQUIRED_KEYS.items():
            if not isinstance(raw.get(section), dict):
                raise RunError(f"{path}: has no {section!r} section (cut short, or not a run's config.yaml)")
            missing = [k for k in keys if k not in raw[section]]
            if missing:
                raise RunError(f"{path}: its {section!r} section lacks {', '.join(missing)} (cut short?)")
        _warn_of_unknown_keys(path, raw)
        try:
            return cls.from_dict(raw)
        except (ValueError, TypeError) as exc:  # a wrong type or value, as the dataclasses' checks word it
            message = str(exc).replace("ModelConfig.", "model.").replace("TrainConfig.", "train.")
            raise RunError(f"{path}: {message}") from None

    def check_data_present(self, run_dir: Path) -> None:
        """A RunError when the data folder the run names is gone: the dataset's own "not a packed dataset" would not
        say that it is the run's record that points at nothing."""
        if self.train.data and not Path(self.train.data).exists():
            raise RunError(f"{run_dir}: the data it was trained on, {self.train.data}, is not there (moved or "
                           f"deleted?); put it back, or set train.data in {Path(run_dir) / 'config.yaml'} to where it is")

    def warnings(self) -> list[str]:
        """What is legal but likely a mistake: a huge model, images upsampled from smaller data."""
        found = [self.model.size_warning()]
        stored = _stored_image_size(str(self.train.data)) if self.train.data else None
        if stored is not None and self.model.image_size > stored:
            found.append(f"--image-size {self.model.image_size} is larger than the images of {self.train.data} "
                         f"({stored}x{stored}): they are upsampled, which adds no detail; train at --image-size "
                         f"{stored}, or prepare the data at {self.model.image_size}")
        if self.model.likelihood == "bernoulli" and stored is not None:
            found.append(self._bernoulli_warning(stored))
        return [w for w in found if w]

    def _bernoulli_warning(self, stored: int) -> str | None:
        if stored != self.model.image_size:
            size = self.model.image_size
            why = f"resized from {stored}x{stored} to {size}x{size}, its images have grey edges"
        elif not _black_and_white(str(self.train.data)):
            why = f"the images of {self.train.data} have grey values"
        else:
            return None
        return (f"--likelihood bernoulli is exact only on black-and-white images: {why}, so its term is their "
                "cross-entropy and bits/dim are not comparable with the other likelihoods'")


# What `facevae classify train` writes as the "kind" of its config.yaml and model.json; a VAE run's have no kind.
CLASSIFIER_KIND = "attribute_classifier"
# Keys a run's config.yaml has always had: one that lacks them was cut short or is something else.
REQUIRED_KEYS = {"model": ("model", "latent_dim", "image_size"),
                 "train": ("data", "split", "epochs", "batch_size", "eval_k")}


_WARNED: set[Path] = set()


def _warn_of_unknown_keys(path: Path, raw: dict) -> None:
    """A line on stderr, once per file, for keys no setting reads: a typo in a hand edit would otherwise change
    nothing without a word (they are not refused: a run made by another version of facevae may have them)."""
    known = {"model": _field_names(ModelConfig), "train": _field_names(TrainConfig)}
    unknown = [k for k in raw if k not in known] + [f"{section}.{k}" for section, names in known.items()
                                                     for k in raw.get(section, {}) if k not in names]
    if unknown and path.resolve() not in _WARNED:
        _WARNED.add(path.resolve())
        what = "is not a setting" if len(unknown) == 1 else "are not settings"
        print(f"facevae: warning: {path}: {', '.join(map(str, unknown))} {what} of this version of facevae, so "
              "nothing reads them (a typo?)", file=sys.stderr)


def _read_yaml_mapping(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise RunError(f"{path}: cannot be read ({exc.strerror})") from None
    if not text.strip():
        raise RunError(f"{path}: empty: its write never finished")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise RunError(f"{path}: not valid YAML ({where}{getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(raw, dict):
        raise RunError(f"{path}: holds a YAML {type(raw).__name__}, not a mapping with 'model' and 'train' sections")
    return raw


def _field_names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def condition_names(conditions: str, data: str) -> list[str]:
    """The attributes ``--conditions`` names ("all", "report" or "A,B,C") among those of the dataset ``data``."""
    available = list(_attribute_names(str(data)))
    if conditions == "all":
        return available
    if conditions == "report":
        return [n for n in REPORT_CONDITION_NAMES if n in available]
    from facevae.data.attributes import check_attribute_names

    return check_attribute_names([n.strip() for n in conditions.split(",") if n.strip()], available)


@lru_cache(maxsize=8)
def _stored_image_size(data: str) -> int | None:
    from facevae.data.packed import PackedDataset

    try:
        return PackedDataset(data).meta.height
    except FacevaeError:  # no dataset there: the run fails on it later, with its own message
        return None


@lru_cache(maxsize=8)
def _black_and_white(data: str, sample: int = 256) -> bool:
    """Whether the first ``sample`` images of a packed dataset hold only 0 and 255 (cached like the size: a
    sweep builds one config per point of its grid)."""
    import numpy as np

    from facevae.data.packed import PackedDataset

    images = np.asarray(PackedDataset(data).images[:sample])
    return bool(((images == 0) | (images == 255)).all())


@lru_cache(maxsize=8)
def _attribute_names(data: str) -> tuple[str, ...]:
    # A packed dataset never changes its attributes, and a sweep asks once per point of its grid.
    from facevae.data.packed import PackedDataset

    return tuple(PackedDataset(data).attribute_names)
