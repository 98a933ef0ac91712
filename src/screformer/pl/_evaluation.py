"""Evaluation plots: confusion matrix and one-vs-rest ROC curves (scanpy's ax/show/return_fig)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from anndata import AnnData
from sklearn import metrics

from ..tl import evaluate


def _finish(fig, show: bool | None, return_fig: bool):
    if return_fig:
        return fig
    if show is None or show:
        plt.show()
    return None


def confusion_matrix(
    adata: AnnData,
    truth_key: str,
    key_added: str = "screformer",
    *,
    normalize: bool = True,
    ax: plt.Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Heat map of true (rows) against predicted (columns) cell types.

    With ``normalize`` each row is divided by its total, so the diagonal is each type's recall;
    the numbers are printed in the cells.

    Examples
    --------
    >>> screformer.pl.confusion_matrix(adata, "cell_type")  # doctest: +SKIP
    """
    table = evaluate(adata, truth_key, key_added)["confusion"]
    values = table.to_numpy(dtype=float)
    if normalize:
        values = values / np.maximum(values.sum(1, keepdims=True), 1)
    if ax is None:
        size = 0.45 * max(table.shape) + 2
        fig, ax = plt.subplots(figsize=(size + 1, size))
    else:
        fig = ax.figure
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(table.shape[1]), table.columns, rotation=90)
    ax.set_yticks(range(table.shape[0]), table.index)
    ax.set_xlabel("predicted")
    ax.set_ylabel(f"true ({truth_key})")
    for (i, j), v in np.ndenumerate(values):
        if v:
            text = f"{v:.2f}" if normalize else f"{int(v)}"
            color = "white" if v > 0.6 * values.max() else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(image, ax=ax, label="share of true type" if normalize else "cells")
    return _finish(fig, show, return_fig)


def roc(
    adata: AnnData,
    truth_key: str,
    key_added: str = "screformer",
    *,
    ax: plt.Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """One-vs-rest ROC curve of each cell type from the stored probabilities, AUC in the legend.

    Examples
    --------
    >>> screformer.pl.roc(adata, "cell_type")  # doctest: +SKIP
    """
    result = evaluate(adata, truth_key, key_added)
    known = adata.obs[truth_key].notna().to_numpy()
    truth = adata.obs[truth_key].astype(str).to_numpy()[known]
    probabilities = np.asarray(adata.obsm[f"{key_added}_probabilities"])[known]
    classes = list(adata.uns[key_added]["classes"])
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 5))
    else:
        fig = ax.figure
    for i, c in enumerate(classes):
        if c not in result["auc"].index:
            continue
        fpr, tpr, _ = metrics.roc_curve(truth == c, probabilities[:, i])
        ax.plot(fpr, tpr, label=f"{c} (AUC {result['auc'][c]:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"one-vs-rest ROC, macro AUC {result['macro_auc']:.3f}")
    ax.legend(fontsize=7, loc="lower right")
    return _finish(fig, show, return_fig)
