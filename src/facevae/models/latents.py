"""Latents as objects: what a model's encoder says about a batch, the one view every consumer uses.

A model's latent units come in named groups (a flat VAE has one, ``z``; a hierarchical one has a
group per scale and depth). :meth:`VAEBase.encode` returns :class:`Latents`: the posterior of every
unit *in the coordinates of the model's prior*, standardised so that each unit's prior, given the
units above it, is N(0, 1):

    u = (z − μ_prior) / σ_prior

For a flat VAE the prior is N(0, I) and u = z. For a hierarchical VAE the prior of a lower group
is predicted from the groups above it; in these coordinates it is still N(0, 1), KL(q ‖ p) per unit
is the standard formula (KL is invariant under the shared affine map), traversal ranges are prior
standard deviations, prior samples at temperature T are u ~ N(0, T²), and ``model.decode(u, c)``
maps edited codes back through the model (top-down, re-predicting each lower prior). Consumers
never touch a model's layers or assume a particular prior.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ALL_UNITS = "all"


@dataclass(frozen=True)
class LatentGroup:
    """A named block of latent units: ``shape`` as the model holds it, ``offset`` in the flat view."""

    name: str
    shape: tuple[int, ...]
    offset: int

    @property
    def size(self) -> int:
        return int(torch.Size(self.shape).numel())

    @property
    def units(self) -> slice:
        return slice(self.offset, self.offset + self.size)


def flat_groups(shapes: dict[str, tuple[int, ...]]) -> tuple[LatentGroup, ...]:
    """Groups laid out one after the other in the flat view, in the order given (top first)."""
    groups, offset = [], 0
    for name, shape in shapes.items():
        groups.append(LatentGroup(name, tuple(int(s) for s in shape), offset))
        offset += groups[-1].size
    return tuple(groups)


def find_group(groups: tuple[LatentGroup, ...], name: str | None) -> LatentGroup | None:
    """The group called ``name``; None for all units (``None`` or "all"); a ValueError naming the groups."""
    if name is None or name == ALL_UNITS:
        return None
    for group in groups:
        if group.name == name:
            return group
    raise ValueError(f"no latent group {name!r}; this model has {', '.join(g.name for g in groups)} (or 'all')")


@dataclass
class Latents:
    """The posterior of a batch in standardised prior coordinates (see the module docstring).

    ``mean`` and ``std`` are (B, units), float32, in the flat view: the groups one after the other.
    """

    groups: tuple[LatentGroup, ...]
    mean: torch.Tensor
    std: torch.Tensor

    def units(self, group: str | None = None) -> slice:
        found = find_group(self.groups, group)
        return slice(0, self.mean.shape[1]) if found is None else found.units

    def codes(self, group: str | None = None) -> torch.Tensor:
        """Posterior means, (B, units) of ``group`` (default: every unit)."""
        return self.mean[:, self.units(group)]

    def kl_per_unit(self, group: str | None = None) -> torch.Tensor:
        """KL(q(u|x) ‖ p(u)) per image and unit, nats, (B, units): the model's own prior, exactly."""
        mean, std = self.mean[:, self.units(group)].double(), self.std[:, self.units(group)].double()
        return (0.5 * (mean**2 + std**2 - 1.0) - torch.log(std)).clamp(min=0.0).float()

    def unit_groups(self) -> list[str]:
        """The group name of every unit of the flat view."""
        return [g.name for g in self.groups for _ in range(g.size)]


def cat_latents(parts: list[Latents]) -> Latents:
    """Batches of one model's latents, joined along the batch."""
    return Latents(parts[0].groups, torch.cat([p.mean for p in parts]), torch.cat([p.std for p in parts]))
