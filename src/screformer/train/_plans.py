"""Lightning training plans."""

from __future__ import annotations

import copy
import math

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from ..module import SCReformerModule


def warmup_cosine(total_steps: int, warmup_fraction: float):
    """LR multiplier: linear warm-up over ``warmup_fraction`` of the steps, then cosine decay."""
    total_steps = max(int(total_steps), 1)
    warmup = max(1, int(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


class ClassifierTrainingPlan(pl.LightningModule):
    """Fine-tuning: cross-entropy on cell types, AdamW, warm-up then cosine decay.

    Parameters
    ----------
    module
        The network.
    lr, weight_decay
        AdamW settings.
    warmup_fraction
        Share of the optimisation steps spent warming the learning rate up.
    class_weights
        Per-class weights of the loss (``None`` for plain cross-entropy).
    """

    def __init__(
        self,
        module: SCReformerModule,
        *,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_fraction: float = 0.1,
        class_weights: torch.Tensor | None = None,
    ):
        super().__init__()
        self.module = module
        self.lr, self.weight_decay, self.warmup_fraction = lr, weight_decay, warmup_fraction
        self.register_buffer("class_weights", class_weights, persistent=False)

    def _step(self, batch):
        logits = self.module(batch["gene_ids"], batch["bins"], batch["mask"])
        loss = F.cross_entropy(logits, batch["labels"], weight=self.class_weights)
        accuracy = (logits.argmax(-1) == batch["labels"]).float().mean()
        return loss, accuracy

    def training_step(self, batch, batch_idx):
        loss, _ = self._step(batch)
        n = len(batch["labels"])
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, accuracy = self._step(batch)
        n = len(batch["labels"])
        self.log("validation_loss", loss, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("validation_accuracy", accuracy, on_epoch=True, batch_size=n)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(
            self.module.parameters(), lr=self.lr, weight_decay=self.weight_decay
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            warmup_cosine(self.trainer.estimated_stepping_batches, self.warmup_fraction),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class RestoreBestWeights(pl.Callback):
    """Keeps the weights of the best validation epoch in memory and restores them at the end, so
    early stopping returns the best model rather than the last one."""

    def __init__(self, monitor: str = "validation_loss"):
        self.monitor = monitor
        self.best_score = math.inf
        self.best_state = None
        self.best_epoch = None

    def on_validation_end(self, trainer, pl_module):
        score = trainer.callback_metrics.get(self.monitor)
        if score is None or trainer.sanity_checking:
            return
        if float(score) < self.best_score:
            self.best_score = float(score)
            self.best_epoch = trainer.current_epoch
            self.best_state = copy.deepcopy(
                {k: v.detach().cpu() for k, v in pl_module.state_dict().items()}
            )

    def on_fit_end(self, trainer, pl_module):
        if self.best_state is not None:
            pl_module.load_state_dict(self.best_state)
