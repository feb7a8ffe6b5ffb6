"""The capacity-annealed β-VAE (Burgess et al. 2018, "Understanding disentangling in β-VAE").

    loss = recon + γ · |KL − C|,   C = C_max · min(1, step / capacity_steps)

The KL is held near a target capacity that rises linearly over training, so the latent channel
opens gradually and the factors that explain most of the reconstruction are encoded first. Their
dSprites settings are the defaults: γ = 1000, C_max = 25 nats over 100,000 steps. At evaluation
(no step) the target is C_max.
"""

from __future__ import annotations

from facevae.models.objectives import BetaKL


def capacity_at(step: int | None, capacity_max: float, capacity_steps: int) -> float:
    if step is None or capacity_steps == 0:
        return capacity_max
    return capacity_max * min(1.0, max(step, 0) / capacity_steps)


class CapacityKL(BetaKL):
    def __call__(self, posterior, z, kl, weight, step):
        c = self.config
        target = capacity_at(step, c.capacity_max, c.capacity_steps)
        return c.capacity_gamma * (kl.sum(1).mean() - target).abs(), {"capacity": kl.new_tensor(target)}
