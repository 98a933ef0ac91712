"""Novelty: how unlike a cell is to the training cells of the type it was given.

A softmax spreads all probability over the known types, so a cell of a type the model never saw
is often called one of them with high confidence (pbmc3k, B cells left out of training: 93% are
called CD4 T cells above 0.5). Three pieces of evidence that do not share that blind spot, each
turned into a quantile among the validation cells (cells held out of training), 0.99 meaning
farther than 99% of them:

- **expression**: the mean distance to the nearest training cells of the predicted type, in a
  PCA of the training cells' log-normalised expression, divided by that type's own spread;
- **model features**: the Mahalanobis distance of the cell's penultimate-layer features (the
  classifier's last hidden layer) to its predicted type's mean, with one covariance shared by all
  types (Lee et al., NeurIPS 2018);
- **energy**: ``-logsumexp(logits)``, low where the network's logits are large for some type
  (Liu et al., NeurIPS 2020).

The score is the largest of the three quantiles, turned into a quantile itself among the
validation cells' own largest, so that a threshold of 0.99 still flags about 1% of typical cells.
That needs at least ``MIN_VALIDATION_CELLS`` (100) validation cells; with fewer, the expression
part alone is the score.
The combination was chosen on the leave-one-type-out benchmark (``benchmarks/novel_types.py``,
docs: interpretation). Checkpoints written before it hold the expression part only, which is then
the score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse
from scipy.special import logsumexp
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

N_GENES = 2000  # the most variable panel genes (of the training cells) the PCA reads
N_COMPONENTS = 30  # of 5-50, on the heart's leave-one-type-out (novel_types.py, 2026-12-02)
N_NEIGHBORS = 10
MAX_CELLS_PER_TYPE = 1000  # training cells kept per type: bounds the checkpoint and the search
RIDGE = 1e-3  # added to the feature covariance, as a share of its mean variance
# The largest of three quantiles needs validation cells enough to resolve the default threshold
# (0.99: at least 100 cells). With fewer, each quantile is coarse, a typical cell lies beyond every
# validation cell on one of the three counts far more often than 1% (heart, about 50 validation
# cells: 7.3% of known cells flagged against 1.6% with expression alone), so the expression part
# alone is used.
MIN_VALIDATION_CELLS = 100


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

    With the model's outputs for the cells (here: made up), its features and energy count too:

    >>> X, labels = sparse.vstack([X, X]).tocsr(), np.r_[labels, labels]  # 120 validation cells
    >>> train, validation = np.arange(0, 240, 2), np.arange(1, 240, 2)
    >>> logits = np.c_[labels == 0, labels == 1].astype(np.float32) * 5
    >>> features = logits + rng.normal(0, 1, logits.shape).astype(np.float32)
    >>> outputs = lambda rows: (logits[rows], features[rows])
    >>> ref = NoveltyReference.fit(X, labels, train, validation, outputs=outputs)
    >>> far = np.array([[0.0, 0.0]], dtype=np.float32)  # weak logits, features far from both
    >>> float(ref.score(X[:1], np.array([0]), outputs=(far, far - 9))[0])
    1.0
    """

    genes: np.ndarray  # panel columns read
    mean: np.ndarray
    components: np.ndarray  # (components, genes)
    coords: np.ndarray  # training cells in PCA space
    labels: np.ndarray  # their class indices
    spread: np.ndarray  # per class: median distance of its training cells to their neighbours
    calibration: np.ndarray  # validation cells' distances, sorted
    # From the model's outputs (absent in checkpoints written before they were used):
    feature_means: np.ndarray | None = None  # per class: mean penultimate features
    feature_precision: np.ndarray | None = None  # inverse of the shared covariance
    feature_calibration: np.ndarray | None = None  # validation cells' Mahalanobis distances
    energy_calibration: np.ndarray | None = None  # validation cells' energies
    combined_calibration: np.ndarray | None = None  # validation cells' largest quantile

    @classmethod
    def fit(
        cls, X, labels, train_idx, val_idx, seed: int = 0, outputs=None, validation_outputs=None
    ):
        """From the prepared matrix ``X`` (cells x panel, log2 values), the class index of each
        cell, the training and validation rows and, optionally, the model's ``outputs``: a
        function of row indices of ``X`` that returns ``(logits, features)`` for those cells
        (arrays of cells x classes and cells x penultimate features);
        ``validation_outputs``: ``outputs(val_idx)`` when the caller has it already.

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
        distances = reference.distance(X[val_idx], labels[val_idx])
        reference.calibration = np.sort(distances)
        if outputs is not None and len(val_idx) >= MIN_VALIDATION_CELLS:
            if validation_outputs is None:
                validation_outputs = outputs(val_idx)
            reference._fit_outputs(outputs, validation_outputs, labels, kept, val_idx, distances)
        return reference

    def _fit_outputs(self, outputs, validation_outputs, labels, kept, val_idx, distances) -> None:
        features = np.asarray(outputs(kept)[1], dtype=np.float64)
        means = np.zeros((int(labels.max()) + 1, features.shape[1]))
        for c in np.unique(labels[kept]):
            means[c] = features[labels[kept] == c].mean(0)
        centred = features - means[labels[kept]]
        covariance = np.atleast_2d(np.cov(centred, rowvar=False))
        covariance += RIDGE * np.trace(covariance) / len(covariance) * np.eye(len(covariance))
        self.feature_means = means.astype(np.float32)
        self.feature_precision = np.linalg.inv(covariance).astype(np.float32)
        (logits, features), val_labels = validation_outputs, labels[val_idx]
        self.feature_calibration = np.sort(self._feature_distance(features, val_labels))
        self.energy_calibration = np.sort(_energy(logits))
        own = self._quantiles(distances, val_labels, validation_outputs)
        self.combined_calibration = np.sort(own.max(0))

    def _feature_distance(self, features, predicted) -> np.ndarray:
        """Squared Mahalanobis distance of each cell's features to its predicted type's mean."""
        centred = np.asarray(features, dtype=np.float32) - self.feature_means[predicted]
        return np.einsum("ij,jk,ik->i", centred, self.feature_precision, centred)

    def _quantiles(self, distances, predicted, outputs) -> np.ndarray:
        """The three quantiles (expression, features, energy), 3 x cells, from the cells'
        expression ``distances`` (:meth:`distance`) and the model's outputs."""
        logits, features = outputs
        return np.stack(
            [
                _quantile(self.calibration, distances),
                _quantile(self.feature_calibration, self._feature_distance(features, predicted)),
                _quantile(self.energy_calibration, _energy(logits)),
            ]
        )

    def distance(self, X, predicted: np.ndarray, unmeasured=None) -> np.ndarray:
        """Mean distance of each cell (row of ``X``) to its predicted type's nearest training
        cells, in units of that type's spread (types differ in how tightly their cells lie).

        Panel genes marked ``unmeasured`` (a boolean mask over the panel) take the training
        cells' mean, so the cell is placed by the genes it has."""
        centred = _dense(X[:, self.genes]) - self.mean
        if unmeasured is not None:
            centred[:, np.asarray(unmeasured, bool)[self.genes]] = 0
        coords = centred @ self.components.T
        out = np.full(X.shape[0], np.inf, dtype=np.float32)
        for c in np.unique(predicted):
            rows, reference = predicted == c, self.coords[self.labels == c]
            if len(reference):
                search = NearestNeighbors(n_neighbors=min(N_NEIGHBORS, len(reference)))
                out[rows] = search.fit(reference).kneighbors(coords[rows])[0].mean(1)
        return out / self.spread[predicted]

    def score(self, X, predicted: np.ndarray, outputs=None, unmeasured=None) -> np.ndarray:
        """0 (typical) to 1 (farther than all validation cells): for each cell (row of ``X``)
        given type ``predicted``, with the model's ``(logits, features)`` for the cells when the
        reference was fitted with them (else the expression part alone), and the panel genes the
        cells' data lacks (``unmeasured``, see :meth:`distance`)."""
        if len(self.calibration) == 0:
            return np.zeros(X.shape[0], dtype=np.float32)
        distances = self.distance(X, predicted, unmeasured)
        if outputs is None or self.combined_calibration is None:
            return _quantile(self.calibration, distances)
        largest = self._quantiles(distances, predicted, outputs).max(0)
        return _quantile(self.combined_calibration, largest)

    def to_checkpoint(self) -> dict:
        """Tensors only: checkpoints are read with ``torch.load(weights_only=True)``."""
        return {
            k: torch.from_numpy(np.ascontiguousarray(v))
            for k, v in vars(self).items()
            if v is not None
        }

    @classmethod
    def from_checkpoint(cls, payload: dict) -> NoveltyReference:
        return cls(**{k: v.numpy() for k, v in payload.items()})


def _quantile(calibration: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The share of ``calibration`` (sorted) at or below each value."""
    rank = np.searchsorted(calibration, values, side="right")
    return (rank / len(calibration)).astype(np.float32)


def _energy(logits: np.ndarray) -> np.ndarray:
    """``-logsumexp(logits)`` per cell: high where no type's logit is large."""
    return -logsumexp(np.asarray(logits, dtype=np.float64), axis=1)


def _dense(X) -> np.ndarray:
    return np.asarray(X.toarray() if sparse.issparse(X) else X, dtype=np.float32)
