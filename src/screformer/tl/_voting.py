"""Majority voting over an over-clustering, as CellTypist's ``majority_voting=True``."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData


def over_clustering_resolution(n_cells: int) -> float:
    """CellTypist's rule: the Leiden resolution grows with the number of cells, so that clusters
    stay small (5 under 5,000 cells ... 30 from 200,000)."""
    steps = [(5_000, 5), (20_000, 10), (40_000, 15), (100_000, 20), (200_000, 25)]
    return float(next((r for limit, r in steps if n_cells < limit), 30))


def over_cluster(X, connectivities=None, seed: int = 0) -> np.ndarray:
    """Leiden clusters of the cells (rows of ``X``, log-normalised) at
    :func:`over_clustering_resolution`; ``connectivities``: a neighbour graph to use instead of
    one computed from the 2,000 most variable genes' PCA (Scanpy's defaults)."""
    import scanpy as sc

    adata = AnnData(X)
    if connectivities is None:
        sc.pp.highly_variable_genes(adata, n_top_genes=min(2000, adata.n_vars))
        n_comps = max(1, min(50, adata.n_obs - 1, int(adata.var["highly_variable"].sum()) - 1))
        sc.pp.pca(adata, n_comps=n_comps, mask_var="highly_variable", random_state=seed)
        sc.pp.neighbors(adata, n_neighbors=min(15, adata.n_obs - 1), random_state=seed)
    else:
        adata.obsp["connectivities"] = connectivities
        adata.uns["neighbors"] = {"connectivities_key": "connectivities", "params": {}}
    sc.tl.leiden(
        adata,
        resolution=over_clustering_resolution(adata.n_obs),
        flavor="igraph",
        n_iterations=2,
        directed=False,
        random_state=seed,
    )
    return adata.obs["leiden"].astype(str).to_numpy()


def majority_vote(prediction: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Each cell's cluster's most common prediction (``Unassigned`` votes like a type; ties go
    to the type named first in sorted order).

    Examples
    --------
    >>> majority_vote(np.array(["B", "B", "T", "T", "T"]), np.array([0, 0, 0, 1, 1]))
    array(['B', 'B', 'B', 'T', 'T'], dtype=object)
    """
    table = pd.DataFrame({"cluster": clusters, "call": prediction})
    winner = table.groupby("cluster")["call"].agg(
        lambda calls: calls.value_counts().sort_index().idxmax()
    )
    return table["cluster"].map(winner).to_numpy(dtype=object)
