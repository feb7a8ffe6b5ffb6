"""Observation models p(x | z) over 8-bit images.

Both are *discrete*: they put a probability on each of the 256 values of every sub-pixel, so
``-log_prob(x) / (C·H·W·ln 2)`` is a negative log-likelihood in bits/dim, the number that
PixelCNN++, NVAE and the other published models report.

* :class:`DiscretizedLogistic` (Salimans et al. 2017, PixelCNN++ without the mixture): a logistic
  per sub-pixel with its own mean and log-scale, both predicted by the decoder.
* :class:`DiscretizedGaussian`: the fast, MSE-like option. The decoder predicts only the mean; the
  scale is one learned number per channel, so the reconstruction term is a weighted squared error
  plus a constant (while the scale is wide against a bin), yet it stays a proper distribution over
  the 256 values and bits/dim stay valid.

Pixels live in [0, 1] at the interface (``log_prob(x)``, ``mean``, ``image()``); internally they are
rescaled to [-1, 1], where the bins have width 2/255. ``x`` is rounded to the nearest 8-bit value
first, so images that were resized on the device (off the grid) are scored on the grid.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

HALF_BIN = 1.0 / 255.0  # half the bin width in [-1, 1] units
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

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) in nats per image (summed over the last three dims); ``x`` in [0, 1], (..., C, H, W)."""
        x = to_symmetric(x)
        inv_scale = torch.exp(-self.log_scale)
        lo = (x - HALF_BIN - self.loc) * inv_scale
        hi = (x + HALF_BIN - self.loc) * inv_scale
        lo = torch.where(x < -0.999, -_EDGE, lo)
        hi = torch.where(x > 0.999, _EDGE, hi)
        above = lo + hi > 0
        lo, hi = torch.where(above, -hi, lo), torch.where(above, -lo, hi)
        log_hi = self._log_cdf(hi)
        # clamp: keeps log(0) (and its gradient) out of the branch that torch.where discards
        gap = (self._log_cdf(lo) - log_hi).clamp(max=-1e-20)
        exact = log_hi + torch.log(-torch.expm1(gap))
        midpoint = self._log_pdf(0.5 * (lo + hi)) + torch.log(hi - lo)
        logp = torch.where(hi - lo < _MIN_WIDTH, midpoint, exact)
        return logp.sum(dim=(-3, -2, -1))

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


def bits_per_dim(log_px: torch.Tensor, num_dims: int) -> torch.Tensor:
    """Convert log p(x) in nats per image to bits per sub-pixel (the published unit)."""
    return -log_px / (num_dims * math.log(2))
