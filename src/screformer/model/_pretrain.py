"""Masked-expression pre-training on ``.h5ad`` corpora streamed from disk."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from ..data import H5adCellStream, open_sources
from ..gene2vec import read_gene2vec
from ..module import ReformerConfig
from ..pp import unique_panel
from ..train import PretrainingPlan
from ._screformer import (
    CHECKPOINT_NAME,
    build_module,
    checkpoint_payload,
    quiet_lightning,
    write_checkpoint,
)

logger = logging.getLogger("screformer")


class _CorpusData(pl.LightningDataModule):
    """Train and validation streams. The train stream learns the epoch from the trainer (with
    ``reload_dataloaders_every_n_epochs=1``), so a resumed run shuffles as an uninterrupted one."""

    def __init__(self, sources, config, num_workers: int, **stream_kwargs):
        super().__init__()
        self.sources, self.config, self.num_workers = sources, config, num_workers
        self.stream_kwargs = stream_kwargs

    def _loader(self, split: str):
        stream = H5adCellStream(
            self.sources, self.config, split=split, shuffle=split == "train", **self.stream_kwargs
        )
        stream.set_epoch(self.trainer.current_epoch if self.trainer else 0)
        return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=self.num_workers)

    def train_dataloader(self):
        return self._loader("train")

    def val_dataloader(self):
        return self._loader("validation")


def pretrain(
    files,
    out_dir: str | os.PathLike,
    *,
    gene_panel: list[str] | None = None,
    config: ReformerConfig | dict | None = None,
    gene_vectors: np.ndarray | str | os.PathLike | None = None,
    layer: str | None = None,
    gene_symbols: str | None = None,
    max_epochs: int = 10,
    max_time: str | None = None,
    batch_size: int = 16,
    accumulate_grad_batches: int = 1,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    warmup_fraction: float = 0.1,
    mask_fraction: float = 0.15,
    replace_fraction: float = 0.9,
    validation_size: float = 0.1,
    early_stopping_patience: int = 5,
    chunk_size: int = 1024,
    num_workers: int = 0,
    accelerator: str = "auto",
    devices: int | str = "auto",
    num_nodes: int = 1,
    strategy: str = "auto",
    resume: bool = False,
    seed: int = 0,
    callbacks: list | None = None,
    **config_kwargs,
) -> Path:
    """Pre-train a screformer encoder by masked-expression modelling on unlabelled cells.

    Cells are streamed from ``files`` a chunk of rows at a time (no file is loaded whole), each
    file aligned to ``gene_panel`` and normalised as :func:`screformer.pp.prepare` does. Per
    cell, ``mask_fraction`` of the expressed genes are masked (``replace_fraction`` of them get
    the mask token, the rest keep their bin) and the network learns their bins (cross-entropy).
    AdamW with a linear warm-up then cosine decay, gradient accumulation, early stopping on the
    validation loss of a held-out ``validation_size`` of cells, a checkpoint every epoch, and
    resume after an interruption. Lightning runs it on every device and machine it is given
    (``devices``, ``num_nodes``, ``strategy="ddp"``); each process streams its own chunks.

    Writes into ``out_dir``:

    ``model.pt``
        the pretrained encoder (weights of the best validation epoch), its panel and
        configuration: :meth:`SCReformer.from_pretrained` fine-tunes it on labelled cells;
    ``metrics.csv``
        per-epoch ``train_loss``, ``validation_loss``, ``validation_accuracy`` (masked bins
        right) and ``validation_baseline_accuracy`` (each cell's most common bin), merged
        over the runs of a resumed training (each run logs to ``logs/version_N/``);
    ``checkpoints/``
        Lightning checkpoints (``last.ckpt`` to resume, ``best.ckpt``).

    Parameters
    ----------
    files
        One ``.h5ad`` path or a list of them (raw counts or log-normalised values).
    out_dir
        Output folder.
    gene_panel
        The model's genes in token order; default: all genes of the files, in order of first
        appearance. With ``config`` or ``gene_vectors`` given, their sizes must agree.
    config
        A :class:`~screformer.module.ReformerConfig` or its dict (``n_genes`` is set from the
        panel); default ``ReformerConfig(**config_kwargs)``.
    gene_vectors
        Initial gene embeddings: an array (panel genes x dim) or a gene2vec text file (path or
        URL, or ``"published"`` for the authors' file), see
        :func:`screformer.gene2vec.read_gene2vec`.
    layer, gene_symbols
        Where the files keep the expression values and the gene names (``var`` column).
    max_epochs, max_time
        Stop after this many epochs, or this long (``"DD:HH:MM:SS"``, e.g. a cluster's wall time).
    batch_size, accumulate_grad_batches, lr, weight_decay, warmup_fraction
        Optimisation; the effective batch is ``batch_size * accumulate_grad_batches * processes``.
    mask_fraction, replace_fraction
        Share of expressed genes masked per cell (paper: 0.15) and share of those replaced by the
        mask token (paper: 0.9).
    validation_size, early_stopping_patience
        Held-out share of cells (paper: 10%); stop after this many epochs without a lower
        validation loss (paper: 5).
    chunk_size
        Rows read from disk at once, per process and worker.
    num_workers
        DataLoader worker processes per device.
    accelerator, devices, num_nodes, strategy
        Lightning's: e.g. ``devices=4, strategy="ddp"`` on one machine with 4 GPUs; run the same
        command on every machine with ``num_nodes`` (see the docs for a ``torchrun`` example).
    resume
        Continue from ``out_dir/checkpoints/last.ckpt`` when it exists.
    seed
        Seed of the weights, the split, the shuffles and the masks.
    callbacks
        Extra Lightning callbacks.
    **config_kwargs
        Fields of :class:`~screformer.module.ReformerConfig` when ``config`` is not given.

    Returns
    -------
    The path of ``model.pt``.

    Examples
    --------
    >>> path = screformer.pretrain(["atlas_part1.h5ad", "atlas_part2.h5ad"], "pretrained",
    ...                            max_epochs=20, devices=4, strategy="ddp")  # doctest: +SKIP
    >>> model = screformer.SCReformer.from_pretrained(path, adata)  # doctest: +SKIP
    """
    out_dir = Path(out_dir)
    files = [files] if isinstance(files, str | os.PathLike) else list(files)
    if gene_panel is None:
        gene_panel = unique_panel(_gene_names(files, gene_symbols))
    gene_panel = [str(g) for g in gene_panel]
    if isinstance(config, dict):
        config = ReformerConfig.from_dict({**config, "n_genes": len(gene_panel)})
    elif config is None:
        config = ReformerConfig(n_genes=len(gene_panel), **config_kwargs)
    elif config_kwargs:
        raise ValueError("Pass either config or configuration keywords, not both.")
    if config.n_genes != len(gene_panel):
        raise ValueError(f"config.n_genes={config.n_genes} differs from the panel size.")
    sources = open_sources(files, gene_panel, layer=layer, gene_symbols=gene_symbols)
    if isinstance(gene_vectors, str | os.PathLike):
        gene_vectors, _ = read_gene2vec(gene_vectors, gene_panel, dim=config.dim)

    pl.seed_everything(seed, verbose=False)
    module = build_module(config, n_classes=0, gene_vectors=gene_vectors, seed=seed)
    plan = PretrainingPlan(
        module,
        lr=lr,
        weight_decay=weight_decay,
        warmup_fraction=warmup_fraction,
        mask_fraction=mask_fraction,
        replace_fraction=replace_fraction,
        seed=seed,
    )
    data = _CorpusData(
        sources,
        config,
        num_workers,
        batch_size=batch_size,
        chunk_size=chunk_size,
        validation_size=validation_size,
        seed=seed,
    )
    checkpoints = out_dir / "checkpoints"
    best = ModelCheckpoint(
        checkpoints, filename="best", monitor="validation_loss", save_top_k=1, save_last=True
    )
    last = checkpoints / "last.ckpt"
    if resume and not last.exists():
        logger.warning("resume=True but %s does not exist: starting afresh.", last)
    n_cells = int(sum(s.n_obs for s in sources))
    logger.info(
        "Pre-training on %s cells of %d file(s) (%.0f%% held out for validation), up to %d epochs.",
        f"{n_cells:,}",
        len(sources),
        100 * validation_size,
        max_epochs,
    )
    started = time.perf_counter()
    with quiet_lightning():
        trainer = pl.Trainer(
            max_epochs=max_epochs,
            max_time=max_time,
            accelerator=accelerator,
            devices=devices,
            num_nodes=num_nodes,
            strategy=strategy,
            accumulate_grad_batches=accumulate_grad_batches,
            callbacks=[
                best,
                EarlyStopping("validation_loss", patience=early_stopping_patience),
                *(callbacks or []),
            ],
            logger=CSVLogger(out_dir, name="logs"),  # a new version_N folder per (resumed) run
            reload_dataloaders_every_n_epochs=1,
            enable_model_summary=False,
            deterministic=False,
        )
        ckpt_path = str(last) if resume and last.exists() else None
        trainer.fit(plan, datamodule=data, ckpt_path=ckpt_path)
    elapsed = time.perf_counter() - started

    target = out_dir / CHECKPOINT_NAME
    if trainer.is_global_zero:
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
        weights = {k.removeprefix("module."): v for k, v in state["state_dict"].items()}
        metrics = _read_metrics(sorted((out_dir / "logs").glob("version_*/metrics.csv")))
        metrics.to_csv(out_dir / "metrics.csv", index=False)
        payload = checkpoint_payload(
            kind="encoder",
            config=config,
            gene_panel=gene_panel,
            state_dict=weights,
            pretraining={
                "files": [s.path.name for s in sources],
                "n_cells": n_cells,
                "best_epoch": int(state["epoch"]),
                "epochs_run": int(trainer.current_epoch),
                "seconds_this_run": round(elapsed, 1),
                "mask_fraction": mask_fraction,
                "replace_fraction": replace_fraction,
                "validation_size": validation_size,
                "seed": seed,
                "history": metrics.to_dict(orient="list"),
            },
        )
        write_checkpoint(payload, target)
        logger.info("Pretrained encoder written to %s.", target)
    return target


def _gene_names(files, gene_symbols: str | None) -> list[str]:
    """Gene names of every file in order of first appearance (reads only ``var``)."""
    import h5py
    from anndata.io import read_elem

    names: list[str] = []
    for path in files:
        with h5py.File(path, "r") as handle:
            var = read_elem(handle["var"])
        names += list((var.index if gene_symbols is None else var[gene_symbols]).astype(str))
    return names


def _read_metrics(paths) -> pd.DataFrame:
    """One row per epoch from Lightning's CSV logs of successive runs (a resumed run's rows
    replace those of the same epochs); training and validation rows merged."""
    runs = [pd.read_csv(p) for p in sorted(paths, key=lambda p: int(p.parent.name[8:]))]
    table = pd.concat(runs, ignore_index=True).drop(columns="step", errors="ignore")
    return table.groupby("epoch", sort=True).last().reset_index()
