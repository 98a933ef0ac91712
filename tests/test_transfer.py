"""Transfer: value encodings, the shared-gene panel, augmentation, low-overlap warnings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import torch
from scipy import sparse

import screformer
from screformer.data import Augmentation, tokenize
from screformer.data._tokens import CellCollate, thin_depth
from screformer.module import ReformerConfig
from screformer.pp import prepare, relative_bins

from .conftest import TINY, TINY_TRAIN, make_counts


def _lognormalised(adata, target_sum):
    out = adata.copy()
    sc.pp.normalize_total(out, target_sum=target_sum)
    sc.pp.log1p(out)
    return out


@pytest.mark.parametrize("target_sum", [1e4, None])  # None: Scanpy's default, the median total
def test_relative_tokens_are_identical_for_counts_and_lognormalised_values(target_sum):
    counts = make_counts(n_per_class=10)
    genes = list(counts.var_names)
    config = ReformerConfig(n_genes=len(genes), value_encoding="relative", top_bin=7)
    a = tokenize(prepare(counts, genes).X, config)
    b = tokenize(prepare(_lognormalised(counts, target_sum), genes).X, config)
    for key in ("gene_ids", "bins", "mask"):
        assert torch.equal(a[key], b[key])
    assert a["bins"][a["mask"]].min() == 1 and a["bins"][a["mask"]].max() == 7


def test_relative_bins_depend_on_order_within_the_cell_only():
    X = sparse.csr_matrix(np.array([[1.0, 0, 1, 4, 9, 0], [0, 3, 0, 0, 0, 30]]))
    bins = relative_bins(X, top_bin=4)
    assert bins.tolist() == [1, 1, 3, 4, 1, 3]  # ties share a bin; 1 .. top_bin
    scaled = X.multiply(np.array([[7.0], [0.01]])).tocsr()
    np.testing.assert_array_equal(relative_bins(np.log1p(scaled), top_bin=4), bins)


def test_absolute_values_of_median_normalised_input_match_counts():
    counts = make_counts(n_per_class=10)
    genes = list(counts.var_names)
    expected = prepare(counts, genes).X.toarray()
    got = prepare(_lognormalised(counts, None), genes).X.toarray()
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_old_checkpoint_configs_keep_scberts_absolute_bins():
    old = ReformerConfig(n_genes=10).to_dict()
    del old["value_encoding"]
    assert ReformerConfig.from_dict(old).value_encoding == "absolute"
    assert ReformerConfig(n_genes=10).value_encoding == "relative"
    with pytest.raises(ValueError, match="value_encoding"):
        ReformerConfig(n_genes=10, value_encoding="ranks")


def test_value_embedding_sees_magnitudes_the_relative_bins_drop():
    from screformer.module import SCReformerModule

    config = ReformerConfig(n_genes=6, value_embedding=True, **TINY)
    module = SCReformerModule(config, n_classes=2).eval()
    # Same genes in the same order: the same relative bins, values ten times apart.
    low = tokenize(sparse.csr_matrix([[1.0, 2.0, 0, 3.0, 0, 0]]), config)
    high = tokenize(sparse.csr_matrix([[10.0, 20.0, 0, 30.0, 0, 0]]), config)
    assert torch.equal(low["bins"], high["bins"])
    embed = module.embedding
    assert not torch.allclose(
        embed(low["gene_ids"], low["bins"], low["values"]),
        embed(high["gene_ids"], high["bins"], high["values"]),
    )
    # A masked token shows no value, and a model that embeds values refuses tokens without.
    masked = torch.full_like(low["bins"], config.mask_bin)
    assert torch.allclose(
        embed(low["gene_ids"], masked, low["values"]),
        embed(high["gene_ids"], masked, high["values"]),
    )
    with pytest.raises(ValueError, match="values"):
        embed(low["gene_ids"], low["bins"])
    # The value embedding learns: the class logits' gradient reaches it.
    with module.encoder.irreversible():
        module(low["gene_ids"], low["bins"], low["mask"], low["values"]).sum().backward()
    assert embed.value.table.grad.abs().sum() > 0
    old = config.to_dict()
    del old["value_embedding"]
    assert not ReformerConfig.from_dict(old).value_embedding


def test_model_with_value_embedding_trains_saves_and_explains(tmp_path):
    adata = make_counts(n_per_class=10)
    model = screformer.tl.annotate(
        adata, "cell_type", config=dict(TINY, value_embedding=True), **TINY_TRAIN
    )
    model.save(tmp_path / "m")
    loaded = screformer.SCReformer.load(tmp_path / "m", adata)
    assert loaded.config.value_embedding
    np.testing.assert_allclose(
        loaded.predict_proba(loaded.prepare(adata)), model.predict_proba(model.prepare(adata))
    )
    ranks = screformer.tl.shap_markers(
        adata, model, "cell_type", n_cells=2, n_background=5, nsamples=4
    )
    table = next(iter(ranks.values()))
    assert np.isfinite(table["mean_abs_shap"]).all() and table["mean_abs_shap"].max() > 0


def test_head_bins_reads_each_genes_level_beside_the_encoder():
    from screformer.module import SCReformerModule

    config = ReformerConfig(n_genes=6, head_bins=True, **TINY)
    module = SCReformerModule(config, n_classes=2).eval()
    head = module.classifier
    with torch.no_grad():  # silence the encoder's route: what differs must come from the levels
        head.conv.weight.zero_(), head.conv.bias.zero_(), head.absent_value.zero_()
    low = tokenize(sparse.csr_matrix([[1.0, 2.0, 0, 3.0, 0, 0]]), config)
    high = tokenize(sparse.csr_matrix([[3.0, 2.0, 0, 1.0, 0, 0]]), config)
    assert not torch.equal(low["bins"], high["bins"])

    def logits(tokens, unmeasured=None):
        return module(tokens["gene_ids"], tokens["bins"], tokens["mask"], unmeasured=unmeasured)

    assert not torch.allclose(logits(low), logits(high))
    # The MLP reads bin / top_bin per gene, 0 for genes that are not tokens.
    hidden = torch.zeros(1, low["gene_ids"].shape[1], config.dim)
    levels = head.bin_levels(low["bins"])
    read = head.gene_values(hidden, low["gene_ids"], levels=levels)[0, config.n_genes :]
    expected = torch.zeros(config.n_genes)
    expected[low["gene_ids"][low["mask"]]] = low["bins"][low["mask"]].float() / config.top_bin
    assert torch.equal(read, expected) and 0 < read.max() <= 1
    # Genes the query lacks are no evidence in either half: the two cells differ only there.
    unmeasured = torch.tensor([True, False, False, True, False, False])
    assert torch.allclose(logits(low, unmeasured), logits(high, unmeasured))
    with pytest.raises(ValueError, match="levels"):
        head(hidden, low["gene_ids"])
    old = config.to_dict()
    del old["head_bins"], old["encoder_dropout"]  # both unknown to such checkpoints
    assert not ReformerConfig.from_dict(old).head_bins


def test_model_with_head_bins_trains_saves_predicts_partial_queries_and_explains(tmp_path):
    adata = make_counts(n_per_class=10)
    model = screformer.tl.annotate(
        adata, "cell_type", config=dict(TINY, head_bins=True), **TINY_TRAIN
    )
    model.save(tmp_path / "m")
    loaded = screformer.SCReformer.load(tmp_path / "m", adata)
    assert loaded.config.head_bins
    np.testing.assert_allclose(
        loaded.predict_proba(loaded.prepare(adata)), model.predict_proba(model.prepare(adata))
    )
    partial = adata[:, 5:].copy()  # a query that lacks some panel genes: they read as 0
    probabilities = loaded.predict(partial, soft=True).to_numpy()
    np.testing.assert_allclose(probabilities.sum(1), 1, rtol=1e-5)
    ranks = screformer.tl.shap_markers(
        adata, model, "cell_type", n_cells=2, n_background=5, nsamples=4
    )
    table = next(iter(ranks.values()))
    assert np.isfinite(table["mean_abs_shap"]).all() and table["mean_abs_shap"].max() > 0
    # SHAP attributes the levels the head reads too: with the encoder's route silenced, the
    # genes still get values.
    head = model.module.classifier
    with torch.no_grad():
        head.conv.weight.zero_(), head.conv.bias.zero_(), head.absent_value.zero_()
    ranks = screformer.tl.shap_markers(
        adata, model, "cell_type", n_cells=2, n_background=5, nsamples=4
    )
    assert next(iter(ranks.values()))["mean_abs_shap"].max() > 0


def test_reference_mode_trains_on_the_shared_genes_in_reference_order():
    reference = make_counts(seed=1)
    query = make_counts(seed=2)[:, 10:].copy()  # the query lacks the reference's first genes
    query = query[:, ::-1].copy()
    model = screformer.tl.annotate(
        query, "cell_type", reference=reference, config=TINY, **TINY_TRAIN
    )
    expected = [g for g in reference.var_names if g in set(query.var_names)]
    assert model.gene_panel == expected
    overlap = query.uns["screformer"]["gene_overlap"]
    assert overlap["n_panel_genes"] == overlap["n_found"] == len(expected) == 30


def test_reference_mode_refuses_too_few_shared_genes():
    reference = make_counts()
    query = reference[:, :5].copy()
    with pytest.raises(ValueError, match="share 5 genes"):
        screformer.tl.shared_genes(reference, query)


def test_a_pretrained_encoder_fine_tuned_for_a_query_uses_only_the_querys_genes(tmp_path):
    reference = make_counts(n_per_class=10)
    screformer.SCReformer.setup_anndata(reference, labels_key="cell_type")
    encoder = screformer.SCReformer(reference, **TINY)
    path = tmp_path / "encoder.pt"
    encoder.save(tmp_path)
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    payload["classes"] = []  # what screformer.pretrain writes: an encoder without cell types
    torch.save(payload, path)
    query = make_counts(seed=3)[:, :25].copy()
    model = screformer.tl.annotate(
        query, "cell_type", reference=reference, model=path, **TINY_TRAIN
    )
    assert len(model.gene_panel) == 40  # the encoder's panel is fixed ...
    assert model.train_params_["only_genes"] == 25  # ... but training saw the query's genes


def test_augmentation_drops_whole_genes_and_thins_depth():
    counts = make_counts(n_per_class=20)
    X = prepare(counts, list(counts.var_names)).X
    drop = Augmentation(gene_keep=(0.5, 0.5), p_genes=1.0, p_depth=0.0)
    out = drop(X, np.random.default_rng(0))
    kept = np.unique(out.indices)
    assert 0 < len(kept) < X.shape[1]
    # A dropped gene is gone from every cell; the kept genes' values are unchanged.
    np.testing.assert_array_equal(out.toarray(), X.toarray() * np.isin(np.arange(40), kept))

    rng = np.random.default_rng(0)
    half = thin_depth(X, np.full(X.shape[0], 0.5), rng)
    linear = np.exp2(half) - 1
    unit = (np.exp2(X.data) - 1) / counts.X.tocsr().data  # 1e4 / the cell's total
    thinned_counts = np.rint(linear / (2 * unit)).sum()
    assert 0.45 < thinned_counts / counts.X.sum() < 0.55
    untouched = Augmentation(p_genes=0.0, p_depth=0.0)(X, rng)
    np.testing.assert_array_equal(untouched.toarray(), X.toarray())


def test_max_depth_thins_a_deep_cell_from_that_depth():
    # Cell 0 holds 200,020 counts (20 genes at 1, 20 at 10,000), cell 1 holds 400.
    counts = np.zeros((2, 40))
    counts[0] = [1] * 20 + [10_000] * 20
    counts[1] = [10] * 40
    genes = [f"G{i}" for i in range(40)]
    X = prepare(sc.AnnData(counts, var=pd.DataFrame(index=genes)), genes).X
    whole = np.ones(2)  # thinning to the whole depth: only the cap thins
    uncapped = thin_depth(X, whole, np.random.default_rng(0))
    np.testing.assert_allclose(uncapped, X.data, rtol=1e-5)
    capped = thin_depth(X, whole, np.random.default_rng(0), max_depth=2_000)
    deep, shallow = capped[:40], capped[40:]
    # From 2,000 counts a 1-count gene survives with probability 1%: few of the 20 do; the
    # 10,000-count genes all stay. The cell under the cap is left as it was.
    assert (deep[:20] > 0).sum() <= 3 and (deep[20:] > 0).all()
    np.testing.assert_allclose(shallow, X.data[40:], rtol=1e-5)
    assert Augmentation().max_depth == 20_000


def test_variable_share_keeps_the_head_of_the_gene_order():
    counts = make_counts(n_per_class=20)
    X = prepare(counts, list(counts.var_names)).X
    order = np.arange(40)[::-1]  # gene 39 the most variable
    top = dict(gene_keep=(0.25, 0.25), p_genes=1.0, p_depth=0.0, variable_share=1.0)
    out, dropped = Augmentation(**top, gene_order=order).apply(X, np.random.default_rng(0))
    np.testing.assert_array_equal(np.flatnonzero(~dropped), np.arange(30, 40))
    np.testing.assert_array_equal(out.toarray(), X.toarray() * ~dropped)
    with pytest.raises(ValueError, match="gene_order"):
        Augmentation(**top)(X, np.random.default_rng(0))


def test_training_ranks_its_own_cells_for_variable_share(monkeypatch):
    import screformer.model._screformer as module

    ranked = []
    rank = module.genes_by_dispersion
    monkeypatch.setattr(module, "genes_by_dispersion", lambda X: ranked.append(X.shape) or rank(X))
    adata = make_counts(n_per_class=20)
    screformer.SCReformer.setup_anndata(adata, labels_key="cell_type")
    model = screformer.SCReformer(adata, **TINY)
    model.train(**(TINY_TRAIN | dict(augment=True, validation_size=0.25)))
    assert ranked == []  # the default augmentation draws random genes only
    top = Augmentation(variable_share=0.5)
    model.train(**(TINY_TRAIN | dict(augment=top, validation_size=0.25)))
    assert ranked == [(45, 40)]  # the 45 training cells, not the 15 validation cells


def test_mark_unmeasured_tells_the_batch_which_genes_it_lost():
    counts = make_counts(n_per_class=20)
    X = prepare(counts, list(counts.var_names)).X
    config = ReformerConfig(n_genes=X.shape[1])
    drop = dict(gene_keep=(0.5, 0.5), p_genes=1.0, p_depth=0.0)
    marked = CellCollate(X, config, augment=Augmentation(**drop, mark_unmeasured=True))(range(8))
    lost = marked["unmeasured"].numpy()
    assert 0 < lost.sum() < X.shape[1]
    kept_genes = np.unique(marked["gene_ids"][marked["mask"]].numpy())
    assert not lost[kept_genes].any()  # a gene still in the batch is not marked
    plain = CellCollate(X, config, augment=Augmentation(**drop))(range(8))
    assert "unmeasured" not in plain


def test_training_with_augmentation_still_learns():
    adata = make_counts(n_per_class=30)
    screformer.SCReformer.setup_anndata(adata, labels_key="cell_type")
    model = screformer.SCReformer(adata, **TINY)
    # 25 epochs: with encoder dropout (the default) half of each batch learns from the levels
    # alone, and this tiny model needs more than 15 epochs (enough without it).
    model.train(**(TINY_TRAIN | dict(max_epochs=25, augment=True)))
    assert model.train_params_["augment"]
    assert (model.predict() == adata.obs["cell_type"].to_numpy()).mean() > 0.8


def test_prediction_warns_when_the_query_holds_few_panel_genes():
    adata = make_counts(n_genes=300)
    screformer.SCReformer.setup_anndata(adata, labels_key="cell_type")
    model = screformer.SCReformer(adata, **TINY)
    model.train(**TINY_TRAIN)
    query = adata[:, :120].copy()
    with pytest.warns(UserWarning, match="120 of the model's 300 panel genes"):
        screformer.tl.annotate(query, model=model)


def test_panel_genes_the_query_lacks_are_unmeasured_not_zero():
    adata = make_counts()
    screformer.SCReformer.setup_anndata(adata, labels_key="cell_type")
    model = screformer.SCReformer(adata, **TINY)
    model.train(**TINY_TRAIN)
    zeroed = adata.copy()
    zeroed.X[:, :10] = 0  # measured, at zero
    lacking = zeroed[:, 10:].copy()  # the same values, the first ten genes not measured
    as_zero, as_unmeasured = model.prepare(zeroed), model.prepare(lacking)
    np.testing.assert_array_equal(as_zero.X.toarray(), as_unmeasured.X.toarray())
    assert as_unmeasured.alignment.unmeasured.tolist() == [True] * 10 + [False] * 30
    assert not as_zero.alignment.unmeasured.any()
    assert not np.allclose(model.predict_proba(as_zero), model.predict_proba(as_unmeasured))
    # The whole prediction path reads them so, novelty included (two genes: without ten genes
    # every cell of this tiny model is novel either way).
    zeroed.X[:, 2:10] = adata.X[:, 2:10]
    lacking = zeroed[:, 2:].copy()
    _, novelty_zero = model.predict_proba_and_novelty(model.prepare(zeroed))
    _, novelty_unmeasured = model.predict_proba_and_novelty(model.prepare(lacking))
    assert not np.allclose(novelty_zero, novelty_unmeasured)


def test_variable_genes_of_pbmc3k_hold_its_markers_whatever_the_input_scaling():
    counts = screformer.datasets.pbmc3k()
    genes = screformer.pp.variable_genes(counts, 2000)
    assert len(genes) == 2000 and genes == [g for g in counts.var_names if g in set(genes)]
    assert {"MS4A1", "LYZ", "NKG7", "GNLY", "PPBP", "FCGR3A", "FCER1A"} <= set(genes)
    assert screformer.pp.variable_genes(_lognormalised(counts, None), 2000) == genes
    assert screformer.pp.variable_genes(counts, 20_000) == list(counts.var_names)


def test_reference_mode_chooses_variable_genes_among_the_shared_ones():
    reference = make_counts(seed=1)
    query = make_counts(seed=2)[:, 3:].copy()  # lacks the reference's first three genes
    model = screformer.tl.annotate(
        query, "cell_type", reference=reference, n_top_genes=12, config=TINY, **TINY_TRAIN
    )
    shared = list(reference.var_names[3:])
    assert model.gene_panel == screformer.pp.variable_genes(reference, 12, genes=shared)
    assert len(model.gene_panel) == 12 and set(model.gene_panel) <= set(shared)
    assert query.uns["screformer"]["params"]["n_top_genes"] == 12
    with pytest.raises(ValueError, match="n_top_genes"):
        screformer.tl.annotate(query, "cell_type", reference=reference, n_top_genes=0)
