"""Expression values: input checks, scBERT normalisation and expression bins."""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
from scipy import sparse

logger = logging.getLogger("screformer")

InputKind = Literal["counts", "normalized", "log2", "log"]

TARGET_SUM = 1e4
# log2(1 + 1e4) is about 13.3; non-integer data above this cannot be log-normalised.
_MAX_LOG_VALUE = 20.0


def _values(X) -> np.ndarray:
    """Stored values of a dense or sparse matrix (the non-zeros of a sparse one)."""
    return X.data if sparse.issparse(X) else np.asarray(X).ravel()


def _row_sums(X) -> np.ndarray:
    return np.asarray(X.sum(axis=1)).ravel()


def detect_input(X) -> InputKind:
    """Say what kind of values ``X`` (cells x genes) holds, or raise when it cannot be used.

    Returns
    -------
    ``"counts"``
        non-negative integers (raw UMI or read counts);
    ``"normalized"``
        non-negative, non-integer values too large to be logged (CPM, TPM): treated like counts;
    ``"log2"`` / ``"log"``
        log-normalised values; ``log2`` when ``2**x - 1`` sums to the same total in every cell
        (as scBERT's ``log2(1 + x)``), otherwise natural log (scanpy's and Seurat's ``log1p``).

    Raises
    ------
    ValueError
        For NaN or infinite values, negative values (scaled or centred data such as the output of
        ``sc.pp.scale``), each with what to pass instead.

    Examples
    --------
    >>> import numpy as np
    >>> detect_input(np.array([[0, 3, 1], [2, 0, 5]]))
    'counts'
    """
    values = _values(X)
    if values.size == 0:
        return "counts"
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values)
        if bad.any():
            raise ValueError(
                f"The expression matrix holds {int(np.isnan(values).sum())} NaN and "
                f"{int(np.isinf(values).sum())} infinite values. Use raw counts or log-normalised "
                "values without missing entries (e.g. layer='counts')."
            )
    if values.min() < 0:
        raise ValueError(
            "The expression matrix has negative values, so it looks scaled or centred "
            "(e.g. by sc.pp.scale). screformer needs raw counts or log-normalised values: pass "
            "layer='counts' (or the layer that holds them), or use adata.raw.to_adata() "
            "(tl.annotate: use_raw=True)."
        )
    if values.dtype.kind in "iub" or np.all(np.mod(values, 1) == 0):
        return "counts"
    if values.max() > _MAX_LOG_VALUE:
        return "normalized"
    nonzero_cells = _row_sums(X) > 0
    if not nonzero_cells.any():
        return "log"
    for base, kind in ((2.0, "log2"), (np.e, "log")):
        totals = _row_sums(_expm(X, base))[nonzero_cells]
        if totals.std() <= 0.01 * totals.mean():
            return kind
    return "log"


def _expm(X, base: float):
    """Elementwise ``base**x - 1`` keeping sparsity."""
    if sparse.issparse(X):
        out = X.copy().astype(np.float64)
        out.data = np.power(base, out.data) - 1
        return out
    return np.power(base, np.asarray(X, dtype=np.float64)) - 1


def to_log2_normalized(X, kind: InputKind) -> sparse.csr_matrix:
    """scBERT's values: each cell scaled to 1e4 in total, then ``log2(1 + x)``; CSR float32.

    Counts and normalised values are scaled and logged. Log-normalised values are converted to
    base 2 (``x / ln 2`` for natural logs); when every cell's un-logged values sum to the same
    total ``T`` (the data were normalised over all their genes, as ``sc.pp.normalize_total``
    does with its default, the median total), they are rescaled from ``T`` to 1e4, which gives
    back exactly the values the counts would give. Cells with no counts stay zero.
    """
    X = sparse.csr_matrix(X, dtype=np.float32, copy=True)
    if kind in ("counts", "normalized"):
        totals = _row_sums(X)
        scale = np.divide(TARGET_SUM, totals, out=np.zeros_like(totals), where=totals > 0)
        X = sparse.csr_matrix(sparse.diags(scale.astype(np.float32)) @ X)
        np.log2(X.data + 1, out=X.data)
    else:
        if kind == "log":
            X.data /= np.float32(np.log(2))
        _rescale_log2_total(X)
    X.eliminate_zeros()
    return X


def _rescale_log2_total(X: sparse.csr_matrix) -> None:
    """In place: log2 values normalised to a common total ``T`` become values normalised to
    1e4. Values whose totals differ between cells (a gene subset taken after normalising) are
    left alone: their total cannot be known."""
    if X.nnz == 0:
        return
    linear = np.exp2(X.data.astype(np.float64)) - 1
    lengths = np.diff(X.indptr)
    rows = np.repeat(np.arange(X.shape[0]), lengths)
    totals = np.bincount(rows, linear, minlength=X.shape[0])[lengths > 0]
    total = float(np.median(totals))
    if np.abs(totals - total).max() > 0.01 * total or abs(total - TARGET_SUM) < 0.01 * TARGET_SUM:
        return
    X.data[:] = np.log2(1 + linear * (TARGET_SUM / total)).astype(np.float32)


def bin_expression(values: np.ndarray, top_bin: int = 5) -> np.ndarray:
    """scBERT's expression bins: ``floor(x)`` capped at ``top_bin`` (bins 0 to ``top_bin``).

    Like scBERT, values in ``(0, 1)`` fall in bin 0 with the unexpressed genes; in the
    ``expressed`` token mode they are still tokens, since the token list comes from the non-zeros.

    Examples
    --------
    >>> bin_expression(np.array([0.0, 0.4, 1.0, 2.7, 11.3]), top_bin=5).tolist()
    [0, 0, 1, 2, 5]
    """
    return np.clip(np.floor(values), 0, top_bin).astype(np.int64)


def relative_bins(X: sparse.csr_matrix, top_bin: int = 5) -> np.ndarray:
    """Per-cell relative bins of the stored values of CSR ``X``, in ``X.data``'s order.

    A value's bin is ``1 + floor(top_bin * q)`` where ``q`` is the share of the cell's non-zero
    values strictly below it (tied values share a bin), so bins run from 1 to ``top_bin`` and
    depend only on the order of values within the cell: counts, and log-normalised values of
    any scale, give the same bins. Zeros stored explicitly get bin 0.

    Examples
    --------
    >>> from scipy import sparse
    >>> X = sparse.csr_matrix(np.array([[1.0, 0, 1, 4, 9], [0, 2, 0, 0, 0]]))
    >>> relative_bins(X, top_bin=5).tolist()
    [1, 1, 3, 4, 1]
    """
    X = sparse.csr_matrix(X)
    per_row = np.diff(X.indptr)
    lengths = np.repeat(per_row, per_row)  # each stored value's row length
    bins = 1 + (top_bin * values_below(X)) // np.maximum(lengths, 1)
    return np.where(X.data > 0, bins, 0)


def values_below(X: sparse.csr_matrix) -> np.ndarray:
    """For each stored value of CSR ``X``, in ``X.data``'s order, how many of its row's stored
    values are strictly below it (tied values get the same count).

    Examples
    --------
    >>> from scipy import sparse
    >>> values_below(sparse.csr_matrix(np.array([[5.0, 0, 1, 5, 2], [0, 3, 0, 0, 0]]))).tolist()
    [2, 0, 2, 1, 0]
    """
    X = sparse.csr_matrix(X)
    rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    order = np.lexsort((X.data, rows))
    values, row_of = X.data[order], rows[order]
    new_run = np.ones(X.nnz, dtype=bool)
    new_run[1:] = (row_of[1:] != row_of[:-1]) | (values[1:] != values[:-1])
    run_start = np.maximum.accumulate(np.where(new_run, np.arange(X.nnz), 0))
    below = np.empty(X.nnz, dtype=np.int64)
    below[order] = run_start - X.indptr[row_of]
    return below


def bin_matrix(X: sparse.csr_matrix, encoding: str, top_bin: int = 5) -> sparse.csr_matrix:
    """Expression bins of ``X`` (log2 values on the panel) with the same sparsity: CSR int64.

    ``encoding`` is ``"absolute"`` (:func:`bin_expression`) or ``"relative"``
    (:func:`relative_bins`).
    """
    X = sparse.csr_matrix(X)
    if encoding == "absolute":
        data = bin_expression(X.data, top_bin)
    elif encoding == "relative":
        data = relative_bins(X, top_bin)
    else:
        raise ValueError(f"Unknown value encoding {encoding!r}.")
    return sparse.csr_matrix((data, X.indices, X.indptr), shape=X.shape)
