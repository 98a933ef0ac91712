"""Cells streamed from ``.h5ad`` files in chunks of rows, for corpora larger than memory."""

from __future__ import annotations

import itertools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from anndata.io import read_elem, sparse_dataset
from scipy import sparse
from torch.utils.data import IterableDataset, get_worker_info

from ..module import ReformerConfig
from ..pp import GeneAlignment, align_genes, detect_input, to_panel
from ..pp._expression import InputKind
from ._tokens import tokenize

logger = logging.getLogger("screformer")


def _matrix_element(handle: h5py.File, layer: str | None):
    """The h5py element of ``X`` or a layer, as a row-sliceable matrix (nothing read yet)."""
    if layer is None:
        element = handle["X"]
    elif "layers" in handle and layer in handle["layers"]:
        element = handle["layers"][layer]
    else:
        raise KeyError(f"{handle.filename} has no layer {layer!r}.")
    return sparse_dataset(element) if isinstance(element, h5py.Group) else element


def read_rows(matrix, start: int, stop: int):
    """Rows ``start:stop`` of a backed matrix: the only place a streamed file's values are read."""
    return matrix[start:stop]


@dataclass(frozen=True)
class H5adSource:
    """One ``.h5ad`` file of a corpus: its size, its genes on the panel, its kind of values."""

    path: Path
    n_obs: int
    alignment: GeneAlignment
    input_kind: InputKind
    layer: str | None


def open_sources(
    files,
    panel,
    *,
    layer: str | None = None,
    gene_symbols: str | None = None,
    min_genes: int = 10,
    sample_rows: int = 1000,
) -> list[H5adSource]:
    """Read the gene names and size of each file, and detect its kind of values on its first
    ``sample_rows`` cells; no expression matrix is loaded.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for one whose genes do
    not overlap the panel or whose values cannot be used (as :func:`screformer.pp.prepare`).
    """
    sources = []
    for path in [files] if isinstance(files, str | os.PathLike) else files:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist.")
        with h5py.File(path, "r") as handle:
            var = read_elem(handle["var"])
            names = var.index if gene_symbols is None else var[gene_symbols]
            try:
                alignment = align_genes(names.astype(str), panel, min_genes=min_genes)
                matrix = _matrix_element(handle, layer)
                kind = detect_input(read_rows(matrix, 0, min(sample_rows, matrix.shape[0])))
            except (ValueError, KeyError) as err:
                raise ValueError(f"{path}: {err}") from err
            sources.append(H5adSource(path, int(matrix.shape[0]), alignment, kind, layer))
        logger.info(
            "%s: %d cells, %d panel genes, %s values.",
            path.name,
            sources[-1].n_obs,
            alignment.n_found,
            kind,
        )
    if not sources:
        raise ValueError("No .h5ad files given.")
    return sources


def validation_mask(n_obs: int, validation_size: float, seed: int, file_index: int) -> np.ndarray:
    """Which cells of a file are held out; fixed by the seed and the file's place in the list."""
    return np.random.default_rng([seed, file_index]).random(n_obs) < validation_size


class H5adCellStream(IterableDataset):
    """Token batches streamed from ``.h5ad`` files, a chunk of rows at a time.

    Each epoch the chunks of all files are shuffled (the same order on every process), dealt
    round-robin to the processes (DDP ranks) and their DataLoader workers, and each chunk's cells
    are shuffled and batched. Every process yields the same number of batches
    (``len(self)``), which DDP needs; a process whose chunks hold fewer cells starts over on its
    own chunks, so processes never share cells. Only one chunk per worker is in memory.

    Each batch holds ``gene_ids``, ``bins`` and ``mask`` (see :func:`tokenize`) and ``cell``,
    the cell's index in the corpus (files concatenated).

    Parameters
    ----------
    sources
        From :func:`open_sources`.
    config
        Tokenisation settings.
    split
        ``"train"`` or ``"validation"``: which side of :func:`validation_mask` to stream.
    batch_size, chunk_size
        Cells per batch; rows read from disk at once.
    validation_size, seed
        The held-out share of cells and the seed of the split and of the shuffles.
    shuffle
        Shuffle chunks and cells (training); off, chunks come in file order.
    rank, world_size
        Default: from ``torch.distributed`` when it is initialised, else a single process.
    """

    def __init__(
        self,
        sources: list[H5adSource],
        config: ReformerConfig,
        *,
        split: str = "train",
        batch_size: int = 16,
        chunk_size: int = 1024,
        validation_size: float = 0.1,
        seed: int = 0,
        shuffle: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        if split not in ("train", "validation"):
            raise ValueError(f"split must be 'train' or 'validation', not {split!r}.")
        self.sources, self.config, self.split = sources, config, split
        self.batch_size, self.chunk_size = int(batch_size), int(chunk_size)
        self.validation_size, self.seed, self.shuffle = validation_size, seed, shuffle
        self._rank, self._world_size = rank, world_size
        self.epoch = 0
        self.offsets = np.concatenate([[0], np.cumsum([s.n_obs for s in sources])])
        self.chunks = [
            (i, start)
            for i, source in enumerate(sources)
            for start in range(0, source.n_obs, self.chunk_size)
        ]
        self.n_cells = sum(int(self._selected(i).sum()) for i in range(len(sources)))

    def _selected(self, file_index: int) -> np.ndarray:
        source = self.sources[file_index]
        held_out = validation_mask(source.n_obs, self.validation_size, self.seed, file_index)
        return held_out if self.split == "validation" else ~held_out

    def _distributed(self) -> tuple[int, int]:
        if self._rank is not None:
            return self._rank, self._world_size or 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def __len__(self) -> int:
        """Batches per process and epoch (cells of the split / processes / batch size)."""
        _, world = self._distributed()
        return max(1, self.n_cells // (world * self.batch_size))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        rank, world = self._distributed()
        worker = get_worker_info()
        n_workers, worker_id = (1, 0) if worker is None else (worker.num_workers, worker.id)
        shard, n_shards = rank * n_workers + worker_id, world * n_workers
        rng = np.random.default_rng([self.seed, self.epoch, 1])
        order = rng.permutation(len(self.chunks)) if self.shuffle else np.arange(len(self.chunks))
        mine = [self.chunks[c] for c in order[shard::n_shards]]
        quota = len(self) // n_workers + (worker_id < len(self) % n_workers)
        n_mine = sum(
            int(self._selected(f)[start : start + self.chunk_size].sum()) for f, start in mine
        )
        if quota and not n_mine:
            raise ValueError(
                f"Process {rank} (worker {worker_id}) got no {self.split} cells: too few cells "
                f"or chunks ({len(self.chunks)}) for {n_shards} processes x workers; lower "
                "chunk_size or the number of devices or workers."
            )
        cell_rng = np.random.default_rng([self.seed, self.epoch, 2, shard])
        handles: dict[int, tuple] = {}
        pending, n_pending, yielded = [], 0, 0
        try:
            for file_index, start in itertools.cycle(mine):
                if yielded >= quota:
                    break
                ids, X = self._read_chunk(handles, file_index, start, cell_rng)
                if len(ids):
                    pending.append((ids, X))
                    n_pending += len(ids)
                while n_pending >= self.batch_size and yielded < quota:
                    yield self._batch(pending)
                    n_pending -= self.batch_size
                    yielded += 1
        finally:
            for handle, _ in handles.values():
                handle.close()

    def _read_chunk(self, handles, file_index: int, start: int, rng):
        source = self.sources[file_index]
        if file_index not in handles:
            handle = h5py.File(source.path, "r")
            handles[file_index] = (handle, _matrix_element(handle, source.layer))
        stop = min(start + self.chunk_size, source.n_obs)
        keep = np.flatnonzero(self._selected(file_index)[start:stop])
        if self.shuffle:
            keep = rng.permutation(keep)
        if len(keep) == 0:
            return keep, None
        rows = read_rows(handles[file_index][1], start, stop)
        X = to_panel(rows, source.input_kind, source.alignment)[keep]
        return self.offsets[file_index] + start + keep, X

    def _batch(self, pending: list) -> dict[str, torch.Tensor]:
        """The next ``batch_size`` cells of the pending chunks, which are consumed."""
        cells, parts, taken = [], [], 0
        while taken < self.batch_size:
            ids, X = pending[0]
            n = min(self.batch_size - taken, len(ids))
            cells.append(ids[:n])
            parts.append(X[:n])
            taken += n
            if n == len(ids):
                pending.pop(0)
            else:
                pending[0] = (ids[n:], X[n:])
        batch = tokenize(sparse.vstack(parts, format="csr"), self.config)
        batch["cell"] = torch.from_numpy(np.concatenate(cells).astype(np.int64))
        return batch
