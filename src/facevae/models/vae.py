"""Plain convolutional VAE (Kingma & Welling 2014): everything is in VAEBase; no condition."""

from __future__ import annotations

from facevae.models.config import ModelConfig
from facevae.models.conv import ConvVAE


class VAE(ConvVAE):
    def __init__(self, config: ModelConfig):
        if config.is_conditional:
            raise ValueError(f"VAE is unconditional; use CVAE for model {config.model!r}")
        super().__init__(config)
