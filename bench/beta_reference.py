"""Is it the budget or facevae's model? The reference β-VAE of the literature, alone, on the same dSprites.

The encoder and decoder of Burgess et al. 2018 (and disentanglement_lib's ``conv_encoder`` /
``deconv_decoder``): four 4x4 stride-2 convolutions of 32, 32, 64, 64 channels, a 256-unit layer, 10
latents, ReLU, no normalisation; 64x64 one-channel procedural dSprites (the published size), a fresh
batch of 64 drawn from the factor grid every step (so no epoch repeats an image), Bernoulli likelihood,
Adam. Nothing of facevae's training or models is used: only its dSprites renderer and its metrics
(MIG on 10,000 fresh codes, the β-VAE score on --bvae-n / --bvae-n-eval points). If this model shows no
effect of β at a budget where facevae's does not either, the budget is the reason, not the model.

    .venv/bin/python bench/beta_reference.py --beta 1 --steps 6000 --evals 2000,4000,6000 &
    .venv/bin/python bench/beta_reference.py --beta 4 --steps 6000 --evals 2000,4000,6000
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from facevae.data.sprites import ProceduralDSprites
from facevae.metrics.beta_vae import beta_vae_score
from facevae.metrics.mig import mig

LATENTS = 10


def conv_stack(channels: list[int], transposed: bool = False) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, o in zip(channels, channels[1:]):
        layers += [(nn.ConvTranspose2d if transposed else nn.Conv2d)(i, o, 4, 2, 1), nn.ReLU()]
    return layers


def reference_model() -> tuple[nn.Module, nn.Module]:
    encoder = nn.Sequential(*conv_stack([1, 32, 32, 64, 64]), nn.Flatten(), nn.Linear(64 * 16, 256), nn.ReLU(),
                            nn.Linear(256, 2 * LATENTS))
    decoder = nn.Sequential(nn.Linear(LATENTS, 256), nn.ReLU(), nn.Linear(256, 64 * 16), nn.ReLU(),
                            nn.Unflatten(1, (64, 4, 4)), *conv_stack([64, 64, 32, 32], transposed=True),
                            nn.ConvTranspose2d(32, 1, 4, 2, 1))
    return encoder, decoder


class Sprites:
    """The ground-truth contract of the metrics, observations as the model takes them ((n, 1, 64, 64) in [0, 1])."""

    def __init__(self):
        self.sprites = ProceduralDSprites(channels=1)
        self.factor_sizes = self.sprites.factor_sizes

    def sample_factors(self, n, random_state):
        return self.sprites.sample_factors(n, random_state)

    def render(self, factors) -> torch.Tensor:
        return torch.from_numpy(self.sprites.render(factors)).float().permute(0, 3, 1, 2) / 255.0


def step(encoder, decoder, optimiser, x: torch.Tensor, beta: float) -> tuple[float, float]:
    mu, logvar = encoder(x).chunk(2, dim=1)
    logvar = logvar.clamp(-12, 8)
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    reconstruction = F.binary_cross_entropy_with_logits(decoder(z), x, reduction="sum") / len(x)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1).mean()
    optimiser.zero_grad()
    (reconstruction + beta * kl).backward()
    optimiser.step()
    return reconstruction.item(), kl.item()


def scores(encoder, data: Sprites, bvae_n: int, bvae_n_eval: int) -> dict:
    @torch.no_grad()
    def encode(x):
        return encoder(x)[:, :LATENTS].numpy()

    encoder.eval()
    factors = data.sample_factors(10000, np.random.RandomState(100))
    codes = np.concatenate([encode(data.render(factors[i:i + 1000])) for i in range(0, len(factors), 1000)])
    result = mig(codes, factors)
    bvae = beta_vae_score(data, encode, 0, 64, bvae_n, bvae_n_eval)
    encoder.train()
    return {"mig": round(result["discrete_mig"], 3), "mig_per_factor": [round(v, 3) for v in result["mig_per_factor"]],
            "beta_vae_eval": round(bvae["eval_accuracy"], 3), "active": int((codes.std(0) > 0.05).sum())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--beta", type=float, default=4.0)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--evals", default="2000,4000,6000", help="steps after which to score")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: two of these share 2 cores)")
    p.add_argument("--bvae-n", type=int, default=500, help="β-VAE score training points")
    p.add_argument("--bvae-n-eval", type=int, default=300, help="β-VAE score evaluation points")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data, rng = Sprites(), np.random.RandomState(args.seed)
    encoder, decoder = reference_model()
    optimiser = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=args.lr)
    evals, t0 = {int(s) for s in args.evals.split(",")}, time.perf_counter()
    for n in range(1, args.steps + 1):
        reconstruction, kl = step(encoder, decoder, optimiser, data.render(data.sample_factors(64, rng)), args.beta)
        if n in evals:
            print(json.dumps({"beta": args.beta, "seed": args.seed, "step": n, "reconstruction": round(reconstruction, 1),
                              "kl": round(kl, 2), **scores(encoder, data, args.bvae_n, args.bvae_n_eval),
                              "seconds": round(time.perf_counter() - t0)}), flush=True)


if __name__ == "__main__":
    main()
