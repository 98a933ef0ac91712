"""Real data: pbmc3k (10x Genomics, CC BY 4.0; labels from the Seurat tutorial)."""

import anndata as ad
import numpy as np
import pytest
from sklearn.model_selection import train_test_split

import screformer

from .conftest import DATA_DIR, require

# Canonical markers (issue 4; the paper's Fig. 5 for T cells). A group counts when one of its
# markers is among the top 20 SHAP genes of any of its pbmc3k types.
MARKERS = {
    "B": (["B"], {"MS4A1", "CD79A", "CD79B"}),
    "NK": (["NK"], {"GNLY", "NKG7"}),
    "CD14+ Mono": (["CD14+ Mono"], {"LYZ", "CD14", "S100A8", "S100A9"}),
    "FCGR3A+ Mono": (["FCGR3A+ Mono"], {"FCGR3A", "MS4A7"}),
    "T cells": (["Naive CD4 T", "Memory CD4 T", "CD8 T"], {"CD3D", "CD3E", "IL7R"}),
    "Platelet": (["Platelet"], {"PPBP", "PF4"}),
    "DC": (["DC"], {"FCER1A", "CST3"}),
}


@pytest.fixture(scope="module")
def pbmc3k_holdout():
    """The default model fine-tuned on 80% of pbmc3k; the other 20% annotated."""
    adata = ad.read_h5ad(require(DATA_DIR / "labelled" / "pbmc3k_labelled.h5ad"))
    labels = adata.obs["classified"].astype(str).to_numpy()
    train, test = train_test_split(
        np.arange(adata.n_obs), test_size=0.2, stratify=labels, random_state=0
    )
    query = adata[test].copy()
    model = screformer.tl.annotate(
        query,
        "classified",
        reference=adata[train].copy(),
        unassigned_threshold=0.0,
        max_epochs=5,
        enable_progress_bar=False,
    )
    return adata[train].copy(), query, model


@pytest.mark.slow
def test_pbmc3k_holdout_accuracy(pbmc3k_holdout):
    _, query, _ = pbmc3k_holdout
    predicted = query.obs["screformer_prediction"].astype(str).to_numpy()
    accuracy = np.mean(predicted == query.obs["classified"].astype(str).to_numpy())
    assert accuracy >= 0.85, accuracy


@pytest.mark.slow
def test_pbmc3k_shap_top_genes_are_canonical_markers(pbmc3k_holdout):
    reference, _, model = pbmc3k_holdout
    groups = sorted({t for types, _ in MARKERS.values() for t in types})
    ranks = screformer.tl.shap_markers(
        reference, model, "classified", groups=groups, n_cells=12, n_background=50, nsamples=32
    )
    found = {
        name: sorted(markers & {g for t in types for g in ranks[t].index[:20]})
        for name, (types, markers) in MARKERS.items()
    }
    assert sum(bool(v) for v in found.values()) >= 5, found


def test_bundled_pbmc3k_is_the_shared_file():
    bundled = screformer.datasets.pbmc3k()
    assert bundled.shape == (2638, 13714)
    assert screformer.pp.detect_input(bundled.X) == "counts"
    np.testing.assert_allclose(
        np.asarray(bundled.X.sum(1)).ravel(), bundled.obs["nCount_RNA"], rtol=1e-6
    )
    assert bundled.obs["classified"].value_counts()["Platelet"] == 14
