"""``screformer.tl.evaluate``: how well the predictions match known labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from sklearn import metrics
from sklearn.model_selection import StratifiedKFold

from .._docs import doc_params
from .._keys import ResultKeys
from ._annotate import UNASSIGNED


@doc_params()
def evaluate(adata: AnnData, truth_key: str, key_added: str = "screformer") -> dict:
    """Compare ``obs[f"{{key_added}}_prediction"]`` with the known labels ``obs[truth_key]``.

    ``Unassigned`` cells count as errors for accuracy and F1. One-vs-rest AUCs come from the
    stored probabilities, for each model class that has cells of both kinds in ``truth_key``.
    The scores are also stored in ``uns[key_added]["evaluation"]`` (tables as dicts); the plots
    :func:`screformer.pl.confusion_matrix` and :func:`screformer.pl.roc` compute the same
    without storing anything.

    Parameters
    ----------
    {adata}
    {truth_key}
    {key_added}

    Returns
    -------
    dict
        ``accuracy``, ``macro_f1``, ``per_class`` (DataFrame: precision, recall, f1, support
        per true class), ``confusion`` (DataFrame: true classes x predicted classes, counts),
        ``auc`` (Series per class) and ``macro_auc``.

    Examples
    --------
    >>> screformer.tl.annotate(adata, "cell_type")  # doctest: +SKIP
    >>> screformer.tl.evaluate(adata, "cell_type")["macro_f1"]  # doctest: +SKIP
    """
    result = _compute_evaluation(adata, truth_key, key_added)
    adata.uns[key_added]["evaluation"] = {
        "truth_key": truth_key,
        "accuracy": result["accuracy"],
        "macro_f1": result["macro_f1"],
        "macro_auc": result["macro_auc"],
        "per_class_f1": {k: float(v) for k, v in result["per_class"]["f1"].items()},
        "auc": {k: float(v) for k, v in result["auc"].items()},
    }
    return result


def _compute_evaluation(adata: AnnData, truth_key: str, key_added: str = "screformer") -> dict:
    """What :func:`evaluate` returns, computed without writing into ``adata``."""
    keys = ResultKeys(key_added)
    prediction_key = keys.prediction
    if prediction_key not in adata.obs or keys.uns not in adata.uns:
        raise KeyError(f"No screformer results under key_added={key_added!r}: run tl.annotate.")
    if truth_key not in adata.obs:
        raise KeyError(f"truth_key={truth_key!r} is not a column of adata.obs.")
    known = adata.obs[truth_key].notna().to_numpy()
    truth = adata.obs[truth_key].astype(str).to_numpy()[known]
    predicted = adata.obs[prediction_key].astype(str).to_numpy()[known]
    classes = list(adata.uns[keys.uns]["classes"])
    probabilities = np.asarray(adata.obsm[keys.probabilities])[known]

    true_classes = sorted(set(truth))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        truth, predicted, labels=true_classes, zero_division=0
    )
    per_class = pd.DataFrame(
        {"precision": precision, "recall": recall, "f1": f1, "support": support},
        index=pd.Index(true_classes, name="cell type"),
    )
    columns = [c for c in classes if c in set(predicted) | set(truth)]
    columns += sorted(set(predicted) - set(columns) - {UNASSIGNED})
    if UNASSIGNED in set(predicted):
        columns.append(UNASSIGNED)
    confusion = pd.crosstab(
        pd.Categorical(truth, categories=true_classes),
        pd.Categorical(predicted, categories=columns),
        rownames=["true"],
        colnames=["predicted"],
        dropna=False,
    )
    auc = pd.Series(
        {
            c: metrics.roc_auc_score(truth == c, probabilities[:, i])
            for i, c in enumerate(classes)
            if 0 < (truth == c).sum() < len(truth)
        },
        dtype=float,
        name="auc",
    )
    result = {
        "accuracy": float(np.mean(truth == predicted)),
        "macro_f1": float(f1.mean()),
        "per_class": per_class,
        "confusion": confusion,
        "auc": auc,
        "macro_auc": float(auc.mean()) if len(auc) else float("nan"),
    }
    return result


def stratified_folds(
    labels, n_splits: int = 5, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train / test indices of stratified k-fold cross-validation (scikit-learn's splitter).

    Examples
    --------
    >>> folds = stratified_folds(["a"] * 5 + ["b"] * 5, n_splits=5)
    >>> len(folds), [len(test) for _, test in folds]
    (5, [2, 2, 2, 2, 2])
    """
    labels = np.asarray(labels)
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels))
