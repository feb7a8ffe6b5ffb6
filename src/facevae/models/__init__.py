"""The VAE family: plain VAE, conditional VAE, β-VAE, one shared interface (VAEBase).

    config = ModelConfig(model="cvae", condition_names=datamodule.attribute_names)
    model = build_model(config)
    terms = model.loss(x, c, kl_weight=config.kl_weight(step))   # terms["loss"].backward()
"""

from __future__ import annotations

from facevae.models.base import VAEBase
from facevae.models.betavae import BetaVAE
from facevae.models.config import REPORT_CONDITION_NAMES, ModelConfig
from facevae.models.cvae import CVAE, AttributeCondition
from facevae.models.likelihoods import DiscretizedGaussian, DiscretizedLogistic, bits_per_dim
from facevae.models.vae import VAE

MODELS: dict[str, type[VAEBase]] = {"vae": VAE, "cvae": CVAE, "betavae": BetaVAE}


def build_model(config: ModelConfig | dict) -> VAEBase:
    """The model named by ``config.model`` (a ModelConfig or a plain dict of its fields)."""
    if not isinstance(config, ModelConfig):
        config = ModelConfig.from_dict(config)
    return MODELS[config.model](config)


__all__ = ["MODELS", "REPORT_CONDITION_NAMES", "AttributeCondition", "BetaVAE", "CVAE", "DiscretizedGaussian",
           "DiscretizedLogistic", "ModelConfig", "VAE", "VAEBase", "bits_per_dim", "build_model"]
