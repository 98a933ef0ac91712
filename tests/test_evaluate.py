import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics

import screformer
from screformer.tl import UNASSIGNED

matplotlib.use("Agg")

CLASSES = ["B", "NK", "T"]


def _annotated() -> ad.AnnData:
    """Fixed predictions and probabilities, as tl.annotate would write them."""
    truth = ["B", "B", "B", "NK", "NK", "T", "T", "T", "T", None]
    probabilities = np.array(
        [
            [0.9, 0.05, 0.05],
            [0.6, 0.3, 0.1],
            [0.2, 0.7, 0.1],
            [0.1, 0.8, 0.1],
            [0.4, 0.3, 0.3],  # best probability under 0.5: Unassigned
            [0.1, 0.1, 0.8],
            [0.05, 0.05, 0.9],
            [0.1, 0.6, 0.3],
            [0.2, 0.1, 0.7],
            [0.3, 0.3, 0.4],
        ]
    )
    predicted = np.array(CLASSES, dtype=object)[probabilities.argmax(1)]
    predicted[probabilities.max(1) < 0.5] = UNASSIGNED
    adata = ad.AnnData(
        np.zeros((10, 2)), obs=pd.DataFrame({"truth": truth}, index=map(str, range(10)))
    )
    adata.obs["screformer_prediction"] = pd.Categorical(
        predicted, categories=[*CLASSES, UNASSIGNED]
    )
    adata.obsm["screformer_probabilities"] = probabilities
    adata.uns["screformer"] = {"classes": CLASSES}
    return adata, np.array(truth[:9]), predicted[:9], probabilities[:9]


def test_metrics_match_scikit_learn():
    adata, truth, predicted, probabilities = _annotated()
    result = screformer.tl.evaluate(adata, "truth")
    assert result["accuracy"] == pytest.approx(metrics.accuracy_score(truth, predicted))
    assert result["macro_f1"] == pytest.approx(
        metrics.f1_score(truth, predicted, labels=CLASSES, average="macro")
    )
    np.testing.assert_allclose(
        result["per_class"]["recall"],
        metrics.recall_score(truth, predicted, labels=CLASSES, average=None),
    )
    for i, c in enumerate(CLASSES):
        assert result["auc"][c] == pytest.approx(
            metrics.roc_auc_score(truth == c, probabilities[:, i])
        )
    assert result["confusion"].loc["NK", UNASSIGNED] == 1
    assert result["confusion"].to_numpy().sum() == 9  # the unlabelled cell is left out
    assert adata.uns["screformer"]["evaluation"]["macro_f1"] == pytest.approx(result["macro_f1"])


def test_plots_return_figures():
    adata, *_ = _annotated()
    fig = screformer.pl.confusion_matrix(adata, "truth", return_fig=True)
    assert fig.axes[0].get_xlabel() == "predicted"
    fig = screformer.pl.roc(adata, "truth", return_fig=True)
    assert len(fig.axes[0].get_lines()) == 4  # three classes and the diagonal


def test_evaluate_needs_results():
    adata, *_ = _annotated()
    with pytest.raises(KeyError, match="tl.annotate"):
        screformer.tl.evaluate(adata, "truth", key_added="other")


def test_stratified_folds_partition():
    labels = ["a"] * 10 + ["b"] * 5
    folds = screformer.tl.stratified_folds(labels, n_splits=5)
    tests = np.concatenate([test for _, test in folds])
    assert sorted(tests.tolist()) == list(range(15))
    assert all(np.sum(np.array(labels)[test] == "b") == 1 for _, test in folds)
