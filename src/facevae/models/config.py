"""The VAE family's settings: one flat dataclass of plain types, so it round-trips through YAML/JSON."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field

MODEL_NAMES = ("vae", "cvae", "betavae")
IMAGE_SIZES = (32, 64, 128)
CONDITION_MODES = ("vector", "embedding")
LIKELIHOOD_NAMES = ("discretized_logistic", "gaussian")
NORMS = ("batch", "group")

# The report's CVAE conditioned on hair colour, beard, gender and pale skin through embeddings;
# in CelebA's binary attributes that is these seven.
REPORT_CONDITION_NAMES = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair", "No_Beard", "Male", "Pale_Skin"]


@dataclass
class ModelConfig:
    """Settings of a model of the VAE family.

    model: "vae" (never conditional), "cvae" (always conditional), "betavae" (conditional when
        ``conditional`` is true; needs an effective β > 1, otherwise it is a plain VAE/CVAE, which
        honour ``beta`` too — use those for β sweeps that include 1).
    latent_dim: M, the size of z.
    width: k, the channel multiplier: the encoder has 32k, 64k, 128k, 256k channels.
    image_size: 32, 64 or 128 (square); channels: 3 for RGB.
    conditional: only read for "betavae".
    condition_names: the attributes conditioned on, in the order of the columns of ``c`` (the
        caller's choice; typically all the dataset's attributes, or REPORT_CONDITION_NAMES).
    condition_mode: "vector" feeds the 0/1 attribute vector itself; "embedding" one learned
        vector per attribute value (nn.Embedding(2, condition_dim) per attribute), summed.
    condition_dim: size of the embeddings ("embedding" mode).
    beta: weight of the KL term; beta_norm: if set, beta = beta_norm · N / M (N = C·H·W), the
        normalised β of Higgins et al. 2017 that is comparable across latent and input sizes.
    likelihood: "discretized_logistic" (mean and scale per sub-pixel) or "gaussian" (discretised
        Gaussian, mean per sub-pixel, one learned scale per channel: MSE-like and fast). Both are
        discrete over 256 values, so bits/dim are valid for both.
    free_bits: nats per latent dimension below which the (batch-mean) KL of that dimension is not
        penalised (Kingma et al. 2016); 0 disables.
    kl_warmup_steps: the KL weight ramps linearly from 0 to β over these many steps; 0 disables.
    norm: "batch" (BatchNorm) or "group" (GroupNorm, independent of the batch).
    """

    model: str = "vae"
    latent_dim: int = 64
    width: int = 2
    image_size: int = 64
    channels: int = 3
    conditional: bool = False
    condition_names: list[str] = field(default_factory=list)
    condition_mode: str = "vector"
    condition_dim: int = 32
    beta: float = 1.0
    beta_norm: float | None = None
    likelihood: str = "discretized_logistic"
    free_bits: float = 0.0
    kl_warmup_steps: int = 0
    norm: str = "batch"

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            setattr(self, f.name, _checked(f.name, getattr(self, f.name), hints[f.name]))
        _choice("model", self.model, MODEL_NAMES)
        _choice("image_size", self.image_size, IMAGE_SIZES)
        _choice("condition_mode", self.condition_mode, CONDITION_MODES)
        _choice("likelihood", self.likelihood, LIKELIHOOD_NAMES)
        _choice("norm", self.norm, NORMS)
        for name in ("latent_dim", "width", "channels", "condition_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"model config: {name} must be >= 1, got {getattr(self, name)}")
        if self.beta <= 0 or (self.beta_norm is not None and self.beta_norm <= 0):
            raise ValueError("model config: beta and beta_norm must be > 0")
        if self.free_bits < 0 or self.kl_warmup_steps < 0:
            raise ValueError("model config: free_bits and kl_warmup_steps must be >= 0")
        if self.is_conditional and not self.condition_names:
            raise ValueError(f"model config: {self.model!r} is conditional but condition_names is empty; "
                             "give the attribute names to condition on")
        if len(set(self.condition_names)) != len(self.condition_names):
            raise ValueError("model config: condition_names has duplicates")
        if self.model == "betavae" and self.effective_beta <= 1:
            raise ValueError(f"model config: betavae needs beta > 1 (or a beta_norm giving one), got "
                             f"{self.effective_beta:g}; use model 'vae' or 'cvae' for beta <= 1")

    @property
    def is_conditional(self) -> bool:
        return self.model == "cvae" or (self.model == "betavae" and self.conditional)

    @property
    def num_conditions(self) -> int:
        return len(self.condition_names) if self.is_conditional else 0

    @property
    def input_dim(self) -> int:
        """N, the number of sub-pixels of one image."""
        return self.channels * self.image_size * self.image_size

    @property
    def effective_beta(self) -> float:
        if self.beta_norm is None:
            return self.beta
        return self.beta_norm * self.input_dim / self.latent_dim

    def kl_weight(self, step: int) -> float:
        """The KL weight at optimiser step ``step``: β, ramped linearly from 0 during warm-up."""
        if self.kl_warmup_steps == 0:
            return self.effective_beta
        return self.effective_beta * min(1.0, max(step, 0) / self.kl_warmup_steps)

    def condition_index(self, attribute_names: list[str]) -> list[int]:
        """Columns of a full attribute matrix (named ``attribute_names``) that make this model's ``c``."""
        missing = [n for n in self.condition_names if n not in attribute_names]
        if missing:
            raise ValueError(f"condition attributes not in the data: {', '.join(missing)}")
        return [attribute_names.index(n) for n in self.condition_names]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, strict: bool = False) -> "ModelConfig":
        """Build from a mapping; unknown keys are ignored (or rejected with ``strict``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if strict and unknown:
            raise ValueError(f"model config: unknown keys {', '.join(unknown)}")
        return cls(**{k: v for k, v in d.items() if k in names})


def _choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"model config: {name} must be one of {', '.join(map(str, allowed))}, got {value!r}")


def _checked(name, value, hint):
    """``value`` as the field's type (ints widen to float), or a TypeError saying what was expected."""
    if typing.get_origin(hint) is list:
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return list(value)
        raise TypeError(f"model config: {name} must be a list of strings, got {value!r}")
    optional = type(None) in typing.get_args(hint)
    if value is None and optional:
        return None
    tp = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, tp):
        return value
    raise TypeError(f"model config: {name} must be {_type_name(hint)}, got {value!r} ({type(value).__name__})")


def _type_name(hint) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")
