"""The LightningModule of the attribute classifier: multi-label BCE, two-stage transfer learning."""

from __future__ import annotations

import warnings

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MultilabelAccuracy

from facevae.recognition.augment import BatchAugment
from facevae.recognition.backbones import AttributeClassifier
from facevae.recognition.config import ClassifierConfig
from facevae.training.module import NonFiniteLossError, stretch_cosine


class ClassifierModule(L.LightningModule):
    """Wraps :class:`AttributeClassifier`.

    * Loss: BCE with logits over the chosen attributes, averaged; ``pos_weight`` per attribute when
      ``balance="pos-weight"``; plus ``aux_weight`` × the same loss on InceptionV3's auxiliary head.
    * Stages: for the first ``head_only_epochs`` epochs only the head learns (backbone frozen, its
      batch norm in inference mode); then everything is fine-tuned, the backbone at
      ``fine_tune_lr``. The stage follows ``current_epoch``, so a resumed run lands in the right one.
    * Augmentation runs in ``training_step`` on the device, on the float batch (see ``augment``).
    * A non-finite loss stops the run before the optimiser step (as in VAE training).
    * Validation logs ``val_loss`` (plain BCE, the checkpoint monitor) and ``val_acc`` (mean over
      attributes of the accuracy at 0.5).
    """

    def __init__(self, config: dict, pos_weight: list[float] | None = None):
        super().__init__()
        self.save_hyperparameters({"config": config, "pos_weight": pos_weight})  # plain types: weights_only loads
        self.cfg = ClassifierConfig.from_dict(config)
        cfg = self.cfg
        self.model = AttributeClassifier(cfg.backbone, len(cfg.attributes), input_size=cfg.image_size,
                                         pretrained=cfg.pretrained, width=cfg.width,
                                         init=not cfg.pretrained)
        self.augment = BatchAugment(cfg.augment)
        if pos_weight is not None:
            self.register_buffer("pos_weight", torch.tensor(pos_weight, dtype=torch.float32), persistent=False)
        else:
            self.pos_weight = None
        self.val_accuracy = MultilabelAccuracy(num_labels=len(cfg.attributes), average="macro")
        self._warned_tiny = False

    # --- stages -------------------------------------------------------------------------------------
    def _apply_stage(self) -> None:
        frozen = self.current_epoch < self.cfg.head_only_epochs
        if frozen != self.model.backbone_frozen:
            self.model.set_backbone_frozen(frozen)

    def on_fit_start(self) -> None:
        self._apply_stage()

    def on_train_epoch_start(self) -> None:
        self._apply_stage()

    # --- steps --------------------------------------------------------------------------------------
    def _loss(self, logits: torch.Tensor, y: torch.Tensor, weighted: bool = True) -> torch.Tensor:
        pos_weight = self.pos_weight if weighted else None
        return F.binary_cross_entropy_with_logits(logits.float(), y, pos_weight=pos_weight)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if len(x) < 2 and self.model.backbone == "inception_v3":
            # Batch norm on the auxiliary head's 1×1 map needs two images; skip a last batch of one.
            if not self._warned_tiny:
                warnings.warn("skipping a training batch of one image (InceptionV3's auxiliary head needs two)")
                self._warned_tiny = True
            return None
        x = self.augment(x)
        logits, aux = self.model(x, with_aux=True)
        loss = self._loss(logits, y)
        if aux is not None and self.cfg.aux_weight:
            loss = loss + self.cfg.aux_weight * self._loss(aux, y)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"non-finite training loss at epoch {self.current_epoch}, step {self.global_step}; "
                "try a lower --lr, --gradient-clip, or --precision 32-true"
            )
        with torch.no_grad():
            accuracy = ((logits > 0).float() == y).float().mean()
        self.log_dict({"train_loss": loss, "train_acc": accuracy}, on_step=True, on_epoch=True, batch_size=len(x))
        self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=False, logger=False)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.model(x)
        # Probabilities, not logits: torchmetrics only applies the sigmoid itself when some value lies outside [0, 1].
        self.val_accuracy.update(torch.sigmoid(logits.float()), y.int())
        self.log("val_loss", self._loss(logits, y, weighted=False), prog_bar=True, on_epoch=True, sync_dist=True,
                 batch_size=len(x))
        self.log("val_acc", self.val_accuracy, prog_bar=True, on_epoch=True, batch_size=len(x))

    # --- optimiser ------------------------------------------------------------------------------------
    def on_train_start(self):
        # resumed with more --epochs: the cosine restored from the checkpoint was planned for fewer steps
        stretch_cosine(self.trainer.lr_scheduler_configs[0].scheduler, self._planned_steps())

    def _planned_steps(self) -> int:
        return max(int(self.trainer.estimated_stepping_batches), 1)

    def configure_optimizers(self):
        cfg = self.cfg
        groups = [{"params": self.model.head_parameters(), "lr": cfg.lr, "name": "head"},
                  {"params": self.model.backbone_parameters(), "lr": cfg.fine_tune_lr, "name": "backbone"}]
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        total = self._planned_steps() if self._trainer is not None else 1000
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=cfg.lr * 0.01)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
