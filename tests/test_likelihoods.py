"""The discrete observation models: proper distributions over 256 values, with known answers."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from facevae.models.likelihoods import Bernoulli, DiscretizedGaussian, DiscretizedLogistic, bits_per_dim

FAMILIES = [DiscretizedLogistic, DiscretizedGaussian]
ALL_VALUES = (torch.arange(256.0) / 255).view(256, 1, 1, 1)  # every 8-bit value, one per "image"


def one_pixel(cls, loc: float, log_scale: float):
    return cls(torch.full((1, 1, 1, 1), loc), torch.full((1, 1, 1, 1), log_scale))


def direct_log_probs(cls, loc: float, log_scale: float) -> torch.Tensor:
    """The textbook formula, F(x + 1/255) - F(x - 1/255) with open outer bins, in float64."""
    x = torch.arange(256, dtype=torch.float64) * 2 / 255 - 1
    s = math.exp(log_scale)
    cdf = torch.sigmoid if cls is DiscretizedLogistic else torch.special.ndtr
    upper = torch.where(x > 0.999, torch.ones_like(x), cdf((x + 1 / 255 - loc) / s))
    lower = torch.where(x < -0.999, torch.zeros_like(x), cdf((x - 1 / 255 - loc) / s))
    return torch.log(upper - lower)


@pytest.mark.parametrize("cls", FAMILIES)
def test_probabilities_of_all_256_values_sum_to_one(cls):
    for loc in (-1.0, -0.37, 0.0, 0.5, 1.0):
        for log_scale in (-7.0, -4.0, -1.5, 0.0, 3.0, 8.0):
            total = one_pixel(cls, loc, log_scale).log_prob(ALL_VALUES).exp().sum().item()
            assert abs(total - 1) < 1e-4, (loc, log_scale, total)


@pytest.mark.parametrize("cls", FAMILIES)
def test_matches_the_direct_formula_computed_in_float64(cls):
    for loc, log_scale in [(0.1, -3.0), (-0.8, -1.0), (0.95, -5.0), (0.0, 1.0), (-1.0, -2.0)]:
        ours = one_pixel(cls, loc, log_scale).log_prob(ALL_VALUES).double()
        ref = direct_log_probs(cls, loc, log_scale)
        reliable = ref > math.log(1e-10)  # below that, float64 itself cancels
        assert reliable.sum() > 2
        torch.testing.assert_close(ours[reliable], ref[reliable], atol=2e-3, rtol=1e-4)
        assert (ours[~reliable] < math.log(1e-9)).all()


@pytest.mark.parametrize("cls", FAMILIES)
def test_mirror_symmetry_holds_deep_in_both_tails(cls):
    # p(value k | loc) = p(value 255-k | -loc). Far above the mean the naive F(b) - F(a) cancels to 0
    # in float32 while far below it does not, so this checks the upper tail is computed as well.
    for loc, log_scale in [(-0.9, -4.0), (0.3, -6.0), (-1.0, -2.0)]:
        up = one_pixel(cls, loc, log_scale).log_prob(ALL_VALUES)
        down = one_pixel(cls, -loc, log_scale).log_prob(ALL_VALUES.flip(0))
        torch.testing.assert_close(up, down, atol=1e-3, rtol=1e-5)
        if log_scale == -6.0:
            assert up.min() < -50  # deep in the tail indeed


@pytest.mark.parametrize("cls", FAMILIES)
def test_log_prob_is_largest_in_the_bin_of_the_mean(cls):
    for loc in (-0.9, -0.55, -0.2, 0.13, 0.41, 0.77):  # none halfway between two bins
        # (narrow enough that the open edge bins, which collect a whole tail, stay smaller)
        log_probs = one_pixel(cls, loc, -5.0).log_prob(ALL_VALUES)
        assert log_probs.argmax().item() == round((loc + 1) * 127.5)


def test_uniform_8_bit_data_costs_at_least_8_bits_and_about_8_at_best():
    # A single wide logistic does *not* tend to the uniform distribution as its scale grows: the two
    # open outer bins take nearly half the mass each and the inner bins' share shrinks like 1/scale.
    # So the known answer is Gibbs' inequality (>= 8 bits for every scale) and near-equality at the
    # best scale, plus the large-scale asymptotics below.
    costs = [-one_pixel(DiscretizedLogistic, 0.0, s / 10).log_prob(ALL_VALUES).mean().item() / math.log(2)
             for s in range(-40, 60)]
    assert min(costs) >= 8.0
    assert min(costs) < 8.35
    for log_scale in (5.0, 9.0, 13.0):  # where the difference of float32 CDFs cancels
        log_probs = one_pixel(DiscretizedLogistic, 0.0, log_scale).log_prob(ALL_VALUES)
        # an inner bin centred near 0: width 2/255 times the logistic density 1/(4s)
        assert log_probs[128].item() == pytest.approx(math.log(2 / 255 / (4 * math.exp(log_scale))), abs=1e-3)
        assert log_probs[0].exp().item() == pytest.approx(0.5, abs=2e-3)
        log_probs = one_pixel(DiscretizedGaussian, 0.0, log_scale).log_prob(ALL_VALUES)
        gaussian_bin = 2 / 255 / (math.sqrt(2 * math.pi) * math.exp(log_scale))
        assert log_probs[128].item() == pytest.approx(math.log(gaussian_bin), abs=1e-3)


@pytest.mark.parametrize("cls", FAMILIES)
def test_the_narrowest_scale_on_the_grid_is_almost_certain(cls):
    d = one_pixel(cls, 2 * 100 / 255 - 1, -7.0)
    t = (1 / 255) / math.exp(-7.0)  # half a bin, in scales
    p = math.tanh(t / 2) if cls is DiscretizedLogistic else math.erf(t / math.sqrt(2))
    assert d.log_prob(torch.full((1, 1, 1, 1), 100 / 255)).item() == pytest.approx(math.log(p), abs=1e-5)
    assert p > 0.97


@pytest.mark.parametrize("cls", FAMILIES)
def test_gradients_are_finite_at_the_edges(cls):
    for log_scale in (-7.0, 0.0, 6.0, 14.0):
        # the outer bins, and inner ones where the exact branch of torch.where is unused and 0/0-prone
        loc = torch.tensor([-1.0, -0.999, 0.999, 1.0, 0.0, 0.3]).view(6, 1, 1, 1).requires_grad_()
        ls = torch.full((6, 1, 1, 1), log_scale, requires_grad=True)
        x = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.5, 0.5]).view(6, 1, 1, 1)
        logp = cls(loc, ls).log_prob(x)
        assert torch.isfinite(logp).all()
        logp.sum().backward()
        assert torch.isfinite(loc.grad).all() and torch.isfinite(ls.grad).all()
        assert loc.grad.abs().sum() > 0


@pytest.mark.parametrize("cls", FAMILIES)
def test_sums_per_image_and_rounds_off_grid_inputs(cls):
    torch.manual_seed(0)
    loc, ls = torch.rand(2, 3, 4, 4) * 2 - 1, torch.full((2, 3, 4, 4), -3.0)
    x = torch.rand(2, 3, 4, 4)
    d = cls(loc, ls)
    assert d.log_prob(x).shape == (2,)
    torch.testing.assert_close(d.log_prob(x), d.log_prob(torch.round(x * 255) / 255))
    per_image = [cls(loc[i:i + 1], ls[i:i + 1]).log_prob(x[i:i + 1]) for i in range(2)]
    torch.testing.assert_close(d.log_prob(x), torch.cat(per_image))


def test_low_precision_parameters_are_scored_in_float32():
    loc = torch.zeros(1, 3, 2, 2, dtype=torch.bfloat16)
    d = DiscretizedLogistic(loc, torch.full_like(loc, -2.0))
    assert d.log_prob(torch.rand(1, 3, 2, 2)).dtype == torch.float32


@pytest.mark.parametrize("cls", FAMILIES)
def test_samples_lie_on_the_grid_near_the_mean(cls):
    loc = torch.full((1, 3, 16, 16), 0.2)
    d = cls(loc, torch.full_like(loc, -4.0))
    x = d.sample(generator=torch.Generator().manual_seed(0))
    assert x.min() >= 0 and x.max() <= 1
    torch.testing.assert_close(x * 255, torch.round(x * 255))
    assert (x.mean() - d.mean.mean()).abs() < 0.01
    torch.testing.assert_close(d.image(), torch.full_like(loc, 0.6))


def test_bits_per_dim_converts_nats_per_image():
    assert bits_per_dim(torch.tensor(-8 * 3072 * math.log(2)), 3072).item() == pytest.approx(8.0)


# --- the Bernoulli (binary images) -------------------------------------------------------------------------------

def test_bernoulli_puts_all_its_mass_on_the_black_and_white_images():
    logits = torch.tensor([[[[-3.0, 0.0], [0.7, 12.0]]]])  # one 2×2 image, four pixels
    corners = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4))).view(16, 1, 2, 2)
    total = Bernoulli(logits).log_prob(corners).exp().sum().item()
    assert abs(total - 1) < 1e-6
    white = torch.ones(1, 1, 2, 2)
    expected = torch.log(torch.sigmoid(logits)).sum()
    torch.testing.assert_close(Bernoulli(logits).log_prob(white)[0], expected)


def test_bernoulli_samples_are_binary_with_its_mean():
    p = Bernoulli(torch.full((4000, 1, 1, 1), math.log(0.3 / 0.7)))
    draws = p.sample(torch.Generator().manual_seed(0))
    assert set(draws.unique().tolist()) == {0.0, 1.0}
    assert abs(draws.mean().item() - 0.3) < 0.03
    torch.testing.assert_close(p.image(), torch.full_like(draws, 0.3))


# --- the discretised mixture of logistics (the hierarchical VAE's likelihood) -----------------------------
def mixture_params(B=2, K=3, H=2, W=2, seed=0, coeffs=True):
    """K logits, then per channel K means, K log-scales, K coefficients."""
    torch.manual_seed(seed)
    params = torch.randn(B, 10 * K, H, W)
    if not coeffs:  # tanh(0) = 0: the channels independent given the component
        params[:, K:].view(B, 3, 3 * K, H, W)[:, :, 2 * K:] = 0.0
    return params


def test_mixture_probabilities_of_every_colour_sum_to_one():
    from facevae.models.likelihoods import DiscretizedMixtureLogistic

    params = mixture_params(B=1, K=2, H=1, W=1)
    levels = torch.arange(256.0) / 255
    # P(red) from the red channel alone: the mixture of each component's red bin
    red = DiscretizedMixtureLogistic(params, 2)
    red_bins = DiscretizedLogistic.bin_log_prob(levels.view(256, 1) * 2 - 1, red.means[0, 0, :, 0, 0],
                                                red.log_scales[0, 0, :, 0, 0]) + red.logits[0, :, 0, 0]
    p_red = torch.logsumexp(red_bins, dim=1).exp()
    assert float(p_red.double().sum()) == pytest.approx(1.0, abs=1e-5)
    # summing green and blue out of the joint, whose means depend on red (and green), leaves P(red)
    green, blue = torch.meshgrid(levels, levels, indexing="ij")
    for r in (0, 17, 128, 255):
        x = torch.stack([torch.full_like(green, levels[r]), green, blue], 0).reshape(3, -1).T.reshape(-1, 3, 1, 1)
        joint = DiscretizedMixtureLogistic(params.expand(len(x), -1, -1, -1), 2).log_prob(x).double().exp().sum()
        assert float(joint) == pytest.approx(float(p_red[r]), rel=1e-4)


def test_one_component_without_coefficients_is_the_discretised_logistic():
    from facevae.models.likelihoods import DiscretizedMixtureLogistic

    params = mixture_params(K=1, coeffs=False)
    mixture = DiscretizedMixtureLogistic(params, 1)
    per_channel = params[:, 1:].view(2, 3, 3, 2, 2)  # (B, channel, [mean, log-scale, coefficient], H, W)
    means, log_scales = per_channel[:, :, 0], per_channel[:, :, 1].clamp(min=-7.0)
    plain = DiscretizedLogistic(means, log_scales)
    x = torch.rand(2, 3, 2, 2)
    torch.testing.assert_close(mixture.log_prob(x), plain.log_prob(x))
    torch.testing.assert_close(mixture.image(), plain.image())


def test_mixture_samples_lie_on_the_grid_and_gradients_are_finite():
    from facevae.models.likelihoods import DiscretizedMixtureLogistic

    params = mixture_params(K=4).requires_grad_()
    dist = DiscretizedMixtureLogistic(params, 4)
    x = dist.sample(torch.Generator().manual_seed(0))
    assert torch.equal(x, torch.round(x * 255) / 255) and 0 <= x.min() and x.max() <= 1
    edges = torch.zeros(2, 3, 2, 2)
    edges[:, :, 0] = 1.0  # the open outer bins
    dist.log_prob(edges).sum().backward()
    assert torch.isfinite(params.grad).all()
