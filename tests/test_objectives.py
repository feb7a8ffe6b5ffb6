"""The loss variants of the flat models: β-TCVAE's decomposition and estimator, capacity annealing."""

from __future__ import annotations

import math

import pytest
import torch

from facevae.models import ModelConfig, build_model
from facevae.models.capacity import capacity_at
from facevae.models.tcvae import decomposition


def test_the_tcvae_decomposition_sums_to_the_kl_of_the_batch():
    torch.manual_seed(0)
    mu, std = torch.randn(512, 4, dtype=torch.float64), torch.rand(512, 4, dtype=torch.float64) + 0.3
    z = mu + std * torch.randn_like(mu)
    parts = decomposition(z, mu, std, dataset_size=10_000)
    q, p = torch.distributions.Normal(mu, std), torch.distributions.Normal(0.0, 1.0)
    per_image = (q.log_prob(z) - p.log_prob(z)).sum(1)
    analytic = torch.distributions.kl_divergence(q, torch.distributions.Normal(torch.zeros_like(mu), 1.0)).sum(1).mean()
    total = parts["mi"] + parts["tc"] + parts["dwkl"]
    torch.testing.assert_close(total, per_image.mean())  # it telescopes to the Monte Carlo KL exactly
    standard_error = float(per_image.std() / math.sqrt(len(per_image)))
    assert abs(float(total - analytic)) < 4 * standard_error  # which estimates the analytic KL


def test_minibatch_weighted_sampling_matches_a_brute_force_computation():
    torch.manual_seed(1)
    B, D, N = 4, 3, 50
    mu, std = torch.randn(B, D, dtype=torch.float64), torch.rand(B, D, dtype=torch.float64) + 0.5
    z = mu + std * torch.randn_like(mu)

    def log_q(i, j, d):  # log q(z_i,d | x_j), one number at a time
        return -0.5 * ((z[i, d] - mu[j, d]) / std[j, d]) ** 2 - 0.5 * math.log(2 * math.pi) - math.log(std[j, d])

    mi = tc = dwkl = 0.0
    for i in range(B):
        joint = math.log(sum(math.exp(sum(log_q(i, j, d) for d in range(D))) for j in range(B))) - math.log(N * B)
        marginals = sum(math.log(sum(math.exp(log_q(i, j, d)) for j in range(B))) - math.log(N * B) for d in range(D))
        own = sum(log_q(i, i, d) for d in range(D))
        prior = sum(-0.5 * z[i, d] ** 2 - 0.5 * math.log(2 * math.pi) for d in range(D))
        mi, tc, dwkl = mi + (own - joint) / B, tc + (joint - marginals) / B, dwkl + (marginals - prior) / B
    parts = decomposition(z, mu, std, dataset_size=N)
    assert [float(parts[k]) for k in ("mi", "tc", "dwkl")] == pytest.approx([float(mi), float(tc), float(dwkl)])


def test_capacity_rises_linearly_to_its_maximum_and_the_loss_follows_it():
    assert [capacity_at(s, 25.0, 100) for s in (0, 50, 100, 1000, None)] == [0.0, 12.5, 25.0, 25.0, 25.0]
    assert capacity_at(10, 25.0, 0) == 25.0
    config = ModelConfig(model="vae", latent_dim=4, width=1, image_size=32, loss="capacity", capacity_max=8.0,
                         capacity_steps=10, capacity_gamma=3.0)
    torch.manual_seed(0)
    model = build_model(config)
    x = torch.rand(8, 3, 32, 32)
    for step in (0, 5, 10):
        torch.manual_seed(2)
        terms = model.loss(x, step=step)
        expected = terms["recon"] + 3.0 * (terms["kl"] - capacity_at(step, 8.0, 10)).abs()
        torch.testing.assert_close(terms["loss"], expected)
        assert float(terms["capacity"]) == capacity_at(step, 8.0, 10)


def test_tcvae_weighs_only_the_total_correlation_by_beta():
    config = ModelConfig(model="vae", latent_dim=4, width=1, image_size=32, loss="tcvae", beta=6.0,
                         dataset_size=1000)
    torch.manual_seed(0)
    model = build_model(config)
    torch.manual_seed(3)
    terms = model.loss(torch.rand(16, 3, 32, 32))
    torch.testing.assert_close(terms["loss"], terms["recon"] + terms["mi"] + 6.0 * terms["tc"] + terms["dwkl"])
    with pytest.raises(ValueError, match="dataset_size"):
        build_model(ModelConfig(model="vae", latent_dim=4, width=1, image_size=32, loss="tcvae")).loss(
            torch.rand(2, 3, 32, 32))


@pytest.mark.parametrize("objective", ["tcvae", "capacity"])
def test_the_objectives_train_from_the_command_line(objective, synth_data, tmp_path):
    import json

    from facevae.cli import main
    from facevae.training.config import RunConfig

    run = tmp_path / objective
    flags = ["--model", "vae", "--loss", objective, "--beta", "4", "--capacity-steps", "20", "--epochs", "1"]
    assert main(["train", "--data", str(synth_data), "--run-dir", str(run), "--width", "1", "--latent-dim", "6",
                 "--image-size", "32", "--batch-size", "32", "--eval-k", "2", "--eval-batches", "1", "--no-progress",
                 *flags]) == 0
    assert json.loads((run / "metrics.json").read_text())["test"]["test_bits_per_dim"] > 0
    if objective == "tcvae":  # the training set's size was recorded for the estimator
        assert RunConfig.load(run / "config.yaml").model.dataset_size > 100
