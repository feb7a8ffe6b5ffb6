"""The flat convolutional VAE: one latent vector z with a N(0, I) prior.

x (B, C, H, W) in [0, 1] ─ConvEncoder─▶ (B, 256k, 4, 4) ─Linear─▶ μ, log σ² ─▶ q(z|x) = N(μ, σ²)
z ~ q by the reparameterisation trick (rsample) ─Linear─▶ (B, 256k, 4, 4) ─ConvDecoder─▶ p(x|z)

Conditional models add a condition vector (see cvae.py) next to the flattened features before the
posterior heads, and next to z before the decoder; :meth:`VAEBase.condition` is the only hook.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import Independent, Normal, kl_divergence

from facevae.models.base import VAEBase
from facevae.models.config import ModelConfig
from facevae.models.latents import LatentGroup, Latents, flat_groups
from facevae.models.likelihoods import (
    LOG_SCALE_FLOOR,
    Bernoulli,
    DiscretizedGaussian,
    DiscretizedLogistic,
    DiscretizedMixtureLogistic,
    bits_per_dim,
)
from facevae.models.objectives import regulariser

# log σ² is clamped: exp() cannot overflow in the first steps, and a posterior no narrower than
# e^-6 keeps importance weights q(z|x) bounded.
LOGVAR_MIN, LOGVAR_MAX = -12.0, 8.0
# Stride-2 convolutions with padding 1 halve the size exactly with a 3x3 kernel; transposed ones
# double it with a 4x4 kernel, whose taps overlap evenly (a 3x3 one gives checkerboard artefacts).
ENC_KERNEL, DEC_KERNEL = 3, 4


def level_widths(image_size: int, width: int) -> list[int]:
    """Channels after each 2x downsampling, from image_size down to 4x4: 32k, 64k, 128k, 256k, 256k."""
    levels = int(math.log2(image_size)) - 2
    return [32 * width * min(2**i, 8) for i in range(levels)]


def _norm(kind: str, ch: int) -> nn.Module:
    return nn.BatchNorm2d(ch) if kind == "batch" else nn.GroupNorm(8, ch)


class ConvEncoder(nn.Sequential):
    def __init__(self, in_ch: int, widths: list[int], norm: str = "batch"):
        layers = []
        for w in widths:
            layers += [nn.Conv2d(in_ch, w, ENC_KERNEL, 2, 1, bias=False), _norm(norm, w), nn.LeakyReLU(0.2)]
            in_ch = w
        super().__init__(*layers)


class ConvDecoder(nn.Sequential):
    """Mirror of the encoder: (B, widths[-1], 4, 4) → (B, out_ch, 4·2^L, 4·2^L).

    The last transposed convolution outputs the observation model's parameters directly: one more
    32k-channel layer at full resolution would halve the speed for little gain (DCGAN's choice).
    """

    def __init__(self, widths: list[int], out_ch: int, norm: str = "batch"):
        layers = []
        in_ch = widths[-1]
        for w in widths[::-1][1:]:  # 256k → 128k → 64k → 32k
            layers += [nn.ConvTranspose2d(in_ch, w, DEC_KERNEL, 2, 1, bias=False), _norm(norm, w), nn.LeakyReLU(0.2)]
            in_ch = w
        layers.append(nn.ConvTranspose2d(in_ch, out_ch, DEC_KERNEL, 2, 1))
        super().__init__(*layers)


def _observation_channels(config: ModelConfig) -> int:
    """What the decoder outputs per pixel: the likelihood's parameters."""
    if config.likelihood == "logistic_mixture":
        return 10 * config.mixtures  # per component: a logit, and per channel a mean, a scale, a coefficient
    one_map = config.likelihood in ("gaussian", "bernoulli")  # a mean (or logit) per sub-pixel, no scale
    return config.channels * (1 if one_map else 2)


class ConvVAE(VAEBase):
    """The flat VAE: one latent vector z with a N(0, I) prior, convolutional encoder and decoder."""

    def __init__(self, config: ModelConfig, cond_dim: int = 0):
        super().__init__(config, config.latent_dim)
        self.regulariser = regulariser(config)
        widths = level_widths(config.image_size, config.width)
        self._top = (widths[-1], 4, 4)
        features = widths[-1] * 16
        self.encoder = ConvEncoder(config.channels, widths, config.norm)
        self.to_posterior = nn.Linear(features + cond_dim, 2 * config.latent_dim)
        self.from_latent = nn.Linear(config.latent_dim + cond_dim, features)
        gaussian = config.likelihood == "gaussian"
        self.decoder = ConvDecoder(widths, _observation_channels(config), config.norm)
        # The Gaussian's scale is one number per channel, not predicted: that is what makes it MSE-like.
        # Start at a tenth of the [-1, 1] range, about the error of a blurry first reconstruction.
        self.pixel_log_scale = nn.Parameter(torch.full((config.channels,), math.log(0.1))) if gaussian else None

    # -- the model ---------------------------------------------------------------------------------
    @property
    def latent_groups(self) -> tuple[LatentGroup, ...]:
        """One group, ``z``: the prior is N(0, I), so the standardised codes of Latents are z itself."""
        return flat_groups({"z": (self.latent_dim,)})

    def prior(self, n: int) -> Independent:
        zeros = torch.zeros(n, self.latent_dim, device=self.to_posterior.weight.device)
        return Independent(Normal(zeros, torch.ones_like(zeros), validate_args=False), 1, validate_args=False)

    def posterior(self, x: torch.Tensor, c: torch.Tensor | None = None) -> Independent:
        """q(z|x, c) = N(μ, σ²) per dimension."""
        h = _cat(self.encoder(x).flatten(1), self.condition(c))
        # float32: KL and log q in bf16 would lose the digits that bits/dim need
        mu, logvar = self.to_posterior(h).float().chunk(2, dim=1)
        std = torch.exp(0.5 * logvar.clamp(LOGVAR_MIN, LOGVAR_MAX))
        return Independent(Normal(mu, std, validate_args=False), 1, validate_args=False)

    def encode(self, x: torch.Tensor, c: torch.Tensor | None = None, through: str | None = None) -> Latents:
        """The posterior as :class:`Latents` (what analysis, metrics and probes read)."""
        q = self.posterior(x, c).base_dist
        return Latents(self.latent_groups, q.loc, q.scale)

    def decode(self, z: torch.Tensor, c: torch.Tensor | None = None
               ) -> DiscretizedLogistic | DiscretizedGaussian | Bernoulli | DiscretizedMixtureLogistic:
        h = F.leaky_relu(self.from_latent(_cat(z, self.condition(c))), 0.2)
        out = self.decoder(h.view(-1, *self._top))
        C = self.config.channels
        if self.config.likelihood == "bernoulli":
            return Bernoulli(out)
        if self.config.likelihood == "logistic_mixture":
            return DiscretizedMixtureLogistic(out, self.config.mixtures)
        if self.pixel_log_scale is not None:
            return DiscretizedGaussian(torch.tanh(out), self.pixel_log_scale.clamp(min=LOG_SCALE_FLOOR).view(1, C, 1, 1))
        return DiscretizedLogistic(torch.tanh(out[:, :C]), out[:, C:].clamp(min=LOG_SCALE_FLOOR))

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> dict:
        """``noise``: the ε of z = μ + σ·ε, (B, D); None draws it from torch's global generator (as rsample)."""
        posterior = self.posterior(x, c)
        q = posterior.base_dist
        # reparameterisation: differentiable in μ and σ; rsample's own formula, so a given ε gives its z exactly
        z = posterior.rsample() if noise is None else q.loc + noise.to(q.loc.dtype) * q.scale
        return {"posterior": posterior, "z": z, "observation": self.decode(z, c)}

    def loss(self, x: torch.Tensor, c: torch.Tensor | None = None, kl_weight: float | torch.Tensor | None = None,
             step: int | None = None, noise: torch.Tensor | None = None) -> dict:
        """Training objective and the terms to log (per-image means, nats).

        loss = recon + the objective's regulariser (objectives.py: β·KL with free bits by default,
        β-TCVAE, capacity annealing); kl_weight defaults to β, ``step`` is the optimiser step (for
        schedules). elbo and bits_per_dim are the true bound (weight 1, no free bits), comparable
        across runs; bits_per_dim is an upper bound on the discrete NLL (see importance_log_likelihood).
        ``noise``: the reparameterisation's ε (see forward), for models trained as one stack (torch.func.vmap).
        """
        out = self(x, c, noise)
        recon = -out["observation"].log_prob(x)  # (B,)
        kl = kl_divergence(out["posterior"].base_dist, self.prior(x.shape[0]).base_dist)  # (B, D), analytic
        weight = self.config.effective_beta if kl_weight is None else kl_weight
        term, parts = self.regulariser(out["posterior"], out["z"], kl, weight, step)
        elbo = -(recon + kl.sum(1)).mean()
        return {
            "loss": recon.mean() + term,
            "recon": recon.mean(),
            "kl": kl.sum(1).mean(),
            "kl_per_dim": kl.mean(0),
            "elbo": elbo,
            "bits_per_dim": bits_per_dim(elbo, self.num_dims),
            **parts,
        }

    @torch.no_grad()
    def importance_log_likelihood(self, x: torch.Tensor, c: torch.Tensor | None = None, k: int = 100,
                                  chunk: int | None = None) -> torch.Tensor:
        """log p(x) in nats per image, (B,): the IWAE bound of Burda et al. 2016 with k samples.

        log p(x) ≈ logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log k, z_k ~ q(z|x); it
        is >= the ELBO and tightens as k grows. ``chunk`` samples are decoded at a time (default: about
        1024 images per pass) to bound memory. Call ``model.eval()`` first (BatchNorm statistics).
        """
        B = x.shape[0]
        posterior = self.posterior(x, c)
        prior = self.prior(B)
        chunk = chunk or max(1, 1024 // B)
        log_w = []
        for start in range(0, k, chunk):
            n = min(chunk, k - start)
            z = posterior.sample((n,))  # (n, B, D)
            cond = None if c is None else c.repeat(n, 1)
            log_px = self.decode(z.reshape(n * B, -1), cond).log_prob(x.repeat(n, 1, 1, 1)).view(n, B)
            log_w.append(log_px + prior.log_prob(z) - posterior.log_prob(z))
        return torch.logsumexp(torch.cat(log_w), dim=0) - math.log(k)


def _cat(h: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    return h if cond is None else torch.cat([h, cond.to(h.dtype)], dim=1)
