"""β-TCVAE (Chen et al. 2018): only the total-correlation part of the KL is weighted by β.

    E_x KL(q(z|x) ‖ p(z)) = I_q(x; z)            (index-code mutual information)
                          + KL(q(z) ‖ Π_d q(z_d))  (total correlation)
                          + Σ_d KL(q(z_d) ‖ p(z_d)) (dimension-wise KL)

The aggregate posterior q(z) = 1/N Σ_n q(z|x_n) is estimated on the minibatch by minibatch-weighted
sampling (their eq. 5): log q(z_i) ≈ logsumexp_j log q(z_i | x_j) − log(N·M), N the training set's
size, M the batch's. The objective is recon + α·MI + β·TC + γ·dwKL with their defaults α = γ = 1.
The three estimates telescope: their sum is the Monte Carlo KL log q(z|x) − log p(z) of the batch.
"""

from __future__ import annotations

import math

import torch

from facevae.models.objectives import BetaKL

ALPHA = GAMMA = 1.0
LOG_2PI = math.log(2 * math.pi)


def log_normal(z: torch.Tensor, mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    t = (z - mu) / std
    return -0.5 * (t * t + LOG_2PI) - torch.log(std)


def decomposition(z: torch.Tensor, mu: torch.Tensor, std: torch.Tensor, dataset_size: int) -> dict:
    """Batch means (nats) of the mutual information, total correlation and dimension-wise KL."""
    batch = z.shape[0]
    pairwise = log_normal(z[:, None, :], mu[None, :, :], std[None, :, :])  # (i, j, d): log q(z_i,d | x_j)
    log_norm = math.log(dataset_size * batch)
    log_qz = torch.logsumexp(pairwise.sum(2), dim=1) - log_norm  # log q(z_i)
    log_qz_dims = (torch.logsumexp(pairwise, dim=1) - log_norm).sum(1)  # Σ_d log q(z_i,d)
    log_qz_x = pairwise.diagonal(dim1=0, dim2=1).sum(0)  # log q(z_i | x_i)
    log_pz = log_normal(z, torch.zeros_like(z), torch.ones_like(z)).sum(1)
    return {"mi": (log_qz_x - log_qz).mean(), "tc": (log_qz - log_qz_dims).mean(),
            "dwkl": (log_qz_dims - log_pz).mean()}


class TotalCorrelation(BetaKL):
    def __call__(self, posterior, z, kl, weight, step):
        if self.config.dataset_size < 1:
            raise ValueError("tcvae needs the training set's size (dataset_size); facevae train sets it from the data")
        q = posterior.base_dist
        parts = decomposition(z.float(), q.loc, q.scale, self.config.dataset_size)
        ramp = weight / self.config.effective_beta  # the KL warm-up ramps the whole term
        term = ramp * (ALPHA * parts["mi"] + self.config.effective_beta * parts["tc"] + GAMMA * parts["dwkl"])
        return term, parts
