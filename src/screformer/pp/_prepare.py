"""AnnData in, model-ready arrays out: the one entry point of the data path."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from anndata import AnnData
from scipy import sparse

from ._expression import InputKind, detect_input, to_log2_normalized
from ._genes import GeneAlignment, align_genes, data_gene_names, unique_panel

logger = logging.getLogger("screformer")


@dataclass(frozen=True)
class PreparedData:
    """Cells on the model's gene panel.

    Attributes
    ----------
    X
        CSR float32, cells x panel genes: ``log2(1 + x)`` of values scaled to 1e4 per cell;
        panel genes the data lacks are 0 (``alignment.unmeasured`` tells them from measured
        zeros).
    alignment
        Which panel genes were found.
    input_kind
        What the input held (see :func:`detect_input`).
    """

    X: sparse.csr_matrix
    alignment: GeneAlignment
    input_kind: InputKind

    @property
    def empty_cells(self) -> np.ndarray:
        """Boolean mask of cells with no expressed panel gene."""
        return np.diff(self.X.indptr) == 0


def expression_matrix(adata: AnnData, layer: str | None = None):
    """``adata.X`` or ``adata.layers[layer]``, with a clear error for a missing layer."""
    if layer is None:
        if adata.X is None:
            raise ValueError("adata.X is empty; pass layer='<layer with counts>'.")
        return adata.X
    if layer not in adata.layers:
        raise KeyError(
            f"layer={layer!r} is not in adata.layers (layers: {list(adata.layers.keys())})."
        )
    return adata.layers[layer]


def refuse_backed(adata: AnnData) -> None:
    """Raise for an AnnData opened with ``backed="r"``: its matrix is read from disk."""
    if adata.isbacked:
        raise ValueError(
            "The AnnData is backed (opened with backed='r'); load it with adata.to_memory() "
            "or read_h5ad without backed=."
        )


def prepare(
    adata: AnnData,
    panel,
    *,
    layer: str | None = None,
    gene_symbols: str | None = None,
    min_genes: int | None = None,
) -> PreparedData:
    """Align ``adata`` to ``panel`` and normalise it as scBERT does.

    The input kind is detected on the whole matrix and each cell is scaled by its total over
    *all* its genes (as scBERT does before it selects panel genes), then the panel's columns are
    taken in panel order.

    Parameters
    ----------
    adata
        Cells x genes; raw counts or log-normalised values (dense or sparse).
    panel
        The model's gene names, in token order.
    layer
        Layer to read instead of ``adata.X``.
    gene_symbols
        ``var`` column with the names to match (default ``var_names``).
    min_genes
        Passed to :func:`align_genes`.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> a = ad.AnnData(np.array([[1.0, 3.0], [0.0, 2.0]]))
    >>> a.var_names = ["CD3E", "LYZ"]
    >>> p = prepare(a, ["LYZ", "CD3E", "MS4A1"], min_genes=1)
    >>> p.X.shape, p.input_kind, p.alignment.n_found
    ((2, 3), 'counts', 2)
    """
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"The AnnData is empty ({adata.n_obs} cells x {adata.n_vars} genes).")
    refuse_backed(adata)
    alignment = align_genes(data_gene_names(adata, gene_symbols), panel, min_genes=min_genes)
    X = expression_matrix(adata, layer)
    kind = detect_input(X)
    logger.info("Input looks like %s values.", kind)
    return PreparedData(to_panel(X, kind, alignment), alignment, kind)


def to_panel(X, kind: InputKind, alignment: GeneAlignment) -> sparse.csr_matrix:
    """Cells of ``X`` (all the data's genes, values of ``kind``) normalised and put on the
    panel: CSR float32, cells x panel genes, in panel order.

    Each cell is scaled by its total over all its genes before the panel's columns are taken,
    so a chunk of rows gives the same result as the whole matrix.
    """
    X = to_log2_normalized(X, kind)
    found = np.flatnonzero(alignment.data_index >= 0)
    selector = sparse.csr_matrix(
        (np.ones(found.size, np.float32), (alignment.data_index[found], found)),
        shape=(X.shape[1], alignment.n_panel),
    )
    X = sparse.csr_matrix(X @ selector)
    X.sort_indices()
    return X


def variable_genes(
    adata: AnnData,
    n_top_genes: int = 2000,
    *,
    genes=None,
    layer: str | None = None,
    gene_symbols: str | None = None,
) -> list[str]:
    """The ``n_top_genes`` most variable genes of ``adata``, in ``adata``'s order: the panel
    :func:`screformer.tl.annotate` trains a new model on.

    Scanpy's :func:`~scanpy.pp.highly_variable_genes` (``flavor="seurat"``: normalised dispersion
    within bins of mean expression) on the values :func:`prepare` gives the model, each cell
    scaled to 1e4 over all its genes, so counts and log-normalised input choose the same genes.

    Parameters
    ----------
    adata
        Cells x genes; raw counts or log-normalised values.
    n_top_genes
        How many genes; all of them when there are no more.
    genes
        Choose among these genes only (e.g. those a query shares); default: all of ``adata``'s.
    layer, gene_symbols
        Where to read the values and gene names, as in :func:`prepare`.

    Examples
    --------
    >>> import screformer
    >>> genes = variable_genes(screformer.datasets.pbmc3k(), 2000)
    >>> len(genes), genes[:3]
    (2000, ['TNFRSF4', 'CPSF3L', 'ATAD3C'])
    """
    candidates = unique_panel(data_gene_names(adata, gene_symbols) if genes is None else genes)
    if n_top_genes >= len(candidates):
        return candidates
    X = prepare(adata, candidates, layer=layer, gene_symbols=gene_symbols, min_genes=1).X
    chosen = _dispersions(X, n_top_genes)["highly_variable"].to_numpy()
    return [g for g, keep in zip(candidates, chosen, strict=True) if keep]


def genes_by_dispersion(X) -> np.ndarray:
    """Column indices of ``X`` (cells x genes, log2 values as :func:`prepare` gives them) from
    the most variable gene down, as :func:`variable_genes` ranks them (genes with no dispersion
    last): the highly variable genes a user would keep are the head of this order.

    Examples
    --------
    >>> import screformer
    >>> adata = screformer.datasets.pbmc3k()
    >>> order = genes_by_dispersion(prepare(adata, adata.var_names).X)
    >>> set(adata.var_names[order[:500]]) == set(variable_genes(adata, 500))
    True
    """
    dispersion = _dispersions(X, X.shape[1])["dispersions_norm"].to_numpy()
    return np.argsort(-np.nan_to_num(dispersion, nan=-np.inf), kind="stable")


def _dispersions(X, n_top_genes: int):
    """Scanpy's ``flavor="seurat"`` table for log2 values ``X``: normalised dispersion within
    bins of mean expression, ``highly_variable`` for the top ``n_top_genes``."""
    import scanpy as sc

    # Scanpy's dispersions expect natural-log values: log2(1 + x) * ln 2 = ln(1 + x).
    values = AnnData(X * np.float32(np.log(2)))
    sc.pp.highly_variable_genes(values, n_top_genes=n_top_genes, flavor="seurat")
    return values.var
