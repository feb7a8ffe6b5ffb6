"""Data augmentation applied to whole batches on the training device, each image with its own draw.

The report's "heavy" augmentation is Keras' ``ImageDataGenerator(horizontal_flip=True,
rotation_range=30, zoom_range=0.2, width_shift_range=0.2, height_shift_range=0.2,
shear_range=0.2)``; here it is done on a batch tensor instead of image by image:

* **Geometry, one ``grid_sample`` per batch.** Each image gets its own random flip, rotation,
  shear, zoom and shift, composed into one 2×3 affine matrix; ``F.affine_grid`` turns the (B, 2, 3)
  matrices into sampling grids and ``F.grid_sample`` resamples the whole batch at once (bilinear,
  border pixels repeated where the image moves away from an edge: Keras' ``fill_mode="nearest"``).
  torchvision.transforms.v2's ``RandomAffine`` on a batch tensor would draw *one* set of
  parameters for the whole batch, and looping it over images costs one call per image (see
  ``bench/classify.py`` for the ratio), hence the batched form.
* **Colour, per-image factors.** Brightness, contrast and saturation as torchvision's
  ``ColorJitter`` defines them (blend with black, with the image's mean grey, with its greyscale
  version; grey by ``torchvision.transforms.v2.functional.rgb_to_grayscale``, which works on
  batches), in that fixed order, with one factor per image. Hue jitter is off in the presets:
  hair colour and skin tone are attributes defined by colour, and a hue shift would change them.

Conventions: rotation in degrees, ``zoom`` z draws one isotropic scale in [1 - z, 1 + z] (Keras
draws the two axes separately), ``shift`` is a fraction of the image side, ``shear`` is the shear
factor (tan of the shear angle; 0.2 ≈ 11°). Flips are exact pixel mirrors.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

AUGMENTATIONS = ("none", "light", "heavy")


@dataclass(frozen=True)
class AugmentSpec:
    flip: bool = False
    rotation: float = 0.0  # degrees, uniform in [-r, r]
    zoom: float = 0.0  # scale uniform in [1 - z, 1 + z]
    shift: float = 0.0  # fraction of the side, uniform in [-s, s] on each axis
    shear: float = 0.0  # shear factor uniform in [-h, h]
    brightness: float = 0.0  # factor uniform in [1 - b, 1 + b]
    contrast: float = 0.0
    saturation: float = 0.0

    @property
    def geometric(self) -> bool:
        return any((self.rotation, self.zoom, self.shift, self.shear))

    @property
    def colour(self) -> bool:
        return any((self.brightness, self.contrast, self.saturation))

    @property
    def active(self) -> bool:
        return self.flip or self.geometric or self.colour


PRESETS: dict[str, AugmentSpec] = {
    "none": AugmentSpec(),
    "light": AugmentSpec(flip=True, rotation=5.0, zoom=0.05, shift=0.05),
    "heavy": AugmentSpec(flip=True, rotation=30.0, zoom=0.2, shift=0.2, shear=0.2,
                         brightness=0.2, contrast=0.2, saturation=0.2),
}


def augment_spec(name: str) -> AugmentSpec:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown augmentation {name!r}; use one of {', '.join(AUGMENTATIONS)}") from None


def _uniform(n: int, half_width: float, generator, device) -> torch.Tensor:
    return (torch.rand(n, generator=generator, device=device) * 2 - 1) * half_width


def affine_from_params(rotation_deg: torch.Tensor, scale: torch.Tensor, shear: torch.Tensor, shift: torch.Tensor,
                       flip: torch.Tensor) -> torch.Tensor:
    """(n, 2, 3) matrices for ``F.affine_grid`` (output coordinates → input coordinates).

    Per image: rotation in degrees (positive: counter-clockwise, as in torchvision), isotropic ``scale``, ``shear`` factor, ``shift`` (n, 2) as a
    fraction of the side (x right, y down), ``flip`` ±1 (-1 mirrors left-right). The forward map of
    the picture is p_out = A·Flip·p_in + t with A = R(θ)·Shear(h)·(s·I), in the normalised [-1, 1]
    coordinates of a square image (where a fraction f of the side is 2f); the sampling grid needs
    its inverse, p_in = Flip·A⁻¹·(p_out - t).
    """
    theta = -torch.deg2rad(rotation_deg)  # y points down: a negative angle here turns counter-clockwise on screen
    cos, sin = torch.cos(theta), torch.sin(theta)
    a = torch.stack([torch.stack([cos, cos * shear - sin], -1), torch.stack([sin, sin * shear + cos], -1)], -2)
    a = a * scale[:, None, None]
    inv = torch.linalg.inv(a)
    inv = inv * torch.stack([flip, torch.ones_like(flip)], -1)[:, :, None]  # Flip⁻¹ = Flip, on the left
    offset = -(inv @ (2 * shift)[:, :, None])
    return torch.cat([inv, offset], 2)


def affine_matrices(n: int, spec: AugmentSpec, generator: torch.Generator | None = None,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """Random (n, 2, 3) matrices drawn from ``spec``, one per image (see :func:`affine_from_params`)."""
    device = torch.device(device)
    rotation = _uniform(n, spec.rotation, generator, device)
    scale = 1.0 + _uniform(n, spec.zoom, generator, device)
    shear = _uniform(n, spec.shear, generator, device)
    shift = torch.stack([_uniform(n, spec.shift, generator, device), _uniform(n, spec.shift, generator, device)], 1)
    if spec.flip:
        flip = torch.where(torch.rand(n, generator=generator, device=device) < 0.5, -1.0, 1.0)
    else:
        flip = torch.ones(n, device=device)
    return affine_from_params(rotation, scale, shear, shift, flip)


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's ``_blend``: factor·a + (1 - factor)·b, clamped to [0, 1]; one factor per image."""
    return (factor.view(-1, 1, 1, 1) * a + (1 - factor.view(-1, 1, 1, 1)) * b).clamp_(0.0, 1.0)


class BatchAugment(nn.Module):
    """Random augmentation of a float batch (B, 3, H, W) in [0, 1]; a different draw per image."""

    def __init__(self, spec: AugmentSpec | str = "none"):
        super().__init__()
        self.spec = augment_spec(spec) if isinstance(spec, str) else spec

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.spec).items() if v)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        spec = self.spec
        if not spec.active or x.shape[0] == 0:
            return x
        n, device = x.shape[0], x.device
        if spec.geometric:
            theta = affine_matrices(n, spec, generator, device).to(x.dtype)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        elif spec.flip:
            mask = torch.rand(n, generator=generator, device=device) < 0.5
            x = torch.where(mask[:, None, None, None], x.flip(-1), x)
        if spec.colour:
            from torchvision.transforms.v2.functional import rgb_to_grayscale

            if spec.brightness:
                x = _blend(x, torch.zeros_like(x), 1 + _uniform(n, spec.brightness, generator, device))
            if spec.contrast:
                mean = rgb_to_grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)
                x = _blend(x, mean, 1 + _uniform(n, spec.contrast, generator, device))
            if spec.saturation:
                x = _blend(x, rgb_to_grayscale(x), 1 + _uniform(n, spec.saturation, generator, device))
        return x


def torchvision_per_image(spec: AugmentSpec):
    """The same augmentation as a torchvision.transforms.v2 pipeline for one image at a time.

    The reference that the batched form replaces (used by ``bench/classify.py`` for its baseline and
    by the tests to compare output statistics): v2 draws one set of parameters per call.
    """
    import torchvision.transforms.v2 as T

    steps = []
    if spec.flip:
        steps.append(T.RandomHorizontalFlip())
    if spec.geometric:
        shear_deg = math.degrees(math.atan(spec.shear)) if spec.shear else None
        steps.append(T.RandomAffine(degrees=spec.rotation, translate=(spec.shift, spec.shift) if spec.shift else None,
                                    scale=(1 - spec.zoom, 1 + spec.zoom) if spec.zoom else None, shear=shear_deg,
                                    interpolation=T.InterpolationMode.BILINEAR))
    if spec.colour:
        steps.append(T.ColorJitter(brightness=spec.brightness or None, contrast=spec.contrast or None,
                                   saturation=spec.saturation or None))
    return T.Compose(steps)
