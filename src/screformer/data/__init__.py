"""Tokenisation and loaders: arrays on the gene panel to torch tensors."""

from ._streaming import H5adCellStream, H5adSource, open_sources, read_rows, validation_mask
from ._tokens import (
    Augmentation,
    CellCollate,
    CellDataModule,
    LengthGroupedBatches,
    cell_loader,
    repeat_rare,
    stratified_split,
    tokenize,
)

__all__ = [
    "Augmentation",
    "CellCollate",
    "CellDataModule",
    "H5adCellStream",
    "H5adSource",
    "LengthGroupedBatches",
    "cell_loader",
    "open_sources",
    "read_rows",
    "repeat_rare",
    "stratified_split",
    "tokenize",
    "validation_mask",
]
