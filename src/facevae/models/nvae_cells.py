"""NVAE's building blocks (Vahdat & Kautz 2020, and its code, which is what was measured).

* encoder cell: BN–Swish–conv3×3–BN–Swish–conv3×3–SE, residual scaled by 0.1 (``res_bnswish`` ×2);
* decoder cell: BN–conv1×1 (expand ×6)–BN–Swish–depthwise conv5×5–BN–Swish–conv1×1–BN–SE, residual
  scaled by 0.1 (``mconv_e6k5g0``);
* combiners: encoder feature + conv1×1(decoder state); conv1×1(concat(decoder state, z));
* convolutions outside the inverted-residual blocks are weight-normalised (torch's parametrisation);
* :class:`SpectralPenalty`: the sum of the largest singular values of every convolution, by power
  iteration, plus the largest |γ| of every BatchNorm (NVAE's ``spectral_norm_parallel`` and
  ``batchnorm_loss``), which the objective weighs by λ.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm

BN_MOMENTUM = 0.05  # NVAE's
RESIDUAL_SCALE = 0.1
EXPANSION = 6
POWER_ITERATIONS = 4


def wn_conv(c_in: int, c_out: int, kernel: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return weight_norm(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=bias))


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        hidden = max(channels // 16, 4)
        self.gate = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x.mean(dim=(2, 3)))[:, :, None, None]


class BNSwishConv(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__(batch_norm(c_in), nn.SiLU(), wn_conv(c_in, c_out, 3, stride))


class EncoderCell(nn.Module):
    """Two BN–Swish–conv3×3 and SE; ``down`` halves the resolution and doubles the channels."""

    def __init__(self, channels: int, down: bool = False):
        super().__init__()
        out = 2 * channels if down else channels
        self.body = nn.Sequential(BNSwishConv(channels, out, 2 if down else 1), BNSwishConv(out, out), SqueezeExcite(out))
        # NVAE's factorised reduction is four shifted 1×1 convolutions; one strided one is the same map class
        self.skip = nn.Sequential(nn.SiLU(), wn_conv(channels, out, 1, 2)) if down else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + RESIDUAL_SCALE * self.body(x)


class DecoderCell(nn.Module):
    """The inverted residual (expand, depthwise 5×5, project) with BN and SE; ``up`` doubles the
    resolution and halves the channels."""

    def __init__(self, channels: int, up: bool = False, expansion: int = EXPANSION):
        super().__init__()
        out = channels // 2 if up else channels
        hidden = channels * expansion
        self.body = nn.Sequential(
            *([nn.Upsample(scale_factor=2, mode="nearest")] if up else []),
            batch_norm(channels),
            nn.Conv2d(channels, hidden, 1, bias=False), batch_norm(hidden), nn.SiLU(),
            nn.Conv2d(hidden, hidden, 5, padding=2, groups=hidden, bias=False), batch_norm(hidden), nn.SiLU(),
            nn.Conv2d(hidden, out, 1, bias=False), batch_norm(out),
            SqueezeExcite(out),
        )
        self.skip = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                                  wn_conv(channels, out, 1)) if up else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + RESIDUAL_SCALE * self.body(x)


class EncoderCombiner(nn.Module):
    """The encoder's feature at a group, informed by the decoder's state there (for the posterior)."""

    def __init__(self, enc_channels: int, dec_channels: int):
        super().__init__()
        self.conv = wn_conv(dec_channels, enc_channels, 1)

    def forward(self, feature: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return feature + self.conv(state)


class DecoderCombiner(nn.Module):
    """The decoder's state with a group's z folded in."""

    def __init__(self, channels: int, latent_channels: int):
        super().__init__()
        self.conv = wn_conv(channels + latent_channels, channels, 1)

    def forward(self, state: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([state, z.to(state.dtype)], dim=1))


class SpectralPenalty(nn.Module):
    """Σ σ_max(W) over ``convs`` (power iteration, vectors kept as buffers so a resume continues them)
    + Σ max|γ| over ``norms``: NVAE's smoothness penalty on the decoder and encoder."""

    def __init__(self, convs: list[nn.Conv2d], norms: list[nn.BatchNorm2d]):
        super().__init__()
        self.convs, self.norms = convs, norms  # plain lists: the modules are registered by their owners
        for i, conv in enumerate(convs):
            rows, cols = conv.out_channels, conv.weight.numel() // conv.out_channels
            self.register_buffer(f"u{i}", F.normalize(torch.randn(rows), dim=0, eps=1e-3))
            self.register_buffer(f"v{i}", F.normalize(torch.randn(cols), dim=0, eps=1e-3))

    def forward(self) -> torch.Tensor:
        total = torch.zeros((), device=self.u0.device if self.convs else None)
        for i, conv in enumerate(self.convs):
            w = conv.weight.flatten(1).float()  # the weight-normalised weight, where the conv has one
            u, v = getattr(self, f"u{i}"), getattr(self, f"v{i}")
            with torch.no_grad():
                for _ in range(POWER_ITERATIONS):
                    v = F.normalize(u @ w, dim=0, eps=1e-3)
                    u = F.normalize(w @ v, dim=0, eps=1e-3)
                getattr(self, f"u{i}").copy_(u)
                getattr(self, f"v{i}").copy_(v)
            total = total + u @ w @ v
        for norm in self.norms:
            total = total + norm.weight.abs().max()
        return total
