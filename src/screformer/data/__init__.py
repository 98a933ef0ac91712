"""Tokenisation and loaders: arrays on the gene panel to torch tensors."""

from ._tokens import (
    CellCollate,
    CellDataModule,
    LengthGroupedBatches,
    cell_loader,
    stratified_split,
    tokenize,
)

__all__ = [
    "CellCollate",
    "CellDataModule",
    "LengthGroupedBatches",
    "cell_loader",
    "stratified_split",
    "tokenize",
]
