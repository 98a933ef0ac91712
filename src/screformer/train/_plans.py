"""Lightning training plans."""

from __future__ import annotations

import copy
import math

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F

from ..module import ReformerConfig, SCReformerModule


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


class _AdamWCosinePlan(pl.LightningModule):
    """AdamW with a linear warm-up then cosine decay of the learning rate, stepped per update."""

    def __init__(self, module: SCReformerModule, lr, weight_decay, warmup_fraction):
        super().__init__()
        self.module = module
        self.lr, self.weight_decay, self.warmup_fraction = lr, weight_decay, warmup_fraction

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(
            self.module.parameters(), lr=self.lr, weight_decay=self.weight_decay
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            warmup_cosine(self.trainer.estimated_stepping_batches, self.warmup_fraction),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class ClassifierTrainingPlan(_AdamWCosinePlan):
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
        super().__init__(module, lr, weight_decay, warmup_fraction)
        self.register_buffer("class_weights", class_weights, persistent=False)

    def _step(self, batch):
        inputs = batch["gene_ids"], batch["bins"], batch["mask"], batch.get("values")
        logits = self.module(*inputs, unmeasured=batch.get("unmeasured"))
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


def expressed_tokens(bins: torch.Tensor, mask: torch.Tensor, config: ReformerConfig):
    """Tokens that may be masked: real tokens in ``expressed`` mode, bin > 0 in ``all`` mode."""
    return mask & (bins > 0) if config.token_mode == "all" else mask


def mask_bins(
    bins: torch.Tensor,
    mask: torch.Tensor,
    config: ReformerConfig,
    mask_fraction: float = 0.15,
    replace_fraction: float = 0.9,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask a share of each cell's expressed genes for masked-expression modelling.

    Per cell, ``round(mask_fraction * n)`` (at least 1) of its ``n`` expressed tokens are picked
    at random; ``replace_fraction`` of those get the mask bin, the rest keep their bin (as
    scBERT). Expressed tokens are the real tokens in the ``expressed`` token mode and the tokens
    of bin > 0 in the ``all`` mode (scBERT never masks bin 0).

    Returns
    -------
    ``(inputs, targets)``: the bins with masks in, and the true bins of the picked tokens with
    ``-100`` (ignored by cross-entropy) elsewhere.

    Examples
    --------
    >>> cfg = ReformerConfig(n_genes=10, token_mode="all")
    >>> bins = torch.tensor([[0, 3, 1, 0, 2, 5, 0, 1, 4, 2]])
    >>> inputs, targets = mask_bins(bins, torch.ones_like(bins, dtype=torch.bool), cfg, 0.3, 1.0)
    >>> int((targets >= 0).sum()), bool((inputs[targets >= 0] == cfg.mask_bin).all())
    (2, True)
    """
    candidates = expressed_tokens(bins, mask, config)
    shape = bins.shape
    scores = torch.rand(shape, generator=generator).to(bins.device)
    scores = scores.masked_fill(~candidates, 2.0)  # never picked before a candidate
    n_candidates = candidates.sum(1)
    k = torch.minimum((n_candidates * mask_fraction).round().clamp(min=1).long(), n_candidates)
    ranks = scores.argsort(1).argsort(1)
    picked = ranks < k[:, None]
    replace = picked & (torch.rand(shape, generator=generator).to(bins.device) < replace_fraction)
    return bins.masked_fill(replace, config.mask_bin), bins.masked_fill(~picked, -100)


class PretrainingPlan(_AdamWCosinePlan):
    """Masked-expression modelling: cross-entropy on the true bins of masked expressed genes.

    Logs ``train_loss``, ``validation_loss``, ``validation_accuracy`` (masked bins predicted
    right) and ``validation_baseline_accuracy``: the trivial guess of each cell's most common
    bin among its unmasked expressed genes. Validation masks come from a fixed seed, so
    validation losses of different epochs compare the same task. Torch's random state is reset
    from ``seed``, the epoch, the batch and the rank before each training batch, so a run
    resumed from a checkpoint repeats the uninterrupted run.
    """

    def __init__(
        self,
        module: SCReformerModule,
        *,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_fraction: float = 0.1,
        mask_fraction: float = 0.15,
        replace_fraction: float = 0.9,
        seed: int = 0,
    ):
        super().__init__(module, lr, weight_decay, warmup_fraction)
        if not 0 < mask_fraction < 1 or not 0 <= replace_fraction <= 1:
            raise ValueError("mask_fraction must be in (0, 1) and replace_fraction in [0, 1].")
        self.mask_fraction, self.replace_fraction, self.seed = mask_fraction, replace_fraction, seed

    def _step(self, batch, generator=None):
        inputs, targets = mask_bins(
            batch["bins"],
            batch["mask"],
            self.module.config,
            self.mask_fraction,
            self.replace_fraction,
            generator,
        )
        logits = self.module.mlm_logits(
            batch["gene_ids"], inputs, batch["mask"], batch.get("values")
        )
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten()), logits, targets

    def on_train_batch_start(self, batch, batch_idx):
        # Masks and LSH rotations drawn from (seed, epoch, batch, rank) alone, so that a resumed
        # run, whose data loaders consume torch's random state differently, repeats this batch.
        state = np.random.SeedSequence([self.seed, self.current_epoch, batch_idx, self.global_rank])
        torch.manual_seed(int(state.generate_state(1)[0]))

    def training_step(self, batch, batch_idx):
        loss, _, _ = self._step(batch)
        n = len(batch["bins"])
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        return loss

    def on_validation_epoch_start(self):
        self._validation_generator = torch.Generator().manual_seed(self.seed + self.global_rank)

    def validation_step(self, batch, batch_idx):
        loss, logits, targets = self._step(batch, self._validation_generator)
        picked = targets >= 0
        n_picked = int(picked.sum())
        expressed = expressed_tokens(batch["bins"], batch["mask"], self.module.config)
        visible = batch["bins"].masked_fill(picked | ~expressed, -1)
        counts = F.one_hot(visible.clamp(min=0), logits.shape[-1]) * (visible >= 0)[..., None]
        mode = counts.sum(1).argmax(-1, keepdim=True).expand_as(targets)
        accuracy = (logits.argmax(-1) == targets)[picked].float().mean()
        baseline = (mode == targets)[picked].float().mean()
        kwargs = dict(on_epoch=True, batch_size=n_picked, sync_dist=True)
        self.log("validation_loss", loss, prog_bar=True, **kwargs)
        self.log("validation_accuracy", accuracy, **kwargs)
        self.log("validation_baseline_accuracy", baseline, **kwargs)


class AverageWeights(pl.Callback):
    """An exponential moving average of the weights, updated after every training batch
    (``average = decay * average + (1 - decay) * weights``), which validation uses and so the
    best epoch that :class:`RestoreBestWeights` keeps; without validation it is the model that
    training returns. Place it before :class:`RestoreBestWeights` in the callbacks.

    Lightning's ``EMAWeightAveraging`` puts the raw weights back before ``on_validation_end``,
    where the best epoch is recorded; here they come back at the next training batch.
    """

    def __init__(self, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"The average's decay must be between 0 and 1, got {decay}.")
        self.decay = decay
        self.live = self.average = None
        self.raw = None  # the trained weights while the average stands in for validation

    def on_fit_start(self, trainer, pl_module):
        # The state dict's tensors share the parameters' storage (load_state_dict copies into
        # it), so the ones averaged are looked up once, not at every batch.
        state = pl_module.state_dict()
        self.live = {k: v for k, v in state.items() if v.is_floating_point()}
        self.average = {k: v.detach().clone() for k, v in self.live.items()}
        self.raw = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.raw is not None:
            pl_module.load_state_dict(self.raw)
            self.raw = None

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for key, value in self.live.items():
            self.average[key].mul_(self.decay).add_(value, alpha=1 - self.decay)

    def on_validation_start(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        if self.raw is None:
            self.raw = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        pl_module.load_state_dict(self.raw | self.average)

    def on_fit_end(self, trainer, pl_module):
        pl_module.load_state_dict(pl_module.state_dict() | self.average)


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
