"""What the flat VAE's objective adds to its reconstruction term: the hook every variant overrides.

    loss = recon + regulariser(posterior, z, KL per dimension, weight, step)

The default is β-VAE's β·KL (Higgins et al. 2017), with free bits; β-TCVAE (tcvae.py) weighs only
the total correlation of the aggregate posterior by β; the capacity-annealed β-VAE (capacity.py)
pushes the KL towards a target C that rises over training. ``--loss`` picks one; the
reported ELBO and bits/dim are the same bound for all of them.
"""

from __future__ import annotations

import importlib

import torch

from facevae.models.config import ModelConfig

LOSS_HOMES = {"beta": ("facevae.models.objectives", "BetaKL"), "tcvae": ("facevae.models.tcvae", "TotalCorrelation"),
                   "capacity": ("facevae.models.capacity", "CapacityKL")}


class BetaKL:
    """weight · Σ_d max(free_bits, batch-mean KL_d); the weight is β (ramped during the KL warm-up)."""

    def __init__(self, config: ModelConfig):
        self.config = config

    def __call__(self, posterior, z: torch.Tensor, kl: torch.Tensor, weight: float, step: int | None) -> tuple:
        """(the term, a dict of its parts to log); ``kl`` is (B, D) analytic KL to N(0, I)."""
        per_dim = kl.mean(0)
        free_bits = self.config.free_bits
        return weight * (per_dim.clamp(min=free_bits) if free_bits > 0 else per_dim).sum(), {}


def regulariser(config: ModelConfig) -> BetaKL:
    module, name = LOSS_HOMES[config.loss]
    return getattr(importlib.import_module(module), name)(config)
