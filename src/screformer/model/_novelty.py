"""Novelty: how far a cell lies from the training cells of the type it was given.

A softmax spreads all probability over the known types, so a cell of a type the model never saw
is often called one of them with high confidence (pbmc3k, B cells left out of training: 93% are
called CD4 T cells above 0.5). A distance does not have that blind spot: a B cell lies far from
every CD4 T cell the model was trained on. The score is the mean distance to the nearest
training cells of the predicted type, in a PCA of the training cells' log-normalised expression,
divided by that type's own spread (its training cells' distance to their neighbours), turned
into a quantile of the same distance for the validation cells (cells held out of training)
measured against their own type: 0.99 means farther than 99% of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

N_GENES = 2000  # the most variable panel genes (of the training cells) the PCA reads
N_COMPONENTS = 30  # chosen on the heart's leave-one-type-out (benchmarks/novel_types.py)
N_NEIGHBORS = 10
MAX_CELLS_PER_TYPE = 1000  # training cells kept per type: bounds the checkpoint and the search


@dataclass
class NoveltyReference:
    """The training cells in PCA space, with their types, and the validation cells' distances.

    Built by :meth:`fit` at the end of :meth:`screformer.SCReformer.train`, saved in the
    checkpoint.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = sparse.csr_matrix(np.r_[rng.poisson(3, (60, 20)), rng.poisson(3, (60, 20))[:, ::-1]])
    >>> X[60:, :10] = 0  # type 1 lacks the first 10 genes
    >>> labels = np.repeat([0, 1], 60)
    >>> train, validation = np.arange(0, 120, 2), np.arange(1, 120, 2)
    >>> ref = NoveltyReference.fit(X, labels, train, validation)
    >>> novel = sparse.csr_matrix(np.full((1, 20), 9.0))  # far from both types
    >>> float(ref.score(novel, np.array([0]))[0])
    1.0
    """

    genes: np.ndarray  # panel columns read
    mean: np.ndarray
    components: np.ndarray  # (components, genes)
    coords: np.ndarray  # training cells in PCA space
    labels: np.ndarray  # their class indices
    spread: np.ndarray  # per class: median distance of its training cells to their neighbours
    calibration: np.ndarray  # validation cells' distances, sorted

    @classmethod
    def fit(cls, X, labels, train_idx, val_idx, seed: int = 0):
        """From the prepared matrix ``X`` (cells x panel, log2 values), the class index of each
        cell, and the training and validation rows.

        The validation cells are measured against the training cells of their *true* type: the
        calibration is the spread of a type around its training cells. (Against their predicted
        type, the validation cells the model gets wrong lie far away and would set the bar as
        high as a novel type's.) A query cell far from its predicted type is then either novel
        or misclassified: Unassigned is right for both."""
        rng = np.random.default_rng(seed)
        kept = np.concatenate(
            [
                rng.permutation(train_idx[labels[train_idx] == c])[:MAX_CELLS_PER_TYPE]
                for c in np.unique(labels[train_idx])
            ]
        )
        train = _dense(X[kept])
        genes = np.sort(np.argsort(train.var(0))[::-1][:N_GENES])
        train = train[:, genes]
        n_components = max(1, min(N_COMPONENTS, len(genes) - 1, len(kept) - 1))
        pca = PCA(n_components, random_state=seed).fit(train)
        reference = cls(
            genes=genes,
            mean=pca.mean_.astype(np.float32),
            components=pca.components_.astype(np.float32),
            coords=pca.transform(train).astype(np.float32),
            labels=labels[kept],
            spread=np.ones(int(labels.max()) + 1, dtype=np.float32),
            calibration=np.zeros(0, dtype=np.float32),
        )
        for c in np.unique(reference.labels):
            cells = reference.coords[reference.labels == c]
            if len(cells) > 1:
                search = NearestNeighbors(n_neighbors=min(N_NEIGHBORS + 1, len(cells)))
                nearest = search.fit(cells).kneighbors(cells)[0][:, 1:]  # itself left out
                reference.spread[c] = max(float(np.median(nearest.mean(1))), 1e-6)
        reference.calibration = np.sort(reference.distance(X[val_idx], labels[val_idx]))
        return reference

    def distance(self, X, predicted: np.ndarray) -> np.ndarray:
        """Mean distance of each cell (row of ``X``) to its predicted type's nearest training
        cells, in units of that type's spread (types differ in how tightly their cells lie)."""
        coords = (_dense(X[:, self.genes]) - self.mean) @ self.components.T
        out = np.full(X.shape[0], np.inf, dtype=np.float32)
        for c in np.unique(predicted):
            rows, reference = predicted == c, self.coords[self.labels == c]
            if len(reference):
                search = NearestNeighbors(n_neighbors=min(N_NEIGHBORS, len(reference)))
                out[rows] = search.fit(reference).kneighbors(coords[rows])[0].mean(1)
        return out / self.spread[predicted]

    def score(self, X, predicted: np.ndarray) -> np.ndarray:
        """The share of validation cells nearer to their type than each cell is to its own:
        0 (typical) to 1 (farther than all of them)."""
        if len(self.calibration) == 0:
            return np.zeros(X.shape[0], dtype=np.float32)
        rank = np.searchsorted(self.calibration, self.distance(X, predicted), side="right")
        return (rank / len(self.calibration)).astype(np.float32)

    def to_checkpoint(self) -> dict:
        """Tensors only: checkpoints are read with ``torch.load(weights_only=True)``."""
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in vars(self).items()}

    @classmethod
    def from_checkpoint(cls, payload: dict) -> NoveltyReference:
        return cls(**{k: v.numpy() for k, v in payload.items()})


def _dense(X) -> np.ndarray:
    return np.asarray(X.toarray() if sparse.issparse(X) else X, dtype=np.float32)
