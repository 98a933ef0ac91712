"""Real data bundled with the package, for the demo, tutorials and tests."""

from __future__ import annotations

from importlib.resources import files

import anndata as ad

__all__ = ["pbmc3k"]


def pbmc3k() -> ad.AnnData:
    """2,638 human PBMCs x 13,714 genes, raw UMI counts, with cell types.

    10x Genomics pbmc3k (10x v1 chemistry; data CC BY 4.0), as carried by the clustifyr R package
    (MIT): counts recovered exactly from its log-normalised matrix (row sums equal
    ``obs['nCount_RNA']``). ``obs['classified']`` holds the Seurat tutorial's 9 cell types
    (Naive CD4 T 697, Memory CD4 T 483, CD14+ Mono 480, B 344, CD8 T 271, FCGR3A+ Mono 162,
    NK 155, DC 32, Platelet 14); ``obs['UMAP_1']``/``['UMAP_2']`` its UMAP coordinates.

    Examples
    --------
    >>> adata = pbmc3k()
    >>> adata.shape
    (2638, 13714)
    """
    return ad.read_h5ad(files(__package__).joinpath("pbmc3k.h5ad"))
