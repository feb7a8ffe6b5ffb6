"""Observation models p(x | z) over 8-bit images.

All are *discrete*: they put a probability on the values a sub-pixel can take (each of the 256, or for
the Bernoulli black and white), so ``-log_prob(x) / (C·H·W·ln 2)`` is a negative log-likelihood in
bits/dim, the number that PixelCNN++, NVAE and the other published models report.

* :class:`DiscretizedLogistic` (Salimans et al. 2017, PixelCNN++ without the mixture): a logistic
  per sub-pixel with its own mean and log-scale, both predicted by the decoder.
* :class:`DiscretizedGaussian`: the fast, MSE-like option. The decoder predicts only the mean; the
  scale is one learned number per channel, so the reconstruction term is a weighted squared error
  plus a constant (while the scale is wide against a bin), yet it stays a proper distribution over
  the 256 values and bits/dim stay valid.
* :class:`Bernoulli`: black or white per sub-pixel, for binary images (dSprites).

Pixels live in [0, 1] at the interface (``log_prob(x)``, ``mean``, ``image()``); internally they are
rescaled to [-1, 1], where the bins have width 2/255. ``x`` is rounded to the nearest 8-bit value
first, so images that were resized on the device (off the grid) are scored on the grid.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

HALF_BIN = 1.0 / 255.0  # half the bin width in [-1, 1] units
LOG_SCALE_FLOOR = -7.0  # PixelCNN++ and NVAE: about 1/8 of a bin in [-1, 1] units
_EDGE = 1e4  # a standardised "infinity" for the open outer bins; finite so that gradients stay finite
_MIN_WIDTH = 1e-3  # standardised bin width below which the midpoint rule is both exact enough and more precise


def to_symmetric(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] images → the 8-bit grid in [-1, 1] (rounded to the nearest of the 256 values)."""
    return torch.round(x.float().clamp(0, 1) * 255) * (2 / 255) - 1


class _Discretized:
    """A location-scale family over 256 bins of [-1, 1]; subclasses give the standard log-CDF and log-pdf.

    ``log_prob`` uses one formula for every bin, stable everywhere:

    * the outer bins are open (x=0 takes all mass below its upper edge, x=255 all mass above its
      lower edge), done by moving their outer edge to ±_EDGE standard deviations;
    * the family is symmetric, so bins above the mean are reflected below it, where
      log(F(b) - F(a)) = log F(b) + log(1 - exp(log F(a) - log F(b))) loses no precision even
      far in the tail (there F(b) and F(a) are tiny but their logs are exact, whereas above the
      mean 1 - F would cancel);
    * where the bin is narrow against the scale the difference of CDFs cancels, and the midpoint
      rule pdf(mid)·width is used instead (error ~ width²/24, negligible there).
    """

    def __init__(self, loc: torch.Tensor, log_scale: torch.Tensor):
        # float32 whatever the autocast dtype: bf16 has ~3 significant digits, not enough for a
        # sum over 12k sub-pixels of log-probabilities.
        self.loc = loc.float()
        self.log_scale = log_scale.float()

    @staticmethod
    def _log_cdf(t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def _log_pdf(t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _standard_noise(self, shape, generator):
        raise NotImplementedError

    @classmethod
    def bin_log_prob(cls, x_sym: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
        """log P(bin of x) per element (broadcast), for ``x_sym`` on the 8-bit grid of [-1, 1]."""
        inv_scale = torch.exp(-log_scale)
        lo = (x_sym - HALF_BIN - loc) * inv_scale
        hi = (x_sym + HALF_BIN - loc) * inv_scale
        lo = torch.where(x_sym < -0.999, -_EDGE, lo)
        hi = torch.where(x_sym > 0.999, _EDGE, hi)
        above = lo + hi > 0
        lo, hi = torch.where(above, -hi, lo), torch.where(above, -lo, hi)
        log_hi = cls._log_cdf(hi)
        # clamp: keeps log(0) (and its gradient) out of the branch that torch.where discards
        gap = (cls._log_cdf(lo) - log_hi).clamp(max=-1e-20)
        exact = log_hi + torch.log(-torch.expm1(gap))
        midpoint = cls._log_pdf(0.5 * (lo + hi)) + torch.log(hi - lo)
        return torch.where(hi - lo < _MIN_WIDTH, midpoint, exact)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) in nats per image (summed over the last three dims); ``x`` in [0, 1], (..., C, H, W)."""
        return self.bin_log_prob(to_symmetric(x), self.loc, self.log_scale).sum(dim=(-3, -2, -1))

    @property
    def mean(self) -> torch.Tensor:
        """The location mapped back to [0, 1] (the mode's bin; the edge bins shift the true mean slightly)."""
        return (self.loc.clamp(-1, 1) + 1) / 2

    def image(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw pixel values: images in [0, 1] on the 8-bit grid."""
        noise = self._standard_noise(self.loc.shape, generator)
        x = self.loc + torch.exp(self.log_scale) * noise
        return torch.round((x.clamp(-1, 1) + 1) * 127.5) / 255


class DiscretizedLogistic(_Discretized):
    """A logistic(loc, exp(log_scale)) per sub-pixel, discretised to 256 bins (PixelCNN++)."""

    @staticmethod
    def _log_cdf(t):
        return -F.softplus(-t)

    @staticmethod
    def _log_pdf(t):
        return t - 2 * F.softplus(t)

    def _standard_noise(self, shape, generator):
        u = torch.rand(shape, generator=generator, device=self.loc.device).clamp(1e-5, 1 - 1e-5)
        return torch.log(u) - torch.log1p(-u)


class DiscretizedGaussian(_Discretized):
    """A normal(loc, exp(log_scale)) per sub-pixel, discretised to 256 bins."""

    @staticmethod
    def _log_cdf(t):
        return torch.special.log_ndtr(t)

    @staticmethod
    def _log_pdf(t):
        return -0.5 * t * t - 0.5 * math.log(2 * math.pi)

    def _standard_noise(self, shape, generator):
        return torch.randn(shape, generator=generator, device=self.loc.device)


class Bernoulli:
    """A Bernoulli per sub-pixel with logit ``logits``, over black (0) and white (1) only.

    For binary images such as dSprites this is the exact likelihood (every value but 0 and 255 has
    probability 0, so bits/dim stay a valid negative log-likelihood of the 8-bit images), and it is
    the likelihood the published β-VAE, FactorVAE and disentanglement_lib figures on dSprites use.
    On grey values it is their cross-entropy, not a likelihood: bits/dim are then not comparable.
    """

    def __init__(self, logits: torch.Tensor):
        self.logits = logits.float()

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) in nats per image; ``x`` in [0, 1], (..., C, H, W)."""
        logits, target = torch.broadcast_tensors(self.logits, x.float().clamp(0, 1))
        return -F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(dim=(-3, -2, -1))

    @property
    def mean(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    def image(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.bernoulli(self.mean, generator=generator)


def bits_per_dim(log_px: torch.Tensor, num_dims: int) -> torch.Tensor:
    """Convert log p(x) in nats per image to bits per sub-pixel (the published unit)."""
    return -log_px / (num_dims * math.log(2))


class DiscretizedMixtureLogistic:
    """PixelCNN++'s discretised mixture of logistics over RGB (Salimans et al. 2017), as NVAE uses it.

    ``params`` (B, K·10, H, W) per pixel: K mixture logits, then per channel K means, K log-scales
    and K coefficients that make green depend on red and blue on red and green (the channels of
    one pixel are not independent given z). Each bin's probability is the stable discretised
    logistic above; the components are combined by logsumexp over the mixture.
    """

    def __init__(self, params: torch.Tensor, components: int):
        params = params.float()  # the sum over 12k sub-pixels needs float32, whatever autocast did
        B, _, H, W = params.shape
        K = components
        self.logits = torch.log_softmax(params[:, :K], dim=1)  # (B, K, H, W)
        rest = params[:, K:].reshape(B, 3, 3 * K, H, W)
        self.means = rest[:, :, :K]  # (B, 3, K, H, W)
        self.log_scales = rest[:, :, K:2 * K].clamp(min=LOG_SCALE_FLOOR)
        self.coeffs = torch.tanh(rest[:, :, 2 * K:])  # [:, 0] green←red, [:, 1] blue←red, [:, 2] blue←green

    def _channel_means(self, red: torch.Tensor, green: torch.Tensor) -> torch.Tensor:
        """(B, 3, K, H, W) locations, green and blue shifted by the pixel's red (and green) values."""
        m, a = self.means, self.coeffs
        return torch.stack([m[:, 0], m[:, 1] + a[:, 0] * red, m[:, 2] + a[:, 1] * red + a[:, 2] * green], dim=1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) in nats per image; ``x`` in [0, 1], (B, 3, H, W)."""
        xs = to_symmetric(x).unsqueeze(2)  # (B, 3, 1, H, W), broadcast over the components
        locs = self._channel_means(xs[:, 0], xs[:, 1])
        per_component = DiscretizedLogistic.bin_log_prob(xs, locs, self.log_scales).sum(1) + self.logits
        return torch.logsumexp(per_component, dim=1).sum(dim=(-2, -1))

    def image(self) -> torch.Tensor:
        """A deterministic image in [0, 1]: the mixture-weighted means, the channel dependencies applied in order."""
        weights = self.logits.exp().unsqueeze(1)  # (B, 1, K, H, W)
        means, coeffs = (self.means * weights).sum(2), (self.coeffs * weights).sum(2)
        red = means[:, 0].clamp(-1, 1)
        green = (means[:, 1] + coeffs[:, 0] * red).clamp(-1, 1)
        blue = (means[:, 2] + coeffs[:, 1] * red + coeffs[:, 2] * green).clamp(-1, 1)
        return (torch.stack([red, green, blue], 1) + 1) / 2

    @property
    def mean(self) -> torch.Tensor:
        return self.image()

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw pixel values: a component per pixel (Gumbel-max), then a logistic per channel, in order."""
        device = self.logits.device
        u = torch.rand(self.logits.shape, generator=generator, device=device).clamp(1e-5, 1 - 1e-5)
        pick = torch.nn.functional.one_hot((self.logits - torch.log(-torch.log(u))).argmax(1), self.logits.shape[1])
        pick = pick.permute(0, 3, 1, 2).unsqueeze(1).float()  # (B, 1, K, H, W)
        means, log_scales, coeffs = ((t * pick).sum(2) for t in (self.means, self.log_scales, self.coeffs))
        u = torch.rand(means.shape, generator=generator, device=device).clamp(1e-5, 1 - 1e-5)
        x = means + torch.exp(log_scales) * (torch.log(u) - torch.log1p(-u))
        red = x[:, 0].clamp(-1, 1)
        green = (x[:, 1] + coeffs[:, 0] * red).clamp(-1, 1)
        blue = (x[:, 2] + coeffs[:, 1] * red + coeffs[:, 2] * green).clamp(-1, 1)
        return torch.round((torch.stack([red, green, blue], 1) + 1) * 127.5) / 255
