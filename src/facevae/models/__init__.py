"""The VAE family: plain VAE, conditional VAE, β-VAE, one shared interface (VAEBase).

    config = ModelConfig(model="cvae", condition_names=datamodule.attribute_names)
    model = build_model(config)
    terms = model.loss(x, c, kl_weight=config.kl_weight(step))   # terms["loss"].backward()

The classes are imported on first use: the command line reads ModelConfig to make its flags, and
``facevae --help`` should not wait for torch.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import TYPE_CHECKING

from facevae.models.config import MODEL_NAMES, REPORT_CONDITION_NAMES, ModelConfig

if TYPE_CHECKING:
    from facevae.models.base import VAEBase
    from facevae.models.betavae import BetaVAE
    from facevae.models.cvae import CVAE, AttributeCondition
    from facevae.models.likelihoods import DiscretizedGaussian, DiscretizedLogistic, bits_per_dim
    from facevae.models.vae import VAE

_HOMES = {"VAEBase": "base", "BetaVAE": "betavae", "CVAE": "cvae", "AttributeCondition": "cvae",
          "DiscretizedGaussian": "likelihoods", "DiscretizedLogistic": "likelihoods", "bits_per_dim": "likelihoods",
          "VAE": "vae"}


@lru_cache(maxsize=1)
def _registry() -> dict[str, type[VAEBase]]:
    """The model classes by name; keyed by the config's names, the one list of them (the config checks
    against it without importing torch)."""
    from facevae.models.betavae import BetaVAE
    from facevae.models.cvae import CVAE
    from facevae.models.hvae import HVAE
    from facevae.models.vae import VAE

    return dict(zip(MODEL_NAMES, (VAE, CVAE, BetaVAE, HVAE), strict=True))


def __getattr__(name: str):
    if name == "MODELS":
        return _registry()
    if name in _HOMES:
        return getattr(importlib.import_module(f"facevae.models.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_model(config: ModelConfig | dict) -> VAEBase:
    """The model named by ``config.model`` (a ModelConfig or a plain dict of its fields)."""
    if not isinstance(config, ModelConfig):
        config = ModelConfig.from_dict(config)
    return _registry()[config.model](config)


__all__ = ["MODELS", "MODEL_NAMES", "REPORT_CONDITION_NAMES", "AttributeCondition", "BetaVAE", "CVAE",
           "DiscretizedGaussian", "DiscretizedLogistic", "ModelConfig", "VAE", "VAEBase", "bits_per_dim", "build_model"]
