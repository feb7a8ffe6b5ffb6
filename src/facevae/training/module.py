"""The LightningModule around a model of the VAE family."""

from __future__ import annotations

import math

import lightning as L
import torch

from facevae.models import build_model
from facevae.training.config import RunConfig
from facevae.training.update_guard import UpdateGuard, gradient_norm


class NonFiniteLossError(ArithmeticError):
    """Training produced NaN/inf; the run stops before the bad step reaches the weights."""


class VAEModule(L.LightningModule):
    def __init__(self, config: dict):
        super().__init__()
        self.save_hyperparameters({"config": config})  # plain dicts only: checkpoints load with weights_only
        self.run_config = RunConfig.from_dict(config)
        self.model = build_model(self.run_config.model)
        if self.run_config.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # Compiling the bound objective, not the module: torch.compile(module) only wraps forward(), so
        # model.loss would stay eager, and the wrapper would rename every checkpoint key (_orig_mod.).
        self.objective = torch.compile(self.model.loss) if self.run_config.train.compile else self.model.loss
        self.condition_columns: list[int] | None = None  # set by train() from the data's attributes
        skip = self.run_config.train.skip_updates
        self.guard = UpdateGuard(skip) if skip else None

    def _condition(self, y: torch.Tensor) -> torch.Tensor | None:
        if not self.model.num_conditions:
            return None
        return y if self.condition_columns is None else y[:, self.condition_columns]

    def _inputs(self, batch):
        x, y = batch
        if self.run_config.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self._condition(y)

    def _step(self, batch, stage: str) -> torch.Tensor:
        """The one step of training ("train") and validation ("val"): the objective, checked and logged."""
        x, c = self._inputs(batch)
        training = stage == "train"
        kl_weight = self.run_config.model.kl_weight(self.global_step) if training else 1.0
        terms = self.objective(x, c, kl_weight=kl_weight, step=self.global_step if training else None)
        if training and not torch.isfinite(terms["loss"]):
            if self.guard is not None:
                self.guard.accept(float("nan"))  # counted as a skipped update
                if not self.guard.broken:
                    return None  # Lightning skips this batch's backward pass and update
            # Stop before the optimiser step writes NaN into the weights and a checkpoint keeps them.
            raise NonFiniteLossError(self._broken(terms))
        headline = "loss" if training else "elbo"  # training minimises the loss; validation reports the bound
        self.log_dict({f"{stage}_{headline}": terms[headline], f"{stage}_recon": terms["recon"],
                       f"{stage}_kl": terms["kl"], f"{stage}_bpd": terms["bits_per_dim"]},
                      prog_bar=not training, on_step=training, on_epoch=True, sync_dist=not training,
                      batch_size=len(x))
        if training:
            self.log("loss", terms["loss"], prog_bar=True, on_step=True, on_epoch=False, logger=False)
        return terms["loss"]

    def _broken(self, terms: dict | None = None) -> str:
        where = f"at epoch {self.current_epoch}, step {self.global_step}"
        if terms is None:
            return (f"{self.guard.in_a_row} updates in a row had a non-finite or exploding gradient {where}; "
                    "try a lower --lr or --gradient-clip")
        return (f"non-finite training loss {where} (recon {terms['recon'].item():.4g}, kl {terms['kl'].item():.4g}); "
                "try a lower --lr, --gradient-clip, or --precision 32-true")

    def on_before_optimizer_step(self, optimizer):
        if self.guard is None:
            return
        if not self.guard.accept(gradient_norm(self.parameters())):
            if self.guard.broken:
                raise NonFiniteLossError(self._broken())
            for p in self.parameters():  # no gradient, no update: weights and Adam's moments stay as they were
                p.grad = None
        self.log("skipped_updates", float(self.guard.skipped), on_step=True, on_epoch=False, reduce_fx="max")

    def on_save_checkpoint(self, checkpoint):
        if self.guard is not None:
            checkpoint["update_guard"] = self.guard.state_dict()

    def on_load_checkpoint(self, checkpoint):
        if self.guard is not None and "update_guard" in checkpoint:
            self.guard.load_state_dict(checkpoint["update_guard"])

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def configure_optimizers(self):
        return optimizers_for(self, self.run_config.train)

    def on_train_start(self):
        stretch_restored_schedule(self, self.run_config.train)


def optimizers_for(module: L.LightningModule, t) -> dict | torch.optim.Optimizer:
    """AdamW over ``module``'s parameters with the learning-rate schedule of TrainConfig ``t``."""
    optimizer = torch.optim.AdamW(module.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    if t.lr_schedule == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=2)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_elbo"}}
    if t.lr_warmup_steps:
        total = max(int(module.trainer.estimated_stepping_batches), t.lr_warmup_steps + 1)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": _warmup_schedule(optimizer, t, total),
                                                         "interval": "step"}}
    if t.lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(t.epochs, 1))
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
    return optimizer


def stretch_restored_schedule(module: L.LightningModule, t) -> None:
    """A run resumed with more --epochs gets its cosine schedule back from the checkpoint, planned for the old
    count: periodic, its rate would climb back to --lr from there. It is stretched to the new count instead."""
    configs = module.trainer.lr_scheduler_configs
    if t.lr_schedule != "cosine" or not configs:
        return
    scheduler = configs[0].scheduler
    if not t.lr_warmup_steps:
        stretch_cosine(scheduler, max(t.epochs, 1))
        return
    total = max(int(module.trainer.estimated_stepping_batches), t.lr_warmup_steps + 1)
    cosine = scheduler._schedulers[1]  # SequentialLR's: torch has no public accessor
    if module.trainer.global_step < t.lr_warmup_steps:  # still warming up: the cosine has not begun
        cosine.T_max = total - t.lr_warmup_steps
    else:
        stretch_cosine(cosine, total - t.lr_warmup_steps)


def stretch_cosine(scheduler, t_max: int) -> None:
    """Give a cosine schedule a new length, at the rate the closed form gives where the run is on it (the
    scheduler's own update is relative to the last rate, which the old schedule may have brought to zero)."""
    if scheduler.T_max == t_max:
        return
    scheduler.T_max = t_max
    progress = min(scheduler.last_epoch, t_max) / t_max
    for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = scheduler.eta_min + (base - scheduler.eta_min) * (1 + math.cos(math.pi * progress)) / 2
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]


def _warmup_schedule(optimizer, t, total: int):
    """A linear warm-up over the first steps, then the cosine (or constant) rate, stepped per batch."""
    sched = torch.optim.lr_scheduler
    warmup = sched.LinearLR(optimizer, start_factor=1.0 / t.lr_warmup_steps, total_iters=t.lr_warmup_steps)
    after = (sched.CosineAnnealingLR(optimizer, T_max=total - t.lr_warmup_steps) if t.lr_schedule == "cosine"
             else sched.ConstantLR(optimizer, factor=1.0, total_iters=0))
    return sched.SequentialLR(optimizer, [warmup, after], milestones=[t.lr_warmup_steps])
