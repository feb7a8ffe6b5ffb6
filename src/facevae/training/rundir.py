"""A finished run, opened for analysis: the model, its config, and its data's test split."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facevae.common.errors import DatasetError, RunError
from facevae.data.datamodule import PackedDataModule
from facevae.models.base import VAEBase
from facevae.training.config import RunConfig
from facevae.training.run import load


@dataclass
class Run:
    root: Path
    config: RunConfig
    model: VAEBase
    data: PackedDataModule

    @property
    def analysis_dir(self) -> Path:
        path = self.root / "analysis"
        path.mkdir(exist_ok=True)
        return path

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

    @torch.no_grad()
    def encode_test(self, batch_size: int = 256) -> dict[str, np.ndarray]:
        """Posterior means and variances of the whole test split, with attributes and factors."""
        mus, logvars, attrs = [], [], []
        for x, y in self.data.batches("test", batch_size=batch_size):
            posterior = self.model.encode(x, self.condition_of(y))
            mus.append(posterior.mean)
            logvars.append(posterior.variance.log())
            attrs.append(y)
        out = {"mu": torch.cat(mus).numpy(), "logvar": torch.cat(logvars).numpy(),
               "attributes": torch.cat(attrs).numpy().astype(np.uint8)}
        factors = self.data.test_factors()
        if factors is not None:
            out["factors"] = factors
        return out


def open_run(run_dir: str | os.PathLike) -> Run:
    """The run at ``run_dir`` with its best model; a one-line error if it is not finished."""
    root = Path(run_dir)
    if not (root / "config.yaml").is_file():
        raise RunError(f"{root}: not a run directory (no config.yaml); train one with `facevae train`")
    config = RunConfig.load(root / "config.yaml")
    model = load(root)  # raises a clear error when there is no finished model
    data = PackedDataModule(config.train.data, split=config.train.split, batch_size=config.train.batch_size,
                            image_size=config.model.image_size, seed=config.train.seed)
    return Run(root, config, model, data)
