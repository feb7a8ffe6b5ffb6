"""The VAE family: shapes, conditioning, loss terms, importance sampling, training, config."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.distributions import kl_divergence

from facevae.data.attributes import CELEBA_ATTRIBUTES
from facevae.models import (
    CVAE,
    MODELS,
    REPORT_CONDITION_NAMES,
    VAE,
    AttributeCondition,
    BetaVAE,
    ModelConfig,
    VAEBase,
    build_model,
)

NAMES = ["Male", "Smiling", "Eyeglasses"]


def config(model="vae", **kw) -> ModelConfig:
    kw = {"width": 1, "image_size": 32, "latent_dim": 8, "condition_names": NAMES, **kw}
    if model == "betavae":
        kw.setdefault("beta", 4.0)
    return ModelConfig(model=model, **kw)


def make(model="vae", seed=0, **kw) -> VAEBase:
    torch.manual_seed(seed)
    return build_model(config(model, **kw))


def batch(n=4, size=32, seed=0):
    """Smooth 8-bit images (a colour ramp and a disc each) and 0/1 attributes."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    colour = torch.rand(n, 3, 1, 1, generator=g)
    centre = torch.rand(n, 2, 1, 1, generator=g) * 0.5 + 0.25
    disc = ((xx - centre[:, :1]) ** 2 + (yy - centre[:, 1:]) ** 2 < 0.05).float()
    x = (colour * xx + (1 - colour) * yy) * (1 - disc) + disc * colour.flip(1)
    c = (torch.rand(n, len(NAMES), generator=g) < 0.5).float()
    return torch.round(x * 255) / 255, c


@pytest.mark.parametrize("size", [32, 64, 128])
@pytest.mark.parametrize("model", ["vae", "cvae", "betavae"])
def test_shapes_for_every_model_and_size(model, size):
    net = make(model, image_size=size)
    x, c = batch(2, size)
    out = net(x, c)
    assert out["posterior"].mean.shape == (2, 8) and out["z"].shape == (2, 8)
    assert out["observation"].mean.shape == (2, 3, size, size)
    assert out["observation"].log_prob(x).shape == (2,)
    for images in (net.sample(3, c[:1].expand(3, -1)), net.reconstruct(x, c)):
        assert images.shape[1:] == (3, size, size) and images.min() >= 0 and images.max() <= 1
    terms = net.loss(x, c)
    assert terms["kl_per_dim"].shape == (8,)
    assert all(t.dim() == 0 and torch.isfinite(t) for k, t in terms.items() if k != "kl_per_dim")


def test_build_model_picks_the_class_and_the_conditioning():
    from facevae.models.hvae import HVAE

    assert MODELS == {"vae": VAE, "cvae": CVAE, "betavae": BetaVAE, "hvae": HVAE}
    assert type(build_model(config("vae").to_dict())) is VAE
    cvae = make("cvae")
    assert isinstance(cvae, CVAE) and cvae.num_conditions == 3
    assert make("vae").num_conditions == 0
    assert make("betavae").conditioning is None
    assert make("betavae", conditional=True).num_conditions == 3
    grouped = make("cvae", norm="group")
    assert any(isinstance(m, torch.nn.GroupNorm) for m in grouped.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in grouped.modules())
    assert torch.isfinite(grouped.loss(*batch(1))["loss"])  # batch-independent: a batch of one is fine


@pytest.mark.parametrize("mode", ["vector", "embedding"])
def test_changing_the_condition_changes_encoder_and_decoder(mode):
    net = make("cvae", condition_mode=mode).eval()
    x, c = batch(2)
    flipped = c.clone()
    flipped[:, 0] = 1 - flipped[:, 0]
    z = torch.randn(2, 8)
    assert (net.decode(z, c).image() - net.decode(z, flipped).image()).abs().max() > 1e-4
    assert (net.encode(x, c).mean - net.encode(x, flipped).mean).abs().max() > 1e-5
    with pytest.raises(ValueError, match="conditional"):
        net.decode(z)
    with pytest.raises(ValueError, match="shape"):
        net.decode(z, c[:, :2])


def test_embedding_condition_interpolates_between_values():
    cond = AttributeCondition(3, "embedding", dim=5)
    zero, one, half = (cond(torch.full((1, 3), v)) for v in (0.0, 1.0, 0.5))
    assert half.shape == (1, 5)
    torch.testing.assert_close(half, (zero + one) / 2)


def test_unconditional_model_ignores_c():
    net = make("vae")
    x, c = batch()
    torch.manual_seed(1)
    with_c = net.loss(x, c)["loss"]
    torch.manual_seed(1)
    assert net.loss(x)["loss"] == with_c


@pytest.mark.parametrize("likelihood", ["discretized_logistic", "gaussian", "bernoulli", "logistic_mixture"])
def test_loss_is_finite_and_every_parameter_gets_a_gradient(likelihood):
    net = make("cvae", likelihood=likelihood, condition_mode="embedding")
    x, c = batch()
    terms = net.loss(x, c)
    assert torch.isfinite(terms["loss"])
    torch.testing.assert_close(terms["loss"], terms["recon"] + terms["kl"])  # β = 1, no free bits
    torch.testing.assert_close(terms["elbo"], -(terms["recon"] + terms["kl"]))
    torch.testing.assert_close(terms["bits_per_dim"], -terms["elbo"] / (3 * 32 * 32 * math.log(2)))
    terms["loss"].backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert (net.pixel_log_scale is not None) == (likelihood == "gaussian")
    image = net.decode(net.posterior(x, c).mean, c).mean
    assert image.shape == x.shape and 0 <= image.min() and image.max() <= 1


def test_the_flat_models_mixture_likelihood_is_the_hierarchical_models_on_the_same_parameters():
    from facevae.models.likelihoods import DiscretizedMixtureLogistic

    net = make("vae", likelihood="logistic_mixture", mixtures=3)
    assert net.decoder[-1].out_channels == 30  # per component: a logit; per channel a mean, a scale, a coefficient
    z, x = torch.randn(2, 8), batch(2)[0]
    params = net.decoder(torch.nn.functional.leaky_relu(net.from_latent(z), 0.2).view(-1, *net._top))
    torch.testing.assert_close(net.decode(z).log_prob(x), DiscretizedMixtureLogistic(params, 3).log_prob(x))
    with pytest.raises(ValueError, match="logistic_mixture models RGB"):
        ModelConfig(likelihood="logistic_mixture", channels=1)


def test_analytic_kl_matches_monte_carlo():
    net = make("vae").eval()
    with torch.no_grad():  # a posterior well away from the prior
        net.to_posterior.bias[:8] = 1.0
        net.to_posterior.bias[8:] = -1.0
    posterior = net.posterior(batch(2)[0])
    prior = net.prior(2)
    analytic = kl_divergence(posterior, prior)
    z = posterior.sample((20000,))
    monte_carlo = (posterior.log_prob(z) - prior.log_prob(z)).mean(0)
    assert analytic.min() > 2
    torch.testing.assert_close(monte_carlo, analytic, atol=0.1, rtol=0.02)


def test_beta_norm_sets_beta_and_the_loss_uses_it():
    cfg = config(beta_norm=0.5)
    assert cfg.effective_beta == 0.5 * 3 * 32 * 32 / 8 == 192.0
    net = make(beta_norm=0.5)
    terms = net.loss(*batch())
    torch.testing.assert_close(terms["loss"], terms["recon"] + 192.0 * terms["kl"])
    terms = net.loss(*batch(), kl_weight=0.25)
    torch.testing.assert_close(terms["loss"], terms["recon"] + 0.25 * terms["kl"])
    assert config(beta=3).effective_beta == 3.0


def test_free_bits_floor_each_dimension():
    x, c = batch()
    plain, floored = make(), make(free_bits=2.0)
    torch.manual_seed(1)
    without = plain.loss(x, c)
    torch.manual_seed(1)
    with_fb = floored.loss(x, c)
    assert (with_fb["kl_per_dim"] < 2.0).all()  # an untrained model: every dimension below the floor
    torch.testing.assert_close(with_fb["loss"], with_fb["recon"] + 2.0 * 8)
    assert with_fb["loss"] >= without["loss"]
    torch.testing.assert_close(with_fb["elbo"], without["elbo"])  # the bound itself is unchanged


def test_kl_warmup_ramps_linearly_to_beta():
    cfg = config(beta=2.0, kl_warmup_steps=100)
    assert [cfg.kl_weight(s) for s in (0, 25, 50, 100, 1000)] == [0.0, 0.5, 1.0, 2.0, 2.0]
    assert config(beta=2.0).kl_weight(0) == 2.0


def test_importance_weighted_bound_is_at_least_the_elbo():
    net = make("cvae")
    with torch.no_grad():  # a wide posterior, so that the bounds differ visibly
        net.to_posterior.bias[8:] = 1.0
    net.eval()
    x, c = batch()
    torch.manual_seed(0)
    elbo = torch.stack([net.loss(x, c, kl_weight=1.0)["elbo"] for _ in range(20)]).mean()
    iw1 = torch.stack([net.importance_log_likelihood(x, c, k=1) for _ in range(20)]).mean()
    iw50 = net.importance_log_likelihood(x, c, k=50, chunk=7)
    assert iw50.shape == (4,)
    assert iw50.mean() > elbo + 1.0
    assert abs(iw1 - elbo) < 0.25 * (iw50.mean() - elbo)  # k=1 is the ELBO, in expectation
    ev = net.evaluate(x, c, k=20)
    assert ev["bits_per_dim_iw"] < ev["bits_per_dim"]
    torch.testing.assert_close(ev["bits_per_dim_iw"], -ev["log_px_iw"] / (3 * 32 * 32 * math.log(2)))


def test_importance_estimate_is_exact_when_the_decoder_ignores_z():
    # then p(x) = p(x|z) for every z, and IWAE → log p(x|z) + log E_q[p(z)/q(z)] = log p(x|z)
    net = make("vae")
    with torch.no_grad():
        net.from_latent.weight.zero_()
        net.to_posterior.bias[:8] = 0.5
        net.to_posterior.bias[8:] = 1.0  # q wider than the prior: bounded weights, fast convergence
    net.eval()
    x, _ = batch()
    exact = net.decode(torch.zeros(4, 8)).log_prob(x)
    torch.manual_seed(0)
    torch.testing.assert_close(net.importance_log_likelihood(x, k=400), exact, atol=0.3, rtol=0)
    kl = kl_divergence(net.posterior(x), net.prior(4))
    torch.testing.assert_close(net.loss(x, kl_weight=1.0)["elbo"], (exact - kl).mean())


def test_adam_overfits_eight_images():
    net = make("cvae", condition_mode="embedding")
    x, c = batch(8)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        terms = net.loss(x, c)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        losses.append(terms["loss"].item())
    assert losses[-1] < 0.8 * losses[0]


def test_seeding_gives_identical_models_and_outputs():
    a, b = make("cvae", seed=3), make("cvae", seed=3)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    x, c = batch()
    torch.manual_seed(7)
    la = a.loss(x, c)["loss"]
    torch.manual_seed(7)
    assert torch.equal(la, b.loss(x, c)["loss"])
    a.eval()
    s1 = a.sample(4, c, generator=torch.Generator().manual_seed(1))
    s2 = a.sample(4, c, generator=torch.Generator().manual_seed(1))
    assert torch.equal(s1, s2)
    assert not torch.equal(s1, a.sample(4, c, generator=torch.Generator().manual_seed(2)))
    cold = a.sample(3, c[0], temperature=0.0)  # z = 0, same condition: identical images
    assert torch.equal(cold[0], cold[2])
    assert torch.equal(a.sample(3, c[:1], temperature=0.0), cold)


def test_bf16_autocast_gives_a_finite_float32_loss():
    net = make("cvae")
    x, c = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = net.loss(x, c)
        out = net(x, c)
    assert out["posterior"].mean.dtype == out["observation"].loc.dtype == torch.float32
    assert all(t.dtype == torch.float32 for t in terms.values()) and torch.isfinite(terms["loss"])
    terms["loss"].backward()
    assert torch.isfinite(net.to_posterior.weight.grad).all()


def test_channels_last_gives_the_same_loss():
    net = make("cvae").eval()
    x, c = batch()
    torch.manual_seed(1)
    ref = net.loss(x, c)["loss"]
    net = net.to(memory_format=torch.channels_last)
    torch.manual_seed(1)
    torch.testing.assert_close(net.loss(x.to(memory_format=torch.channels_last), c)["loss"], ref, rtol=1e-5, atol=1e-2)


def test_config_round_trips_and_rejects_bad_values():
    cfg = config("cvae", beta_norm=0.1, condition_mode="embedding")
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert ModelConfig.from_dict({"model": "vae", "learning_rate": 1e-3}).model == "vae"
    with pytest.raises(ValueError, match="unknown keys learning_rate"):
        ModelConfig.from_dict({"learning_rate": 1e-3}, strict=True)
    assert ModelConfig(beta=4).beta == 4.0 and isinstance(ModelConfig(beta=4).beta, float)
    for bad in ({"width": "2"}, {"width": 2.0}, {"beta": "4"}, {"conditional": 1}, {"condition_names": "Male"},
                {"beta_norm": [1]}):
        with pytest.raises(TypeError, match=next(iter(bad))):
            ModelConfig(**bad)
    for bad in ({"image_size": 48}, {"model": "nvae"}, {"likelihood": "poisson"}, {"latent_dim": 0},
                {"model": "cvae"}, {"model": "betavae"}, {"model": "betavae", "beta_norm": 0.001},
                {"free_bits": -1.0}, {"condition_names": ["Male", "Male"]}):
        with pytest.raises(ValueError):
            ModelConfig(**bad)
    assert ModelConfig(model="betavae", beta_norm=0.01).effective_beta > 1
    assert config("cvae").condition_index(CELEBA_ATTRIBUTES) == [20, 31, 15]
    with pytest.raises(ValueError, match="Smiling"):
        config("cvae").condition_index(["Male"])
    assert set(REPORT_CONDITION_NAMES) <= set(CELEBA_ATTRIBUTES)


def test_default_cvae_has_about_two_million_parameters():
    torch.manual_seed(0)
    net = build_model(ModelConfig(model="cvae", condition_names=CELEBA_ATTRIBUTES))
    n = sum(p.numel() for p in net.parameters())
    assert 1.5e6 < n < 3e6  # width 1: quick on a CPU (width 2 is about three times as many)
    assert net.latent_dim == 64 and net.num_conditions == 40 and net.num_dims == 3 * 64 * 64


def test_latents_are_the_posterior_in_the_priors_coordinates_with_its_kl():
    net = make("cvae").eval()
    x, c = batch(3)
    with torch.no_grad():
        q = net.posterior(x, c)
        latents = net.encode(x, c)
    assert [g.name for g in latents.groups] == ["z"] and latents.groups[0].units == slice(0, 8)
    torch.testing.assert_close(latents.codes(), q.mean)  # a flat VAE's prior is N(0, I): the codes are z
    torch.testing.assert_close(latents.codes("z"), latents.codes("all"))
    torch.testing.assert_close(latents.kl_per_unit().sum(1), kl_divergence(q, net.prior(3)))
    assert latents.unit_groups() == ["z"] * 8
    with pytest.raises(ValueError, match="no latent group 'top'"):
        latents.codes("top")
    # prior codes are N(0, T²) in these coordinates, the same draw for the same generator
    a = net.prior_codes(4000, 0.5, torch.Generator().manual_seed(1))
    b = net.prior_codes(4000, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (4000, 8) and abs(float(a.std()) - 0.5) < 0.02
