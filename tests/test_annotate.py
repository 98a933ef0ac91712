import warnings

import anndata as ad
import numpy as np
import pytest
from scipy import sparse

import screformer
from screformer.module import ReformerConfig
from screformer.tl import UNASSIGNED

from .conftest import TINY, TINY_TRAIN, make_counts

KEYS = {
    "obs": {"screformer_prediction", "screformer_confidence", "screformer_novelty"},
    "obsm": {"screformer_probabilities"},
    "uns": {"screformer", "screformer_prediction_colors"},
}


def _keys(adata):
    return {
        "obs": set(adata.obs.columns),
        "obsm": set(adata.obsm.keys()),
        "uns": set(adata.uns.keys()),
        "layers": set(adata.layers.keys()),
        "var": set(adata.var.columns),
    }


def _annotate(adata, *args, **kwargs):
    return screformer.tl.annotate(adata, *args, config=TINY, **(TINY_TRAIN | kwargs))


def test_a_config_object_is_trained_as_given(counts_adata):
    config = ReformerConfig(n_genes=1, encoder_dropout=0.0, **TINY)
    model = screformer.tl.annotate(counts_adata, "cell_type", config=config, **TINY_TRAIN)
    assert model.config.encoder_dropout == 0.0 and model.config.dim == TINY["dim"]


def test_writes_exactly_the_documented_keys(counts_adata, tmp_path):
    before = _keys(counts_adata)
    X_before = counts_adata.X.copy()
    model = _annotate(counts_adata, "cell_type")
    after = _keys(counts_adata)
    for where in ("obs", "obsm", "uns"):
        assert after[where] - before[where] == KEYS[where]
    assert after["layers"] == before["layers"] and after["var"] == before["var"]
    assert (counts_adata.X != X_before).nnz == 0

    uns = counts_adata.uns["screformer"]
    assert uns["classes"] == model.classes
    assert uns["gene_overlap"]["n_found"] == 40
    assert uns["input_kind"] == "counts"
    assert uns["model_config"]["dim"] == 8
    assert uns["versions"]["screformer"] == screformer.__version__ and "torch" in uns["versions"]
    prediction = counts_adata.obs["screformer_prediction"]
    assert list(prediction.cat.categories) == [*model.classes, UNASSIGNED]
    probabilities = counts_adata.obsm["screformer_probabilities"]
    assert probabilities.shape == (counts_adata.n_obs, 3)
    np.testing.assert_allclose(
        counts_adata.obs["screformer_confidence"], probabilities.max(1), rtol=1e-6
    )
    low = probabilities.max(1) < 0.5
    assert (prediction[low] == UNASSIGNED).all()
    assert (
        prediction[~low].astype(str) == np.array(model.classes)[probabilities[~low].argmax(1)]
    ).all()
    assert uns["n_unassigned"] == int(low.sum())
    # The result is writable to h5ad and reads back.
    counts_adata.write_h5ad(tmp_path / "out.h5ad")
    back = ad.read_h5ad(tmp_path / "out.h5ad")
    assert back.uns["screformer"]["classes"].tolist() == model.classes


def test_threshold_controls_unassigned(counts_adata):
    with pytest.warns(UserWarning, match="cells .100%. are Unassigned"):
        model = _annotate(counts_adata, "cell_type", unassigned_threshold=1.0)
    assert (counts_adata.obs["screformer_prediction"] == UNASSIGNED).all()
    screformer.tl.annotate(counts_adata, model=model, unassigned_threshold=0.0, key_added="again")
    assert not (counts_adata.obs["again_prediction"] == UNASSIGNED).any()


def test_unlabelled_cells_are_predicted_not_trained(counts_adata):
    counts_adata.obs["partial"] = counts_adata.obs["cell_type"].astype(object)
    counts_adata.obs.iloc[::3, -1] = None  # missing labels count as unlabelled
    counts_adata.obs.iloc[1::3, -1] = "Unknown"
    model = _annotate(counts_adata, "partial")
    assert model.train_params_["n_train_cells"] + model.train_params_["n_validation_cells"] == 20
    assert counts_adata.obs["screformer_prediction"].notna().all()


def test_reference_and_copy(counts_adata):
    reference = make_counts(seed=1)
    query = counts_adata[:, ::-1].copy()  # other gene order
    del query.obs["cell_type"]
    before = _keys(query)
    out, model = _annotate(query, "cell_type", reference=reference, copy=True)
    assert isinstance(out, ad.AnnData) and model.is_trained_
    assert _keys(query) == before  # copy=True leaves the input alone
    assert "screformer_prediction" in out.obs
    assert out.uns["screformer"]["params"]["reference"]


def test_all_zero_cells_are_unassigned(counts_adata):
    X = counts_adata.X.toarray()
    X[0] = 0
    counts_adata.X = sparse.csr_matrix(X)
    _annotate(counts_adata, "cell_type", unassigned_threshold=0.0)
    assert counts_adata.obs["screformer_prediction"].iloc[0] == UNASSIGNED


@pytest.mark.parametrize(
    "mutate, kwargs, error",
    [
        (lambda a: None, dict(labels_key="missing"), KeyError),
        (lambda a: None, dict(labels_key="cell_type", unassigned_threshold=1.5), ValueError),
        (lambda a: None, dict(labels_key="cell_type", unassigned_threshold="low"), ValueError),
        (lambda a: a.X.data.__setitem__(0, -3.0), dict(labels_key="cell_type"), ValueError),
        (lambda a: a.X.data.__setitem__(0, np.nan), dict(labels_key="cell_type"), ValueError),
        (lambda a: None, dict(), ValueError),
        (lambda a: None, dict(labels_key="cell_type", layer="counts"), KeyError),
        (lambda a: None, dict(labels_key="cell_type", use_raw=True), (ValueError, "raw is None")),
        (
            lambda a: setattr(a, "raw", a),
            dict(labels_key="cell_type", use_raw=True, layer="c"),
            (ValueError, "pass one of them"),
        ),
    ],
)
def test_failures_leave_adata_untouched(mutate, kwargs, error):
    adata = make_counts()
    mutate(adata)
    before, X_before = _keys(adata), adata.X.copy()
    error, match = error if isinstance(error, tuple) else (error, None)
    with pytest.raises(error, match=match):
        _annotate(adata, **kwargs)
    assert _keys(adata) == before
    np.testing.assert_array_equal(adata.X.toarray(), X_before.toarray())


def test_query_without_shared_genes_fails_before_training(counts_adata):
    query = counts_adata.copy()
    query.var_names = [f"X{i}" for i in range(query.n_vars)]
    before = _keys(query)
    with pytest.raises(ValueError, match="share 0 genes"):
        _annotate(query, "cell_type", reference=counts_adata)
    assert _keys(query) == before


def test_view_is_refused_unless_copy(counts_adata):
    view = counts_adata[:30]
    with pytest.raises(ValueError, match="view"):
        _annotate(view, "cell_type")
    assert "screformer_prediction" not in counts_adata.obs


def test_trained_model_reads_the_query_layer(counts_adata):
    model = _annotate(counts_adata, "cell_type")
    query = make_counts(seed=2)
    query.layers["counts"] = query.X.copy()
    query.X = query.X * -1.0  # X is unusable; the counts are in a layer
    screformer.tl.annotate(query, model=model, layer="counts")
    assert query.uns["screformer"]["params"]["layer"] == "counts"
    with pytest.raises(ValueError, match="negative"):
        screformer.tl.annotate(query, model=model, key_added="x")


def test_use_raw_reads_the_genes_kept_in_raw(tmp_path):
    model = _annotate(make_counts(n_genes=240), "cell_type")
    full = make_counts(n_genes=240, seed=2)
    query = full.copy()
    query.raw = full
    query = query[:, :110].copy()  # X cut to 110 of the panel's 240 genes; raw keeps them all
    with pytest.warns(
        UserWarning, match="adata.raw holds 240 of the model's 240 panel genes, wh"
    ) as hint:
        screformer.tl.annotate(query, model=model, key_added="cut")
    assert query.uns["cut"]["gene_overlap"]["n_found"] == 110
    assert [w.filename for w in hint if "adata.raw" in str(w.message)] == [__file__]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        screformer.tl.annotate(query, model=model, use_raw=True)
    assert not [w for w in seen if "adata.raw holds" in str(w.message)]
    screformer.tl.annotate(full, model=model)
    # Labelled as the cells with all their genes, the results written into the cut AnnData.
    np.testing.assert_array_equal(
        query.obsm["screformer_probabilities"], full.obsm["screformer_probabilities"]
    )
    assert query.uns["screformer"]["gene_overlap"]["n_found"] == 240
    assert query.uns["screformer"]["params"]["use_raw"] is True
    assert query.n_vars == 110
    # Too few panel genes in X is an error, and the hint comes with it.
    with pytest.warns(UserWarning, match="adata.raw holds 240"):
        with pytest.raises(ValueError, match="Only 50 of the model's 240"):
            screformer.tl.annotate(query[:, :50].copy(), model=model)
    # A backed file's raw is refused as the file itself is, before any work.
    query.write_h5ad(tmp_path / "cut.h5ad")
    backed = ad.read_h5ad(tmp_path / "cut.h5ad", backed="r")
    with pytest.raises(ValueError, match="backed"):
        screformer.tl.annotate(backed, model=model, use_raw=True, copy=True)


def _heart_like(adata):
    """The three synthetic types renamed as heart labels at two depths of the uHAF tree."""
    names = {
        "alpha": "Atrial_Cardiomyocyte",
        "beta": "Ventricular_Cardiomyocyte",
        "gamma": "Fibroblasts",
    }
    adata.obs["cell_type"] = adata.obs["cell_type"].map(names).astype("category")
    return adata


def test_uhaf_both_levels_from_one_model(counts_adata, tmp_path):
    adata = _heart_like(counts_adata)
    # No dropout and a higher learning rate: the tiny model then learns these cells reliably.
    model = screformer.tl.annotate(
        adata,
        "cell_type",
        uhaf_organ="Heart",
        unassigned_threshold=0,
        novelty_threshold=None,
        config=TINY | dict(gene_dropout=0.0, head_dropout=0.0),
        **(TINY_TRAIN | dict(max_epochs=10, lr=1e-2)),
    )
    assert model.classes == ["Atrial_Cardiomyocyte", "Fibroblasts", "Ventricular_Cardiomyocyte"]
    tier = adata.obs["cell_type_uhaf_tier1"].astype(str)
    assert set(tier) == {"Cardiomyocyte cell", "Fibroblast"}
    assert (tier[adata.obs["cell_type"] == "Atrial_Cardiomyocyte"] == "Cardiomyocyte cell").all()
    predicted = adata.obs["screformer_uhaf_tier1_prediction"].astype(str)
    assert set(predicted) <= {"Cardiomyocyte cell", "Fibroblast"}
    assert (predicted == tier).mean() > 0.9  # fibroblasts are separable by their markers
    # Both levels from one model: the fine call always lies within the tier call.
    fine = adata.obs["screformer_prediction"].astype(str)
    assigned = fine != UNASSIGNED
    assert (fine[assigned].map(model.uhaf_["mapping"]) == predicted[assigned]).all()
    tier_probabilities = adata.obsm["screformer_uhaf_tier1_probabilities"]
    np.testing.assert_allclose(tier_probabilities.sum(1), 1, rtol=1e-5)
    cardio = adata.obsm["screformer_probabilities"][:, [0, 2]].sum(1)
    np.testing.assert_allclose(tier_probabilities[:, 0], cardio, rtol=1e-5)
    assert adata.uns["screformer_uhaf_tier1"]["classes"] == ["Cardiomyocyte cell", "Fibroblast"]
    uns = adata.uns["screformer"]["uhaf"]
    assert uns["organ"] == "Heart" and uns["tier"] == 1
    assert uns["mapping"]["Ventricular_Cardiomyocyte"] == "Cardiomyocyte cell"
    # The mapping travels with the model: a saved and reloaded model writes both levels.
    model.save(tmp_path / "m")
    query = adata.copy()
    screformer.tl.annotate(query, model=str(tmp_path / "m"), unassigned_threshold=0)
    assert (query.obs["screformer_uhaf_tier1_prediction"].astype(str) == predicted).mean() > 0.9
    evaluation = screformer.tl.evaluate(query, "cell_type_uhaf_tier1", "screformer_uhaf_tier1")
    assert evaluation["accuracy"] > 0.9


def test_uhaf_unmapped_label_fails_before_training(counts_adata):
    adata = _heart_like(counts_adata)
    adata.obs["cell_type"] = adata.obs["cell_type"].cat.rename_categories(
        {"Fibroblasts": "Blob cells"}
    )
    before = set(adata.obs.columns)
    with pytest.raises(ValueError, match="'Blob cells'.*uhaf_mapping"):
        _annotate(adata, "cell_type", uhaf_organ="Heart")
    assert set(adata.obs.columns) == before and "screformer" not in adata.uns
    model = _annotate(
        adata, "cell_type", uhaf_organ="Heart", uhaf_mapping={"Blob cells": "Fibroblast"}
    )
    assert model.uhaf_["mapping"]["Blob cells"] == "Fibroblast"


def test_uhaf_with_a_trained_model_is_refused(counts_adata):
    with pytest.raises(ValueError, match="uhaf_organ"):
        screformer.tl.annotate(counts_adata, model="somewhere", uhaf_organ="Heart")


def test_majority_voting_takes_each_clusters_most_common_call(counts_adata):
    counts_adata.obs["clusters"] = np.repeat(["a", "b", "c"], 20)[: counts_adata.n_obs]
    _annotate(counts_adata, "cell_type", majority_voting=True, over_clustering="clusters")
    obs = counts_adata.obs
    assert (obs["screformer_over_clustering"].astype(str) == obs["clusters"]).all()
    for _, cells in obs.groupby("clusters", observed=True):
        calls = cells["screformer_prediction"].astype(str)
        voted = set(cells["screformer_majority_voting"].astype(str))
        assert voted == {calls.value_counts().sort_index().idxmax()}
    assert counts_adata.uns["screformer"]["params"]["majority_voting"]


def test_majority_voting_clusters_when_no_clustering_is_given(counts_adata):
    _annotate(counts_adata, "cell_type", majority_voting=True)
    clusters = counts_adata.obs["screformer_over_clustering"]
    assert 1 < clusters.nunique() < counts_adata.n_obs
    assert counts_adata.obs["screformer_majority_voting"].notna().all()


def test_majority_voting_needs_a_real_column(counts_adata):
    with pytest.raises(KeyError, match="over_clustering='nope'"):
        _annotate(counts_adata, "cell_type", majority_voting=True, over_clustering="nope")
    assert "screformer" not in counts_adata.uns


def test_novelty_calls_cells_unlike_any_training_type_unassigned():
    # Four types with strong markers over a weak background; the fourth is never labelled.
    rng = np.random.default_rng(0)
    types = np.repeat(["alpha", "beta", "gamma", "delta"], [40, 40, 40, 5])
    rate = np.full((len(types), 40), 0.3)
    for k, t in enumerate(["alpha", "beta", "gamma", "delta"]):
        rate[types == t, 10 * k : 10 * k + 10] = 40.0
    query = ad.AnnData(sparse.csr_matrix(rng.poisson(rate).astype(np.float32)))
    query.var_names = [f"GENE{j}" for j in range(40)]
    order = np.r_[120:125, 0:120]  # the delta cells first
    query = query[order].copy()
    query.obs["cell_type"] = np.where(types[order] == "delta", "Unknown", types[order])
    counts_adata = query.copy()
    # A model that learns these cells (as in the uHAF test): validation calls are then right.
    learn = dict(config=TINY | dict(gene_dropout=0.0, head_dropout=0.0), max_epochs=10, lr=1e-2)

    def _annotate(adata, *args, **kwargs):
        return screformer.tl.annotate(adata, *args, **(TINY_TRAIN | learn | kwargs))

    model = _annotate(query, "cell_type", unassigned_threshold=0)
    # 12 validation cells cannot resolve 0.99 for three kinds of evidence: expression alone.
    assert model.novelty_.combined_calibration is None
    novelty = query.obs["screformer_novelty"].to_numpy()
    assert ((novelty >= 0) & (novelty <= 1)).all()
    assert (novelty[:5] == 1).all() and np.median(novelty[5:]) < 0.9
    assert (query.obs["screformer_prediction"][:5] == UNASSIGNED).all()
    assert query.uns["screformer"]["params"]["novelty_threshold"] == 0.99

    # With a reference ("auto": off) the score is written but calls nothing Unassigned.
    reference = counts_adata.copy()
    query.obs = query.obs.drop(columns="cell_type")
    _annotate(query, "cell_type", reference=reference, unassigned_threshold=0, key_added="ref")
    assert (query.obs["ref_novelty"][:5] == 1).all()
    assert not (query.obs["ref_prediction"] == UNASSIGNED).any()
    assert "novelty_threshold" not in query.uns["ref"]["params"]


def test_auto_threshold_is_lower_with_a_reference_or_a_trained_model(counts_adata):
    query = counts_adata.copy()
    model = _annotate(counts_adata, "cell_type")
    assert counts_adata.uns["screformer"]["params"]["unassigned_threshold"] == 0.5
    other = counts_adata.copy()
    screformer.tl.annotate(other, model=model)
    assert other.uns["screformer"]["params"]["unassigned_threshold"] == 0.1
    query.obs = query.obs.drop(columns="cell_type")
    _annotate(query, "cell_type", reference=counts_adata)
    assert query.uns["screformer"]["params"]["unassigned_threshold"] == 0.1
    confidence = query.obs["screformer_confidence"].to_numpy()
    unassigned = (query.obs["screformer_prediction"] == UNASSIGNED).to_numpy()
    np.testing.assert_array_equal(unassigned, confidence < 0.1)
    # A tiny model is unsure: at scBERT's 0.5 the same cells would not all be called.
    assert (confidence < 0.5).any()


def test_annotation_result_writes_only_into_its_own_cells(counts_adata):
    from screformer.tl import AnnotationResult

    model = _annotate(counts_adata, "cell_type")
    prepared = model.prepare(counts_adata)
    from screformer.tl._annotate import label_cells

    result = label_cells(model, prepared, counts_adata.obs_names, 0.5, None, "screformer")
    assert isinstance(result, AnnotationResult)
    assert list(result.probabilities.columns) == model.classes
    assert list(result.predictions.columns) == [
        "screformer_prediction",
        "screformer_confidence",
        "screformer_novelty",
    ]
    with pytest.raises(ValueError, match="not the cells"):
        result.to_adata(counts_adata[::-1].copy())


def test_a_fit_that_learned_nothing_is_reported(counts_adata):
    with pytest.warns(UserWarning, match="no better than calling every cell"):
        model = _annotate(counts_adata, "cell_type", max_epochs=1, lr=1e-9, validation_size=0.5)
    assert model.train_params_["validation_accuracy"] <= 1 / 3 + 0.2


def test_mouse_symbols_against_a_human_panel_are_reported(counts_adata):
    human = counts_adata.copy()
    human.var_names = [f"CD{j}A" for j in range(human.n_vars)]
    model = _annotate(human, "cell_type")
    mouse = human.copy()
    mouse.var_names = [f"Cd{j}a" for j in range(mouse.n_vars)]
    with pytest.warns(UserWarning, match="look mouse .* and the model's human"):
        screformer.tl.annotate(mouse, model=model)


def test_predictions_are_drawn_in_the_labels_colours(counts_adata):
    counts_adata.uns["cell_type_colors"] = ["#ff0000", "#00ff00", "#0000ff"]
    _annotate(counts_adata, "cell_type", majority_voting=True)
    colours = ["#ff0000", "#00ff00", "#0000ff", "#d3d3d3"]  # Unassigned in grey
    assert list(counts_adata.uns["screformer_prediction_colors"]) == colours
    assert list(counts_adata.uns["screformer_majority_voting_colors"]) == colours
