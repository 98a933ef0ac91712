"""Arrays to tensors: tokens per cell, batches, and the Lightning data module."""

from __future__ import annotations

from dataclasses import dataclass, field

import lightning.pytorch as pl
import numpy as np
import torch
from scipy import sparse
from torch.utils.data import DataLoader, Sampler

from ..module import ReformerConfig
from ..pp import bin_matrix


def tokenize(X: sparse.csr_matrix, config: ReformerConfig) -> dict[str, torch.Tensor]:
    """Token tensors for the cells (rows) of ``X`` (log2 values on the model's panel).

    Returns ``gene_ids``, ``bins`` (``long``, ``(cells, tokens)``) and ``mask`` (``bool``, True on
    real tokens), and for a model with ``value_embedding`` also ``values`` (the tokens' log2
    values, ``float32``; 0 on padding). In ``all`` mode every panel gene is a token in panel
    order; in ``expressed`` mode a cell's non-zero genes are its tokens, padded to the longest
    cell of the batch with gene id ``n_genes`` and bin ``pad_bin``.

    Examples
    --------
    >>> from scipy import sparse
    >>> cfg = ReformerConfig(n_genes=4, token_mode="expressed", value_encoding="absolute")
    >>> t = tokenize(sparse.csr_matrix([[0, 2.5, 0, 7.0], [1.5, 0, 0, 0]]), cfg)
    >>> t["gene_ids"].tolist(), t["bins"].tolist(), "values" in t
    ([[1, 3], [0, 4]], [[2, 5], [1, 7]], False)
    >>> cfg = ReformerConfig(n_genes=4, value_embedding=True)
    >>> tokenize(sparse.csr_matrix([[0, 2.5, 0, 7.0], [1.5, 0, 0, 0]]), cfg)["values"].tolist()
    [[2.5, 7.0], [1.5, 0.0]]
    """
    n_cells = X.shape[0]
    if config.token_mode == "all":
        gene_ids = np.tile(np.arange(config.n_genes), (n_cells, 1))

        def on_tokens(data, pad):  # every panel gene is a token; zeros stay 0
            return sparse.csr_matrix((data, X.indices, X.indptr), shape=X.shape).toarray()

    else:
        lengths = np.diff(X.indptr)
        width = max(int(lengths.max(initial=0)), 1)
        rows = np.repeat(np.arange(n_cells), lengths)
        cols = np.arange(X.nnz) - np.repeat(X.indptr[:-1], lengths)

        def on_tokens(data, pad):  # a cell's stored values, left-aligned, padded with ``pad``
            out = np.full((n_cells, width), pad, dtype=data.dtype)
            out[rows, cols] = data
            return out

        gene_ids = on_tokens(X.indices.astype(np.int64), config.pad_gene)
    binned = bin_matrix(X, config.value_encoding, config.top_bin)
    tokens = {
        "gene_ids": torch.from_numpy(np.ascontiguousarray(gene_ids, dtype=np.int64)),
        "bins": torch.from_numpy(on_tokens(binned.data.astype(np.int64), config.pad_bin)),
        "mask": torch.from_numpy(gene_ids != config.pad_gene),
    }
    if config.value_embedding:
        tokens["values"] = torch.from_numpy(on_tokens(X.data.astype(np.float32), 0))
    return tokens


@dataclass(frozen=True)
class Augmentation:
    """Random changes to training cells, so that a model labels queries measured or processed
    differently from its training data.

    Attributes
    ----------
    gene_keep
        With probability ``p_genes`` a batch keeps only a random share of the panel's genes,
        drawn uniformly from this range: the others look unmeasured, as in a query that holds
        only some of the panel (highly variable genes, a targeted panel).
    p_genes
        Share of batches that lose genes.
    depth
        With probability ``p_depth`` a cell's counts are thinned binomially to a share of its
        depth drawn uniformly from this range, as in a shallower query.
    p_depth
        Share of cells thinned.
    max_depth
        A cell that holds more counts than this is thinned from this depth instead of its own
        (None: always from its own). Log values of a full-length study (Xin's and Wang's
        pancreas cells, whose smallest step implies millions of counts) or its read counts
        barely lose a gene when thinned to a fifth; from a deep droplet cell's depth they lose
        the weak genes a droplet query does not detect. Count data sets of 20,000 counts per
        cell or fewer are thinned as before.
    mark_unmeasured
        Tell the classifier which genes a batch lost, as prediction tells it which genes a query
        lacks (they enter its MLP as 0); else they look like genes at zero.
    variable_share
        Share of the batches that lose genes which keep the panel's most variable genes (the
        same share of the panel, from the head of ``gene_order``) instead of a random set: as a
        query cut to its own highly variable genes. 0 (the default) draws no extra random
        number, so the other batches are as without the option.
    gene_order
        The panel's genes from the most variable down (:func:`~screformer.pp.genes_by_dispersion`);
        :meth:`~screformer.SCReformer.train` fills it from its training cells.
    """

    gene_keep: tuple[float, float] = (0.05, 1.0)
    p_genes: float = 0.5
    depth: tuple[float, float] = (0.2, 1.0)
    p_depth: float = 0.5
    max_depth: float | None = 20_000
    mark_unmeasured: bool = False
    variable_share: float = 0.0
    gene_order: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __call__(self, X: sparse.csr_matrix, rng: np.random.Generator) -> sparse.csr_matrix:
        return self.apply(X, rng)[0]

    def apply(self, X: sparse.csr_matrix, rng: np.random.Generator):
        """The changed cells and the boolean mask of the panel genes dropped (None when the
        batch kept its genes)."""
        X = sparse.csr_matrix(X, copy=True)
        dropped = None
        if rng.random() < self.p_genes:
            keep = rng.random(X.shape[1]) < rng.uniform(*self.gene_keep)
            if self.variable_share and rng.random() < self.variable_share:
                if self.gene_order is None:
                    raise ValueError("variable_share needs gene_order (the panel's ranking).")
                n_kept = max(1, round(rng.uniform(*self.gene_keep) * X.shape[1]))
                keep = np.isin(np.arange(X.shape[1]), self.gene_order[:n_kept])
            X.data[~keep[X.indices]] = 0
            X.eliminate_zeros()
            dropped = ~keep
        thinned = rng.random(X.shape[0]) < self.p_depth
        if thinned.any():
            fraction = np.where(thinned, rng.uniform(*self.depth, size=X.shape[0]), 1.0)
            in_thinned_cell = np.repeat(thinned, np.diff(X.indptr))
            thinned_data = thin_depth(X, fraction, rng, self.max_depth)
            X.data = np.where(in_thinned_cell, thinned_data, X.data)
        X.eliminate_zeros()
        return X, dropped


def thin_depth(
    X: sparse.csr_matrix,
    fraction: np.ndarray,
    rng: np.random.Generator,
    max_depth: float | None = None,
) -> np.ndarray:
    """New ``X.data`` with each cell's counts thinned binomially to ``fraction`` of its depth,
    or of ``max_depth`` for a cell that holds more counts than that.

    ``X`` holds log2 values normalised per cell to 1e4. A cell's smallest non-zero value is
    taken as one count, which recovers UMI counts exactly and gives a count scale for
    log-normalised input too; thinned counts are normalised to the new depth.
    """
    lengths = np.diff(X.indptr)
    rows = np.repeat(np.arange(X.shape[0]), lengths)
    linear = np.exp2(X.data.astype(np.float64)) - 1
    unit = np.ones(X.shape[0])
    nonempty = lengths > 0
    if X.nnz:
        unit[nonempty] = np.minimum.reduceat(linear, X.indptr[:-1][nonempty])
    counts = np.rint(linear / unit[rows]).astype(np.int64)
    if max_depth is not None:
        depth = np.bincount(rows, counts, minlength=X.shape[0])
        fraction = fraction * np.minimum(1.0, max_depth / np.maximum(depth, 1))
    thinned = rng.binomial(counts, fraction[rows])
    return np.log2(1 + thinned * unit[rows] / fraction[rows]).astype(np.float32)


class CellCollate:
    """Turns a list of cell indices into a token batch (plus ``labels`` when given), applying
    ``augment`` (an :class:`Augmentation`) to the cells first when given."""

    def __init__(
        self,
        X: sparse.csr_matrix,
        config: ReformerConfig,
        labels=None,
        augment: Augmentation | None = None,
        seed: int = 0,
    ):
        self.X, self.config, self.augment = X, config, augment
        self.rng = np.random.default_rng(seed)
        self.labels = (
            None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.long)
        )

    def __call__(self, indices) -> dict[str, torch.Tensor]:
        indices = np.asarray(indices)
        X, dropped = self.X[indices], None
        if self.augment is not None:
            X, dropped = self.augment.apply(X, self.rng)
        batch = tokenize(X, self.config)
        if dropped is not None and self.augment.mark_unmeasured:
            batch["unmeasured"] = torch.from_numpy(dropped)
        if self.labels is not None:
            batch["labels"] = self.labels[indices]
        return batch


class LengthGroupedBatches(Sampler):
    """Batches of cells of similar token count, to waste little padding.

    With ``shuffle``, cells are shuffled, cut into windows of ``50 * batch_size``, sorted by
    length inside each window and batched, and the batches are shuffled (as Hugging Face's
    ``group_by_length``). Without it, all cells are sorted by length.
    """

    def __init__(self, indices, lengths, batch_size: int, shuffle: bool, seed: int = 0):
        self.indices = np.asarray(indices)
        self.lengths = np.asarray(lengths)
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, 0

    def batches(self) -> list[np.ndarray]:
        if not self.shuffle:
            order = self.indices[np.argsort(self.lengths[self.indices], kind="stable")]
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        rng = np.random.default_rng(self.seed + self.epoch)
        self.epoch += 1
        order = rng.permutation(self.indices)
        window = 50 * self.batch_size
        batches = []
        for start in range(0, len(order), window):
            chunk = order[start : start + window]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [
                chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)
            ]
        return [batches[i] for i in rng.permutation(len(batches))]

    def __iter__(self):
        yield from (b.tolist() for b in self.batches())

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)


def cell_loader(
    X: sparse.csr_matrix,
    config: ReformerConfig,
    indices=None,
    labels=None,
    *,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    augment: Augmentation | None = None,
) -> DataLoader:
    """A DataLoader of token batches over ``indices`` (default: all cells) of ``X``, with
    ``augment`` applied to each batch when given."""
    indices = np.arange(X.shape[0]) if indices is None else np.asarray(indices)
    sampler = LengthGroupedBatches(indices, np.diff(X.indptr), batch_size, shuffle, seed)
    return DataLoader(
        range(X.shape[0]),  # dataset[i] == i: the sampler picks cells, the collate reads them
        batch_sampler=sampler,
        collate_fn=CellCollate(X, config, labels, augment, seed),
        num_workers=num_workers,
    )


def stratified_split(labels, validation_size: float, seed: int = 0):
    """Train and validation indices with each class split in proportion.

    Every class keeps at least one training cell, so a class with a single cell is trained on
    and not validated.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_val = min(len(members) - 1, int(round(validation_size * len(members))))
        val.append(members[:n_val])
        train.append(members[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def repeat_rare(train, labels, min_cells: int | None, seed: int = 0) -> np.ndarray:
    """``train`` (positions into ``labels``) with the cells of every class that has fewer than
    ``min_cells`` of them drawn again, with replacement, until the class has ``min_cells`` rows.

    Each repeat is augmented afresh in training, so a type of three cells is seen as twenty
    different views of them per epoch rather than as three cells with a large loss weight.

    Examples
    --------
    >>> labels = np.array([0] * 6 + [1] * 2)
    >>> np.bincount(labels[repeat_rare(np.arange(8), labels, 4)])
    array([6, 4])
    """
    train = np.asarray(train)
    if not min_cells:
        return train
    rng = np.random.default_rng(seed)
    extra = [
        rng.choice(members, min_cells - len(members))
        for cls in np.unique(labels[train])
        if len(members := train[labels[train] == cls]) < min_cells
    ]
    return np.sort(np.concatenate([train, *extra]))


class CellDataModule(pl.LightningDataModule):
    """Train and validation loaders over labelled cells (the data splitter of scvi's runner)."""

    def __init__(
        self,
        X: sparse.csr_matrix,
        labels: np.ndarray,
        config: ReformerConfig,
        train_idx: np.ndarray,
        val_idx: np.ndarray,
        *,
        batch_size: int,
        seed: int = 0,
        num_workers: int = 0,
        augment: Augmentation | None = None,
    ):
        super().__init__()
        self.X, self.labels, self.config, self.augment = X, labels, config, augment
        self.train_idx, self.val_idx = train_idx, val_idx
        self.test_idx = np.array([], dtype=np.int64)
        self.n_train, self.n_val = len(train_idx), len(val_idx)
        self.loader_kwargs = dict(batch_size=batch_size, seed=seed, num_workers=num_workers)

    def _loader(self, indices, shuffle, augment=None):
        return cell_loader(
            self.X,
            self.config,
            indices,
            self.labels,
            shuffle=shuffle,
            augment=augment,
            **self.loader_kwargs,
        )

    def train_dataloader(self):
        return self._loader(self.train_idx, shuffle=True, augment=self.augment)

    def val_dataloader(self):
        return self._loader(self.val_idx, shuffle=False) if self.n_val else []
