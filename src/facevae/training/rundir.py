"""A finished run, opened for use: the model, its config, its data, and its parts encoded."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facevae.common.errors import DatasetError, RunError
from facevae.common.files import make_dir
from facevae.data.datamodule import PackedDataModule
from facevae.models.base import VAEBase
from facevae.models.latents import ALL_UNITS, LatentGroup, Latents, cat_latents, find_group
from facevae.training.config import RunConfig
from facevae.training.run import load

# What to do with a run the analysis cannot write into: a copy is a run of its own, opened where it is.
READ_ONLY_FIX = "copy the run directory to a writable place and use the copy"


@dataclass
class Run:
    root: Path
    config: RunConfig
    model: VAEBase
    data: PackedDataModule

    @property
    def analysis_dir(self) -> Path:
        return make_dir(self.root / "analysis", fix=READ_ONLY_FIX)

    @property
    def condition_names(self) -> list[str]:
        return list(self.config.model.condition_names)

    @property
    def conditional(self) -> bool:
        return bool(self.model.num_conditions)

    def condition_of(self, attributes: torch.Tensor) -> torch.Tensor | None:
        """The model's ``c`` from rows of the data's full attribute matrix (float, data's column order)."""
        if not self.conditional:
            return None
        return attributes[:, self.config.model.condition_index(self.data.attribute_names)]

    def test_batch(self, n: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """n test images (float, [0,1]), their full attribute rows, and their dataset row indices."""
        rows = self.data.indices("test")[offset : offset + n]
        if len(rows) == 0:
            raise DatasetError(f"{self.root}: the test split has no images")
        x, y = self.data.dataset("test").__getitems__(np.arange(offset, offset + len(rows)))
        x, y = self.data.prepare_batch((x, y), train=False)
        return x, y, rows

    def group(self, name: str | None = None) -> LatentGroup:
        """The latent group analyses look at: ``name``, or by default the model's first (top) group; 'all' is every
        unit as one group (a flat model's one group)."""
        groups = self.model.latent_groups
        found = find_group(groups, name or groups[0].name)
        if found is None:  # 'all'
            return groups[0] if len(groups) == 1 else LatentGroup(ALL_UNITS, (self.model.latent_dim,), 0)
        return found

    @torch.no_grad()
    def encode(self, part: str, batch_size: int = 256, limit: int | None = None, seed: int = 0,
               through: str | None = None) -> "EncodedPart":
        """Every image of a split's ``part`` (or a seeded subset of ``limit``) through the encoder, in row order;
        ``through``: only the latent groups from the top down to that one."""
        ds = self.data.dataset(part)
        positions = np.arange(len(ds))
        if limit is not None and len(ds) > limit:
            positions = np.sort(np.random.default_rng(seed).choice(len(ds), limit, replace=False))
        self.model.eval()
        parts, attributes = [], []
        for lo in range(0, len(positions), batch_size):
            x, y = self.data.prepare_batch(ds.__getitems__(positions[lo:lo + batch_size]), train=False)
            parts.append(self.model.encode(x, self.condition_of(y), through=through))
            attributes.append(y)
        if not parts:
            zeros = torch.zeros(0, self.model.latent_dim)
            latents = Latents(self.model.latent_groups, zeros, zeros)
            return EncodedPart(latents, np.zeros((0, self.data.num_attributes), np.uint8), None)
        factors = self.data.part_factors(part)
        return EncodedPart(cat_latents(parts), (torch.cat(attributes).numpy() > 0.5).astype(np.uint8),
                           None if factors is None else factors[positions])


@dataclass
class EncodedPart:
    """A part of the data through the encoder: its latents and, row for row, its labels."""

    latents: Latents
    attributes: np.ndarray  # (n, A) 0/1, the data's attribute columns
    factors: np.ndarray | None  # (n, F) ground-truth factors, where the data has them

    def __len__(self) -> int:
        return len(self.attributes)

    def codes(self, group: str | None = None) -> np.ndarray:
        """Posterior means (n, units) of ``group`` (default every unit), float32."""
        return self.latents.codes(group).numpy()

    def kl(self, group: str | None = None) -> np.ndarray:
        """Mean KL to the model's prior over the images, per unit (nats), float64."""
        return self.latents.kl_per_unit(group).double().mean(0).numpy()


def open_run(run_dir: str | os.PathLike) -> Run:
    """The run at ``run_dir`` with its best model; a one-line error if it is not finished."""
    root = Path(run_dir)
    if not (root / "config.yaml").is_file():
        raise RunError(f"{root}: not a run directory (no config.yaml); train one with `facevae train`")
    config = RunConfig.load(root / "config.yaml")
    config.check_data_present(root)
    model = load(root)  # raises a clear error when there is no finished model
    data = PackedDataModule(config.train.data, split=config.train.split, batch_size=config.train.batch_size,
                            image_size=config.model.image_size, seed=config.train.seed)
    return Run(root, config, model, data)
