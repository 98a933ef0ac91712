import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from screformer import pp


def test_align_case_insensitive_missing_and_duplicates():
    al = pp.align_genes(["cd3e", "MS4A1", "CD3E", "LYZ"], ["MS4A1", "CD3E", "GNLY"], min_genes=1)
    # CD3E matches the first of its two columns; GNLY is missing.
    assert al.data_index.tolist() == [1, 0, -1]
    assert (al.n_found, al.n_duplicated, al.n_panel) == (2, 1, 3)
    assert al.unmeasured.tolist() == [False, False, True]
    assert al.report()["fraction_found"] == pytest.approx(2 / 3, abs=1e-4)


def test_align_ensembl_version_suffix():
    al = pp.align_genes(
        ["ENSG00000167286.9", "ENSG00000105374"],
        ["ENSG00000105374", "ENSG00000167286"],
        min_genes=1,
    )
    assert al.data_index.tolist() == [1, 0]


def test_align_too_few_genes_explains_ensembl():
    names = [f"ENSG{i:011d}" for i in range(200)]
    with pytest.raises(ValueError, match="Ensembl IDs.*gene_symbols"):
        pp.align_genes(names, [f"GENE{i}" for i in range(200)])


def test_unique_panel_keeps_first_case_insensitive():
    assert pp.unique_panel(["A", "b", "a", "B", "C"]) == ["A", "b", "C"]


@pytest.mark.parametrize("dtype", [np.int32, np.float32, np.float16, np.float64])
def test_detect_counts_any_dtype(dtype):
    X = np.array([[0, 3, 1], [2, 0, 5]], dtype=dtype)
    assert pp.detect_input(X) == "counts"
    if dtype != np.float16:  # scipy.sparse has no float16
        assert pp.detect_input(sparse.csr_matrix(X)) == "counts"
    expected = np.log2(1 + np.array([0, 3, 1]) / 4 * 1e4)
    np.testing.assert_allclose(pp.to_log2_normalized(X, "counts").toarray()[0], expected, rtol=1e-5)


def _lognorm(counts, log):
    x = counts / counts.sum(1, keepdims=True) * 1e4
    return log(1 + x)


def test_detect_log_bases_and_normalized():
    rng = np.random.default_rng(0)
    counts = rng.poisson(2.0, size=(30, 50)).astype(float) + np.eye(30, 50)
    assert pp.detect_input(_lognorm(counts, np.log)) == "log"
    assert pp.detect_input(_lognorm(counts, np.log2)) == "log2"
    tpm = counts / counts.sum(1, keepdims=True) * 1e6 + 0.5 * (counts > 0)
    assert pp.detect_input(tpm) == "normalized"


@pytest.mark.parametrize(
    "value, message",
    [(-1.0, "negative values.*layer='counts'"), (np.nan, "NaN"), (np.inf, "infinite")],
)
def test_detect_rejects_bad_values(value, message):
    X = np.ones((3, 4), dtype=np.float32)
    X[1, 2] = value
    with pytest.raises(ValueError, match=message):
        pp.detect_input(X)


def test_log2_normalization_values():
    counts = np.array([[1.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
    out = pp.to_log2_normalized(counts, "counts").toarray()
    np.testing.assert_allclose(out[0], np.log2(1 + np.array([2500, 7500, 0])), rtol=1e-5)
    assert not out[1].any()  # an empty cell stays empty
    ln = pp.to_log2_normalized(np.log1p(np.array([[2500.0, 7500.0, 0.0]])), "log").toarray()
    np.testing.assert_allclose(ln[0], out[0], rtol=1e-5)
    log2 = pp.to_log2_normalized(out[:1], "log2").toarray()
    np.testing.assert_allclose(log2, out[:1])


def test_bins_floor_and_cap():
    assert pp.bin_expression(np.array([0, 0.4, 1, 2.7, 5.2, 13.0]), top_bin=5).tolist() == [
        0,
        0,
        1,
        2,
        5,
        5,
    ]
    assert pp.bin_expression(np.array([9.0]), top_bin=7).tolist() == [7]


def test_prepare_orders_to_panel_and_scales_over_all_genes():
    X = np.array([[1.0, 1.0, 2.0], [4.0, 0.0, 0.0]])
    adata = ad.AnnData(
        X, var=pd.DataFrame({"symbol": ["LYZ", "CD3E", "XIST"]}, index=["e1", "e2", "e3"])
    )
    prepared = pp.prepare(adata, ["CD3E", "LYZ", "MISSING"], gene_symbols="symbol", min_genes=1)
    out = prepared.X.toarray()
    # Cell 0's total is 4 (XIST counts although it is not in the panel).
    np.testing.assert_allclose(out[0], np.log2(1 + np.array([2500, 2500, 0])), rtol=1e-5)
    np.testing.assert_allclose(out[1], [0, np.log2(1 + 1e4), 0], rtol=1e-5)
    assert prepared.input_kind == "counts"
    assert prepared.alignment.n_found == 2
    # Dense and sparse input give the same result.
    sparse_adata = ad.AnnData(sparse.csr_matrix(X), var=adata.var)
    out_sparse = pp.prepare(
        sparse_adata, ["CD3E", "LYZ", "MISSING"], gene_symbols="symbol", min_genes=1
    )
    np.testing.assert_array_equal(out_sparse.X.toarray(), out)


def test_prepare_reads_layer_and_reports_empty_cells():
    adata = ad.AnnData(np.full((2, 3), -1.0), var=pd.DataFrame(index=["A", "B", "C"]))
    adata.layers["counts"] = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="negative"):
        pp.prepare(adata, ["A", "B", "C"])
    prepared = pp.prepare(adata, ["A", "B", "C"], layer="counts")
    assert prepared.empty_cells.tolist() == [True, False]
    with pytest.raises(KeyError, match="layers"):
        pp.prepare(adata, ["A"], layer="nope")


def test_prepare_rejects_empty_anndata():
    with pytest.raises(ValueError, match="empty"):
        pp.prepare(ad.AnnData(np.zeros((0, 3))), ["A"])


def test_prepare_refuses_backed_anndata(tmp_path):
    adata = ad.AnnData(sparse.csr_matrix(np.ones((3, 4), dtype=np.float32)))
    adata.write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    with pytest.raises(ValueError, match="backed"):
        pp.prepare(backed, list(adata.var_names), min_genes=1)
