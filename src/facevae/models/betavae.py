"""β-VAE (Higgins et al. 2017): a VAE or, with ``conditional``, a CVAE whose KL term weighs β > 1.

The β (or β_norm = β·M/N) lives in the config and the loss in VAEBase uses it for every model, so
there is nothing to add here but the check that β > 1, made by ModelConfig: asking for a β-VAE and
forgetting to set β would otherwise train a plain VAE without a word.
"""

from __future__ import annotations

from facevae.models.config import ModelConfig
from facevae.models.cvae import CVAE


class BetaVAE(CVAE):  # CVAE without condition_names is the plain VAE
    def __init__(self, config: ModelConfig):
        if config.effective_beta <= 1:
            raise ValueError(f"BetaVAE needs beta > 1, got {config.effective_beta:g}")
        super().__init__(config)
