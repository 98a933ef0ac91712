"""``tl.predict_file`` and ``screformer predict``: labels from disk, a chunk of cells at a time."""

from __future__ import annotations

import os

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from screformer import SCReformer, tl
from screformer._io import atomic_write
from screformer.cli import main

from .conftest import TINY, TINY_TRAIN, make_counts

N_CELLS = 90  # make_counts(n_per_class=30)

# Buckets of 32 hold every tiny cell (<= 40 genes, padded to 64 tokens = 2 buckets), so each
# token attends to all others whatever the random LSH rotations: predictions do not depend on
# which cells share a batch, and chunked predictions equal the in-memory ones.
CONFIG = TINY | dict(bucket_size=32)


@pytest.fixture(scope="module")
def model() -> SCReformer:
    adata = make_counts(n_per_class=30, seed=2)
    SCReformer.setup_anndata(adata, labels_key="cell_type")
    model = SCReformer(adata, **CONFIG)
    model.train(**(TINY_TRAIN | dict(max_epochs=1)))
    return model


def _query(dense: bool = False) -> ad.AnnData:
    adata = make_counts(n_per_class=30, seed=5)
    del adata.obs["cell_type"]
    X = adata.X.toarray()
    X[:3] = 0  # cells with no panel gene expressed: Unassigned
    adata.X = X if dense else sparse.csr_matrix(X)
    return adata


def _dense(X) -> np.ndarray:
    return X if isinstance(X, np.ndarray) else X.toarray()


def _expected(model, adata) -> ad.AnnData:
    annotated, _ = tl.annotate(adata, model=model, copy=True)
    return annotated


@pytest.mark.parametrize("dense", [False, True])
def test_h5ad_and_csv_match_annotate_and_read_in_chunks(
    tmp_path, model, monkeypatch, recorded_reads, dense
):
    query = _query(dense)
    query.write_h5ad(tmp_path / "in.h5ad")
    expected = _expected(model, query)

    result = tl.predict_file(model, tmp_path / "in.h5ad", tmp_path / "out.h5ad", chunk_size=16)
    assert recorded_reads and all(stop - start <= 16 for start, stop in recorded_reads)
    assert result["n_cells"] == N_CELLS and result["cells_per_s"] > 0
    recorded_reads.clear()
    tl.predict_file(model, tmp_path / "in.h5ad", tmp_path / "out.csv", chunk_size=16)
    assert recorded_reads and all(stop - start <= 16 for start, stop in recorded_reads)
    monkeypatch.undo()  # read the outputs normally

    want_labels = expected.obs["screformer_prediction"]
    want_proba = expected.obsm["screformer_probabilities"]
    assert (want_labels.iloc[:3] == tl.UNASSIGNED).all()
    assert result["n_unassigned"] == expected.uns["screformer"]["n_unassigned"]

    out = ad.read_h5ad(tmp_path / "out.h5ad")
    assert out.obs_names.equals(query.obs_names)
    pd.testing.assert_series_equal(out.obs["screformer_prediction"], want_labels)
    np.testing.assert_allclose(
        out.obs["screformer_confidence"], expected.obs["screformer_confidence"], atol=1e-5
    )
    np.testing.assert_allclose(out.obsm["screformer_probabilities"], want_proba, atol=1e-5)
    np.testing.assert_allclose(
        out.obs["screformer_novelty"], expected.obs["screformer_novelty"], atol=1e-5
    )
    np.testing.assert_array_equal(_dense(out.X), _dense(query.X))  # the input's data kept
    uns, want_uns = out.uns["screformer"], expected.uns["screformer"]
    assert list(uns["classes"]) == model.classes
    assert uns["gene_overlap"] == want_uns["gene_overlap"]
    assert uns["input_kind"] == want_uns["input_kind"] == "counts"
    assert uns["n_unassigned"] == want_uns["n_unassigned"]
    assert uns["params"]["unassigned_threshold"] == 0.1  # a trained model: as tl.annotate

    table = pd.read_csv(tmp_path / "out.csv", index_col="cell")
    assert list(table.columns) == [
        "screformer_prediction",
        "screformer_confidence",
        "screformer_novelty",
        *model.classes,
    ]
    assert table.index.equals(query.obs_names)
    assert (table["screformer_prediction"].to_numpy() == want_labels.astype(str)).all()
    np.testing.assert_allclose(table[model.classes].to_numpy(), want_proba, atol=1e-5)
    np.testing.assert_allclose(
        table["screformer_confidence"], expected.obs["screformer_confidence"], atol=1e-5
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.h5ad", "out.csv", "out.h5ad"]


@pytest.mark.parametrize("suffix", [".h5ad", ".csv"])
def test_output_gets_the_umask_mode(tmp_path, model, suffix):
    _query().write_h5ad(tmp_path / "in.h5ad")
    old = os.umask(0o022)
    try:
        tl.predict_file(model, tmp_path / "in.h5ad", tmp_path / f"out{suffix}")
    finally:
        os.umask(old)
    assert (tmp_path / f"out{suffix}").stat().st_mode & 0o777 == 0o644


def test_atomic_write_mode_and_cleanup(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_write(tmp_path / "sub" / "a.txt") as tmp:
            assert tmp.parent == tmp_path / "sub" and tmp.exists()
            tmp.write_text("done")
    finally:
        os.umask(old)
    assert (tmp_path / "sub" / "a.txt").read_text() == "done"
    assert (tmp_path / "sub" / "a.txt").stat().st_mode & 0o777 == 0o640
    with pytest.raises(KeyboardInterrupt), atomic_write(tmp_path / "sub" / "a.txt") as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert (tmp_path / "sub" / "a.txt").read_text() == "done"
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["a.txt"]


@pytest.mark.parametrize("suffix", [".h5ad", ".csv"])
def test_failure_midway_leaves_no_file(tmp_path, model, monkeypatch, suffix):
    _query().write_h5ad(tmp_path / "in.h5ad")
    real = SCReformer.predict_proba_and_novelty
    calls = []

    def failing(self, prepared, *args, **kwargs):
        calls.append(prepared.X.shape[0])
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real(self, prepared, *args, **kwargs)

    monkeypatch.setattr(SCReformer, "predict_proba_and_novelty", failing)
    with pytest.raises(RuntimeError, match="boom"):
        tl.predict_file(model, tmp_path / "in.h5ad", tmp_path / f"out{suffix}", chunk_size=32)
    assert calls == [32, 32]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.h5ad"]


def test_bad_values_in_a_later_chunk_are_refused(tmp_path, model):
    query = _query()
    X = query.X.toarray()
    X[70, 5] = -1.0  # scaled data, past the first chunk that the input kind is detected on
    query.X = sparse.csr_matrix(X)
    query.write_h5ad(tmp_path / "in.h5ad")
    with pytest.raises(ValueError, match="cells 64-89: .*negative values"):
        tl.predict_file(model, tmp_path / "in.h5ad", tmp_path / "out.csv", chunk_size=32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.h5ad"]


def test_bad_output_extension(tmp_path, model):
    _query().write_h5ad(tmp_path / "in.h5ad")
    with pytest.raises(ValueError, match=r"\.h5ad or \.csv"):
        tl.predict_file(model, tmp_path / "in.h5ad", tmp_path / "out.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.h5ad"]


def test_cli_predict_writes_both_formats(tmp_path, model, capsys, recorded_reads):
    _query().write_h5ad(tmp_path / "in.h5ad")
    model.save(tmp_path / "model")
    for out in ("out.h5ad", "out.csv"):
        args = ["predict", str(tmp_path / "in.h5ad"), "--model", str(tmp_path / "model")]
        assert main([*args, "--out", str(tmp_path / out), "--chunk-size", "40"]) == 0
        assert f"{N_CELLS} cells labelled" in capsys.readouterr().out
    # read_h5ad is patched to fail: the CLI never loaded the input whole.
    assert recorded_reads and all(stop - start <= 40 for start, stop in recorded_reads)
    assert len(pd.read_csv(tmp_path / "out.csv", index_col=0)) == N_CELLS


def test_cli_predict_outputs_agree(tmp_path, model, capsys):
    _query().write_h5ad(tmp_path / "in.h5ad")
    model.save(tmp_path / "model")
    base = ["predict", str(tmp_path / "in.h5ad"), "--model", str(tmp_path / "model")]
    assert main([*base, "--out", str(tmp_path / "out.h5ad"), "--key-added", "st"]) == 0
    assert main([*base, "--out", str(tmp_path / "out.csv"), "--key-added", "st"]) == 0
    labelled = ad.read_h5ad(tmp_path / "out.h5ad")
    table = pd.read_csv(tmp_path / "out.csv", index_col=0)
    assert (labelled.obs["st_prediction"].astype(str) == table["st_prediction"]).all()


def test_cli_predict_rejects_a_csv_input(tmp_path, model, capsys):
    make_counts().to_df().to_csv(tmp_path / "cells.csv")
    model.save(tmp_path / "model")
    code = main(
        [
            "predict",
            str(tmp_path / "cells.csv"),
            "--model",
            str(tmp_path / "model"),
            "--out",
            str(tmp_path / "out.h5ad"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err
    assert err.startswith("screformer: error:") and ".h5ad" in err
    assert "sc.read_csv(" in err and "write_h5ad(" in err
    assert not (tmp_path / "out.h5ad").exists()


def test_a_model_with_uhaf_types_writes_both_levels_to_file(tmp_path, model):
    model.uhaf_ = {"organ": "Heart", "tier": 1, "version": "2.2.0"}
    model.uhaf_["mapping"] = {c: "Cardiomyocyte cell" for c in model.classes[:-1]}
    model.uhaf_["mapping"][model.classes[-1]] = "Fibroblast"
    try:
        query = _query()
        query.write_h5ad(tmp_path / "in.h5ad")
        expected = _expected(model, query)
        tl.predict_file(model, tmp_path / "in.h5ad", tmp_path / "out.h5ad", chunk_size=16)
        tl.predict_file(model, tmp_path / "in.h5ad", tmp_path / "out.csv", chunk_size=16)
    finally:
        model.uhaf_ = None
    tier = "screformer_uhaf_tier1"
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    pd.testing.assert_series_equal(
        out.obs[f"{tier}_prediction"], expected.obs[f"{tier}_prediction"]
    )
    np.testing.assert_allclose(
        out.obsm[f"{tier}_probabilities"], expected.obsm[f"{tier}_probabilities"], atol=1e-5
    )
    assert list(out.uns[tier]["classes"]) == ["Cardiomyocyte cell", "Fibroblast"]
    table = pd.read_csv(tmp_path / "out.csv", index_col="cell")
    assert (table[f"{tier}_prediction"] == expected.obs[f"{tier}_prediction"].astype(str)).all()
