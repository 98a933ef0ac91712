"""Real data: pbmc3k (10x Genomics, CC BY 4.0; labels from the Seurat tutorial)."""

import anndata as ad
import numpy as np
import pytest
from sklearn.model_selection import train_test_split

import screformer

from .conftest import DATA_DIR, require


@pytest.mark.slow
def test_pbmc3k_holdout_accuracy():
    adata = ad.read_h5ad(require(DATA_DIR / "labelled" / "pbmc3k_labelled.h5ad"))
    labels = adata.obs["classified"].astype(str).to_numpy()
    train, test = train_test_split(
        np.arange(adata.n_obs), test_size=0.2, stratify=labels, random_state=0
    )
    query = adata[test].copy()
    screformer.tl.annotate(
        query,
        "classified",
        reference=adata[train].copy(),
        unassigned_threshold=0.0,
        max_epochs=5,
        enable_progress_bar=False,
    )
    accuracy = np.mean(query.obs["screformer_prediction"].astype(str).to_numpy() == labels[test])
    assert accuracy >= 0.85, accuracy


def test_bundled_pbmc3k_is_the_shared_file():
    bundled = screformer.datasets.pbmc3k()
    assert bundled.shape == (2638, 13714)
    assert screformer.pp.detect_input(bundled.X) == "counts"
    np.testing.assert_allclose(
        np.asarray(bundled.X.sum(1)).ravel(), bundled.obs["nCount_RNA"], rtol=1e-6
    )
    assert bundled.obs["classified"].value_counts()["Platelet"] == 14
