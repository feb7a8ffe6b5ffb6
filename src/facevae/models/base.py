"""The shared interface of the VAE family: what every model offers the rest of the tool.

``encode(x, c)`` → :class:`~facevae.models.latents.Latents`, ``decode(codes, c)`` → an observation
model, ``prior_codes`` / ``sample`` / ``reconstruct``, ``loss`` (training), ``importance_log_likelihood``
and ``evaluate`` (test numbers). The flat model is in conv.py, the hierarchical one in hvae.py.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

from facevae.models.config import ModelConfig
from facevae.models.latents import LatentGroup, Latents
from facevae.models.likelihoods import bits_per_dim


class VAEBase(nn.Module):
    """What every model of the family offers; subclasses build the networks.

    ``x`` is float in [0, 1], (B, C, H, W); ``c`` is float (B, num_conditions) of 0/1 attributes in
    the order of ``config.condition_names``, or None. Unconditional models ignore ``c``. Codes are
    the flat view of :class:`~facevae.models.latents.Latents` (the prior's standardised coordinates).
    """

    def __init__(self, config: ModelConfig, latent_dim: int):
        super().__init__()
        self.config = config
        self.latent_dim = latent_dim  # every latent unit, all groups together
        self.num_conditions = config.num_conditions
        self.num_dims = config.input_dim

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- what a model defines ------------------------------------------------------------------------
    @property
    def latent_groups(self) -> tuple[LatentGroup, ...]:
        raise NotImplementedError

    def condition(self, c: torch.Tensor | None) -> torch.Tensor | None:
        """The condition as a vector (B, cond_dim) to concatenate, or None (unconditional)."""
        return None

    def encode(self, x: torch.Tensor, c: torch.Tensor | None = None, through: str | None = None) -> Latents:
        """The posterior of every group, or of the groups from the top down to ``through`` (a model may then
        skip the rest of its work: analyses of the top group of a deep model need only that)."""
        raise NotImplementedError

    def decode(self, codes: torch.Tensor, c: torch.Tensor | None = None):
        """The observation model p(x | codes, c): ``log_prob(x)`` in nats per image, ``image()``, ``sample()``."""
        raise NotImplementedError

    def loss(self, x: torch.Tensor, c: torch.Tensor | None = None, kl_weight: float | None = None,
             step: int | None = None) -> dict:
        """Training objective and the terms to log (per-image means, nats): at least loss, recon, kl,
        elbo and bits_per_dim, the last two the true bound (KL weight 1), comparable across runs.
        ``step``: the optimiser step, for objectives with a schedule (None: evaluation)."""
        raise NotImplementedError

    def importance_log_likelihood(self, x: torch.Tensor, c: torch.Tensor | None = None, k: int = 100,
                                  chunk: int | None = None) -> torch.Tensor:
        raise NotImplementedError

    # -- using a trained model ---------------------------------------------------------------------
    def prior_codes(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws of every latent unit from the prior at ``temperature``, as codes for :meth:`decode`.

        In the standardised coordinates of :class:`Latents` every model's prior is N(0, I), so this is
        u ~ N(0, temperature²·I) for all of them; the same generator state gives the same draw.
        """
        device = self.device
        on = generator.device if generator is not None else device
        return torch.randn(n, self.latent_dim, generator=generator, device=on).to(device) * float(temperature)

    def sampling(self, temperature: float = 1.0, c: torch.Tensor | None = None):
        """A context to decode prior samples in (a hierarchical model readjusts its BatchNorm there)."""
        return contextlib.nullcontext()

    @torch.no_grad()
    def sample(self, n: int, c: torch.Tensor | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """n images (n, C, H, W) in [0, 1] decoded (to the mean) from prior samples at ``temperature``."""
        if c is not None and (c.dim() == 1 or c.shape[0] == 1):
            c = c.reshape(1, -1).expand(n, -1)  # one condition for all samples
        codes = self.prior_codes(n, temperature, generator)
        with self.sampling(temperature, c):
            return self.decode(codes, c).image()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Images decoded from the posterior mean."""
        return self.decode(self.encode(x, c).codes(), c).image()

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, c: torch.Tensor | None = None, k: int = 100) -> dict:
        """Test-set numbers for one batch (per-image means): elbo, recon, kl, bits_per_dim, and the
        importance-weighted log_px_iw and bits_per_dim_iw; nats unless bits."""
        terms = self.loss(x, c, kl_weight=1.0)
        log_px = self.importance_log_likelihood(x, c, k=k).mean()
        out = {name: terms[name] for name in ("elbo", "recon", "kl", "bits_per_dim")}
        out.update(log_px_iw=log_px, bits_per_dim_iw=bits_per_dim(log_px, self.num_dims))
        return out
