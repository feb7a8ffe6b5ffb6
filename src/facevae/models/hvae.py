"""A hierarchical VAE in the spirit of NVAE (Vahdat & Kautz 2020): latent groups at several scales.

    x ─stem─pre-process─▶ encoder tower (bottom-up, finest scale first) ─▶ features f_1 … f_G
    top-down:  h₀ (learned) ─[z₁]─ cells ─[z₂]─ … ─ up ─ cells ─[z_G]─ post-process ─▶ p(x | z)

The decoder's top-down path is shared by inference and generation. The top group's prior is
N(0, I); every lower group's prior N(μ_p, σ_p) is predicted from the decoder state, which holds all
the groups above it, and its posterior is NVAE's residual form q = N(μ_p + Δμ, σ_p · Δσ), Δ from the
encoder feature of that group combined with the decoder state. The likelihood is a discretised
mixture of logistics. Groups are listed top first (coarsest scale first, as the decoder visits them).

For the rest of the tool the model offers :class:`~facevae.models.latents.Latents` in standardised
prior coordinates, u = (z − μ_p) / σ_p: there every unit's prior is N(0, 1), a prior sample at
temperature T is u ~ N(0, T²) decoded top-down (NVAE's temperature sampling), and edited codes decode
by re-predicting each lower prior from the groups above (:meth:`HVAE.decode`).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from facevae.models.base import VAEBase
from facevae.models.config import ModelConfig
from facevae.models.cvae import AttributeCondition
from facevae.models.latents import LatentGroup, Latents, find_group, flat_groups
from facevae.models.likelihoods import DiscretizedMixtureLogistic, bits_per_dim
from facevae.models.nvae_cells import (
    DecoderCell,
    DecoderCombiner,
    EncoderCell,
    EncoderCombiner,
    SpectralPenalty,
    wn_conv,
)

SOFT_CLAMP = 5.0  # NVAE soft-clamps μ and log σ to (-5, 5): KL terms stay finite early on
SIGMA_FLOOR = 1e-2
READJUST_BATCHES, READJUST_BATCH = 16, 32  # BatchNorm statistics re-estimated on 512 prior samples


def soft_clamp(x: torch.Tensor) -> torch.Tensor:
    return SOFT_CLAMP * torch.tanh(x / SOFT_CLAMP)


@dataclass
class Gaussian:
    """A diagonal normal in NVAE's parameterisation (soft-clamped, σ = exp(log σ) + 0.01)."""

    mu: torch.Tensor
    sigma: torch.Tensor

    @classmethod
    def from_params(cls, mu: torch.Tensor, log_sigma: torch.Tensor) -> "Gaussian":
        return cls(soft_clamp(mu.float()), torch.exp(soft_clamp(log_sigma.float())) + SIGMA_FLOOR)

    @classmethod
    def standard(cls, like: torch.Tensor) -> "Gaussian":
        return cls(torch.zeros_like(like, dtype=torch.float32), torch.ones_like(like, dtype=torch.float32))

    def rsample(self) -> torch.Tensor:
        return self.mu + self.sigma * torch.randn_like(self.mu)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        t = (z - self.mu) / self.sigma
        return -0.5 * t * t - 0.5 * math.log(2 * math.pi) - torch.log(self.sigma)

    def kl(self, prior: "Gaussian") -> torch.Tensor:
        """KL(self ‖ prior) per element, analytic."""
        shift, ratio = (self.mu - prior.mu) / prior.sigma, self.sigma / prior.sigma
        return 0.5 * (shift * shift + ratio * ratio) - 0.5 - torch.log(ratio)


@dataclass(frozen=True)
class Layout:
    """Where the groups sit: resolution and channels of each latent scale, groups per scale (top first)."""

    scales: tuple[tuple[int, int, int], ...]  # (resolution, channels, groups), coarsest first
    latent_channels: int
    stem_channels: int
    pre_blocks: int
    expansion: int  # of the decoder cells' inverted residual (NVAE: 6)

    @classmethod
    def of(cls, config: ModelConfig) -> "Layout":
        return cls(tuple(config.hvae_scales()), config.hvae_latent_channels, config.hvae_channels,
                   config.hvae_pre_blocks, config.hvae_expansion)

    def group_shapes(self) -> dict[str, tuple[int, int, int]]:
        shapes = {}
        for resolution, _, groups in self.scales:
            for g in range(groups):
                shapes[f"{resolution}x{resolution}.{g}"] = (self.latent_channels, resolution, resolution)
        return shapes

    def group_scales(self) -> list[int]:
        """For every group (top first), the index of its scale (0 = coarsest)."""
        return [s for s, (_, _, groups) in enumerate(self.scales) for _ in range(groups)]


class BottomUp(nn.Module):
    """stem → pre-processing → encoder tower; returns the feature at every group, top group first."""

    def __init__(self, layout: Layout, cells: int, in_channels: int):
        super().__init__()
        c = layout.stem_channels
        self.stem = wn_conv(in_channels, c, 3)
        pre = []
        for _ in range(layout.pre_blocks):
            pre += [EncoderCell(c), EncoderCell(c, down=True)]
            c *= 2
        self.pre = nn.Sequential(*pre)
        self.scales = nn.ModuleList()
        for s, (_, channels, groups) in enumerate(reversed(layout.scales)):  # finest first
            self.scales.append(nn.ModuleList(nn.Sequential(*(EncoderCell(channels) for _ in range(cells)))
                                             for _ in range(groups)))
        self.downs = nn.ModuleList(EncoderCell(ch, down=True) for _, ch, _ in list(reversed(layout.scales))[:-1])
        top_channels = layout.scales[0][1]
        self.top = nn.Sequential(nn.ELU(), wn_conv(top_channels, top_channels, 1), nn.ELU())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s = self.pre(self.stem(2 * x - 1))
        features = []
        for i, groups in enumerate(self.scales):
            for cells in groups:
                s = cells(s)
                features.append(s)
            if i < len(self.downs):
                s = self.downs[i](s)
        features[-1] = self.top(features[-1])  # the top group's posterior reads the last feature
        return features[::-1]


class TopDown(nn.Module):
    """The shared top-down path: learned h₀, decoder cells and combiners, the prior of every lower group."""

    def __init__(self, layout: Layout, cells: int, cond_dim: int):
        super().__init__()
        res, channels, _ = layout.scales[0]
        self.h0 = nn.Parameter(torch.rand(channels, res, res))
        self.top_shape = (layout.latent_channels, res, res)
        self.condition = nn.Linear(cond_dim, channels) if cond_dim else None
        lc = layout.latent_channels
        self.cells, self.priors, self.combiners, self.ups = nn.ModuleList(), nn.ModuleList(), nn.ModuleList(), nn.ModuleDict()
        scale_of = layout.group_scales()
        for g, s in enumerate(scale_of):
            ch = layout.scales[s][1]
            first = g == 0
            self.cells.append(nn.Identity() if first else
                              nn.Sequential(*(DecoderCell(ch, expansion=layout.expansion) for _ in range(cells))))
            self.priors.append(nn.Identity() if first else nn.Sequential(nn.ELU(), wn_conv(ch, 2 * lc, 1)))
            self.combiners.append(DecoderCombiner(ch, lc))
            if g + 1 < len(scale_of) and scale_of[g + 1] != s:
                self.ups[str(g)] = DecoderCell(ch, up=True, expansion=layout.expansion)

    def start(self, batch: int, cond: torch.Tensor | None) -> torch.Tensor:
        s = self.h0.unsqueeze(0).expand(batch, -1, -1, -1)
        return s if self.condition is None else s + self.condition(cond)[:, :, None, None]

    def prior(self, g: int, s: torch.Tensor) -> tuple[Gaussian, tuple[torch.Tensor, torch.Tensor] | None]:
        """Group g's prior given the state, and its raw (unclamped) parameters, which the residual posterior adds to."""
        if g == 0:
            return Gaussian.standard(s.new_zeros(s.shape[0], *self.top_shape)), None
        mu, log_sigma = self.priors[g](s).float().chunk(2, dim=1)
        return Gaussian.from_params(mu, log_sigma), (mu, log_sigma)

    def step(self, g: int, s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Fold group g's z into the state, and go up a scale where the next group is finer."""
        s = self.combiners[g](s, z)
        return self.ups[str(g)](s) if str(g) in self.ups else s


class HVAE(VAEBase):
    """The hierarchical model (``model: hvae``); conditional on attributes when ``condition_names`` is set."""

    def __init__(self, config: ModelConfig):
        layout = Layout.of(config)
        shapes = layout.group_shapes()
        super().__init__(config, sum(math.prod(s) for s in shapes.values()))
        self.layout = layout
        self._groups = flat_groups(shapes)
        cond = AttributeCondition(config.num_conditions, config.condition_mode, config.condition_dim) \
            if config.num_conditions else None
        self.conditioning = cond
        cells = config.hvae_cells
        self.bottom_up = BottomUp(layout, cells, config.channels)
        self.posteriors = nn.ModuleList(wn_conv(ch, 2 * layout.latent_channels, 3)
                                        for s in layout.group_scales() for ch in [layout.scales[s][1]])
        self.enc_combiners = nn.ModuleList(EncoderCombiner(layout.scales[s][1], layout.scales[s][1])
                                           for s in layout.group_scales()[1:])
        self.top_down = TopDown(layout, cells, cond.dim if cond is not None else 0)
        finest = layout.scales[-1][1]
        post = []
        for _ in range(layout.pre_blocks):  # NVAE's post-processing cells expand 3x, not 6x
            post += [DecoderCell(finest, up=True, expansion=3), DecoderCell(finest // 2, expansion=3)]
            finest //= 2
        self.post = nn.Sequential(*post)
        self.head = nn.Sequential(nn.ELU(), wn_conv(finest, 10 * config.mixtures, 3))
        self.spectral = SpectralPenalty([m for m in self.modules() if isinstance(m, nn.Conv2d)],
                                        [m for m in self.modules() if isinstance(m, nn.BatchNorm2d)])
        self.alpha = nn.Buffer(self._balance_coefficients(), persistent=False)

    # -- the latent interface ------------------------------------------------------------------------
    @property
    def latent_groups(self) -> tuple[LatentGroup, ...]:
        return self._groups

    def condition(self, c):
        return None if self.conditioning is None else self.conditioning(c)

    def _posterior(self, g: int, features: list[torch.Tensor], s: torch.Tensor, raw_prior) -> Gaussian:
        feature = features[0] if g == 0 else self.enc_combiners[g - 1](features[g], s)
        mu, log_sigma = self.posteriors[g](feature).float().chunk(2, dim=1)
        if raw_prior is None:  # the top prior is N(0, I): the posterior is absolute there
            return Gaussian.from_params(mu, log_sigma)
        # NVAE's residual form: the encoder corrects the prior's mean and scale
        return Gaussian.from_params(raw_prior[0] + mu, raw_prior[1] + log_sigma)

    def _top_down(self, x: torch.Tensor, c, choose, groups: int | None = None) -> tuple[torch.Tensor | None, list]:
        """Run the shared path; ``choose(g, prior, posterior)`` returns (z, record) for each group. With
        ``groups``, stop after that many (top first): no observation model then, only the records."""
        features = self.bottom_up(x)
        s = self.top_down.start(len(x), self.condition(c))
        records = []
        for g in range(len(self._groups) if groups is None else groups):
            s = self.top_down.cells[g](s)
            prior, raw = self.top_down.prior(g, s)
            z, record = choose(g, prior, self._posterior(g, features, s, raw))
            records.append(record)
            if groups is not None and g + 1 == groups:
                return None, records
            s = self.top_down.step(g, s, z)
        return self.head(self.post(s)), records

    def encode(self, x: torch.Tensor, c: torch.Tensor | None = None, through: str | None = None) -> Latents:
        """The posterior along its mean path (every z at its posterior mean), in prior coordinates; with
        ``through``, only the groups from the top down to that one (the rest of the path is not run)."""
        def at_mean(g, prior, q):
            return q.mu, ((q.mu - prior.mu) / prior.sigma, q.sigma / prior.sigma)

        found = find_group(self._groups, through)
        count = len(self._groups) if found is None else self._groups.index(found) + 1
        _, records = self._top_down(x, c, at_mean, groups=count)
        mean = torch.cat([r[0].flatten(1) for r in records], 1)
        std = torch.cat([r[1].flatten(1) for r in records], 1)
        return Latents(self._groups[:count], mean, std)

    def decode(self, codes: torch.Tensor, c: torch.Tensor | None = None) -> DiscretizedMixtureLogistic:
        """p(x | codes): each group z = μ_p + σ_p·u with its prior re-predicted from the groups above."""
        s = self.top_down.start(len(codes), self.condition(c))
        for g, group in enumerate(self._groups):
            s = self.top_down.cells[g](s)
            prior, _ = self.top_down.prior(g, s)
            u = codes[:, group.units].view(len(codes), *group.shape).to(prior.mu)
            s = self.top_down.step(g, s, prior.mu + prior.sigma * u)
        return DiscretizedMixtureLogistic(self.head(self.post(s)), self.config.mixtures)

    # -- training --------------------------------------------------------------------------------------
    def _balance_coefficients(self) -> torch.Tensor:
        """NVAE's 'square' balancing weights α per group (top first): 4^scale / groups at that scale."""
        alpha = torch.tensor([4.0 ** s / self.layout.scales[s][2] for s in self.layout.group_scales()])
        return alpha / alpha.min()

    def balanced_kl(self, kl_groups: torch.Tensor, kl_weight: float) -> torch.Tensor:
        """(B,) KL term: while warming up (weight < β), NVAE's balancing gives groups whose KL is small a
        larger share, so that no group collapses before it is used; afterwards the plain sum."""
        if kl_weight >= self.config.effective_beta or len(self._groups) == 1:
            return kl_groups.sum(1)
        share = kl_groups.abs().mean(0, keepdim=True) + 0.01
        coeff = share / self.alpha * share.sum()
        coeff = (coeff / coeff.mean(1, keepdim=True)).detach()
        return (kl_groups * coeff).sum(1)

    def _stochastic(self, x, c) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One posterior sample through every group: (observation params, KL per group (B, G), log q − log p (B,))."""
        def sampled(g, prior, q):
            z = q.rsample()
            log_ratio = (q.log_prob(z) - prior.log_prob(z)).flatten(1).sum(1)
            return z, (q.kl(prior).flatten(1).sum(1), log_ratio)

        params, records = self._top_down(x, c, sampled)
        return params, torch.stack([r[0] for r in records], 1), torch.stack([r[1] for r in records], 1).sum(1)

    def loss(self, x: torch.Tensor, c: torch.Tensor | None = None, kl_weight: float | None = None,
             step: int | None = None) -> dict:
        """recon + kl_weight · balanced KL (+ λ · spectral penalty while training); elbo and bits/dim are
        the true bound. kl_weight defaults to β; the KL warm-up ramps it (ModelConfig.kl_weight)."""
        params, kl_groups, _ = self._stochastic(x, c)
        recon = -DiscretizedMixtureLogistic(params, self.config.mixtures).log_prob(x)
        weight = self.config.effective_beta if kl_weight is None else kl_weight
        loss = (recon + weight * self.balanced_kl(kl_groups, weight)).mean()
        if self.training and self.config.spectral_lambda > 0:
            loss = loss + self.config.spectral_lambda * self.spectral()
        kl = kl_groups.sum(1)
        elbo = -(recon + kl).mean()
        return {"loss": loss, "recon": recon.mean(), "kl": kl.mean(), "kl_per_group": kl_groups.mean(0),
                "elbo": elbo, "bits_per_dim": bits_per_dim(elbo, self.num_dims)}

    # -- using a trained model -------------------------------------------------------------------------
    @torch.no_grad()
    def importance_log_likelihood(self, x: torch.Tensor, c: torch.Tensor | None = None, k: int = 100,
                                  chunk: int | None = None) -> torch.Tensor:
        """log p(x) per image (nats), the IWAE bound over all groups with k posterior samples."""
        log_w = []
        for _ in range(k):
            params, _, log_ratio = self._stochastic(x, c)
            log_w.append(DiscretizedMixtureLogistic(params, self.config.mixtures).log_prob(x) - log_ratio)
        return torch.logsumexp(torch.stack(log_w), dim=0) - math.log(k)

    @contextlib.contextmanager
    def sampling(self, temperature: float = 1.0, c: torch.Tensor | None = None):
        """NVAE's BatchNorm readjustment: the decoder's statistics re-estimated on prior samples at this
        temperature (they differ from the posterior's), restored afterwards."""
        norms = [m for part in (self.top_down, self.post) for m in part.modules() if isinstance(m, nn.BatchNorm2d)]
        saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum)
                 for m in norms]
        was_training = self.training
        try:
            with torch.no_grad():
                for m in norms:
                    m.reset_running_stats()
                    m.momentum = None  # a plain average over the readjustment batches
                    m.train()
                generator = torch.Generator().manual_seed(0)  # the same statistics for the same temperature
                for i in range(READJUST_BATCHES):
                    rows = None if c is None else c[torch.arange(i * READJUST_BATCH, (i + 1) * READJUST_BATCH) % len(c)]
                    self.decode(self.prior_codes(READJUST_BATCH, temperature, generator), rows)
                for m in norms:
                    m.eval()
            yield
        finally:
            for m, (mean, var, count, momentum) in zip(norms, saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
                m.momentum = momentum
            self.train(was_training)

