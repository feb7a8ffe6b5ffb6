"""Callbacks: figures every epoch and a metrics.json that is always up to date."""

from __future__ import annotations

import math
import time
from pathlib import Path

import lightning as L
import torch

from facevae.common.errors import RunError
from facevae.common.files import read_json, write_json_atomic


class EpochFigures(L.Callback):
    """Saves originals over reconstructions and prior samples after every validation epoch."""

    def __init__(self, out_dir: Path, n: int = 8):
        self.out_dir, self.n = Path(out_dir), n
        self._batch = None

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0:
            self._batch = (batch[0][: self.n].detach(), batch[1][: self.n].detach())

    def on_validation_epoch_end(self, trainer, pl_module):
        if self._batch is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        from facevae.common.grids import save_comparison_grid

        x, y = self._batch
        model = pl_module.model
        c = pl_module._condition(y)
        generator = torch.Generator(device="cpu").manual_seed(0)  # the same z every epoch: progress is visible
        with torch.no_grad():
            recon = model.reconstruct(x.float(), c)
            # no model.sampling() here: a hierarchical model's BatchNorm readjustment costs too much per epoch
            samples = model.decode(model.prior_codes(len(x), 1.0, generator), c).image()
        epoch = trainer.current_epoch
        save_comparison_grid(
            [_hwc(x), _hwc(recon), _hwc(samples)],
            ["original", "reconstruction", "sample" + (" (same condition)" if c is not None else "")],
            self.out_dir / f"epoch_{epoch:03d}.png",
            title=f"epoch {epoch}: validation faces",
        )


def _hwc(images: torch.Tensor):
    return (images.float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


class MetricsFile(L.Callback):
    """Keeps ``metrics.json`` current: per-epoch validation numbers, the best so far, test results.

    ``prefix``: read the logged numbers named with it (a member of a stack logs ``m3/val_elbo``), written without.
    """

    def __init__(self, path: Path, prefix: str = ""):
        self.path, self.prefix = Path(path), prefix
        self.data = read_metrics(self.path) if self.path.is_file() else {"epochs": []}
        self.data.setdefault("epochs", [])
        # training seconds so far, over every session of the run (a resumed one goes on from its last row)
        self._before = max((e.get("seconds", 0.0) for e in self.data["epochs"]), default=0.0)
        self._started = None

    def on_train_start(self, trainer, pl_module):
        self._started = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking and trainer.is_global_zero:
            self.record(trainer)

    def record(self, trainer) -> None:
        """This epoch's row: its step, the training seconds so far and the logged numbers."""
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        if self._started is not None:
            row["seconds"] = round(self._before + time.perf_counter() - self._started, 1)
        named = tuple(self.prefix + stage for stage in ("val_", "train_"))
        row |= {k.removeprefix(self.prefix): _number(v) for k, v in trainer.callback_metrics.items() if k.startswith(named)}
        self.data["epochs"] = [e for e in self.data["epochs"] if e["epoch"] != row["epoch"]] + [row]
        write_json_atomic(self.path, self.data)

    def update(self, **entries) -> None:
        self.data.update(entries)
        write_json_atomic(self.path, self.data)


def read_metrics(path: Path) -> dict:
    """A run's metrics.json; a RunError naming it, with the way to write it again, when it is damaged."""
    run_dir = Path(path).parent
    return read_json(path, RunError, fix=f"delete it, and `facevae train --resume {run_dir}` writes it again (the "
                                         "curves of the epochs before stay in logs/csv)")


def _number(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


class BatchRecorder(L.Callback):
    """Records, per rank, a fingerprint of every training image and the final weights' checksum.

    A debugging aid for distributed runs (FACEVAE_RECORD_BATCHES=DIR): it shows which images each
    rank trained on, so disjoint shards and consistent weights can be checked from outside.
    """

    def __init__(self, out_dir: Path):
        self.out_dir, self.seen = Path(out_dir), []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        x = batch[0].flatten(1).double()
        weights = torch.arange(1, x.shape[1] + 1, dtype=torch.float64, device=x.device)
        self.seen += [round(v, 2) for v in (x @ weights).tolist()]  # position-weighted pixel sums

    def on_train_end(self, trainer, pl_module):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        checksum = sum(float(p.double().sum()) for p in pl_module.model.parameters())
        write_json_atomic(self.out_dir / f"rank{trainer.global_rank}.json",
                          {"rank": trainer.global_rank, "world_size": trainer.world_size,
                           "images": self.seen, "weights_checksum": checksum})


class RandomState(L.Callback):
    """Keeps torch's random state (CPU and CUDA) in every checkpoint and restores it on resume.

    The reparameterisation noise and the flips draw from it: without it a resumed run would draw
    other noise than the run it continues, and end with other weights.
    """

    def state_dict(self) -> dict:
        state = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        torch.set_rng_state(state["cpu"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
