"""Run by tests/test_pretrain.py: pre-train on 2 CPU processes (DDP, gloo) and save, per
rank, the (epoch, cell) pairs it trained on and its final weights. Lightning starts rank 1 by
running this script again. Usage: python ddp_pretrain.py OUT_DIR CORPUS.h5ad..."""

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

import screformer


class RecordRank(pl.Callback):
    def __init__(self, folder):
        self.folder, self.cells = Path(folder), []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        epoch = torch.full_like(batch["cell"], trainer.current_epoch)
        self.cells.append(torch.stack([epoch, batch["cell"]], 1).cpu())

    def on_fit_end(self, trainer, pl_module):
        state = {k: v.detach().cpu() for k, v in pl_module.module.state_dict().items()}
        torch.save(
            {
                "cells": torch.cat(self.cells),
                "state_dict": state,
                "world_size": trainer.world_size,
            },
            self.folder / f"rank{trainer.global_rank}.pt",
        )


if __name__ == "__main__":
    folder, files = sys.argv[1], sys.argv[2:]
    screformer.pretrain(
        files,
        Path(folder) / "out",
        max_epochs=2,
        batch_size=4,
        chunk_size=8,
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        callbacks=[RecordRank(folder)],
        dim=8,
        depth=1,
        heads=2,
        dim_head=4,
        bucket_size=4,
        ff_mult=1,
        dropout=0.0,
    )
