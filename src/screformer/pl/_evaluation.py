"""Evaluation plots: confusion matrix and one-vs-rest ROC curves.

Both compute the evaluation afresh and write nothing into the AnnData.
"""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn import metrics

from .._docs import doc_params
from .._keys import ResultKeys
from ..tl._evaluate import _compute_evaluation
from ._utils import save_show_or_return


@doc_params()
def confusion_matrix(
    adata: AnnData,
    truth_key: str,
    key_added: str = "screformer",
    *,
    normalize: bool = True,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike | bool | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Heat map of true (rows) against predicted (columns) cell types.

    The counts are those of :func:`screformer.tl.evaluate`'s ``confusion`` table (``Unassigned``
    is a column of its own), computed here without storing anything.

    Parameters
    ----------
    {adata}
    {truth_key}
    {key_added}
    normalize
        Divide each row by its total, so the diagonal is each type's recall; otherwise show
        counts. The numbers are printed in the cells.
    {show_save_ax}

    Returns
    -------
    {returns_plot}

    Examples
    --------
    >>> screformer.pl.confusion_matrix(adata, "cell_type")  # doctest: +SKIP
    >>> ax = screformer.pl.confusion_matrix(adata, "cell_type", show=False)  # doctest: +SKIP
    """
    table = _compute_evaluation(adata, truth_key, key_added)["confusion"]
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
    return save_show_or_return(
        fig, ax, "confusion_matrix", show=show, save=save, return_fig=return_fig
    )


@doc_params()
def roc(
    adata: AnnData,
    truth_key: str,
    key_added: str = "screformer",
    *,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike | bool | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """One-vs-rest ROC curve of each cell type from the stored probabilities, AUC in the legend.

    A curve is drawn for each model class that has cells both of its type and of others in
    ``truth_key``; the title gives the macro AUC (as :func:`screformer.tl.evaluate`, computed
    here without storing anything).

    Parameters
    ----------
    {adata}
    {truth_key}
    {key_added}
    {show_save_ax}

    Returns
    -------
    {returns_plot}

    Examples
    --------
    >>> screformer.pl.roc(adata, "cell_type")  # doctest: +SKIP
    >>> screformer.pl.roc(adata, "cell_type", show=False, save="roc.pdf")  # doctest: +SKIP
    """
    result = _compute_evaluation(adata, truth_key, key_added)
    known = adata.obs[truth_key].notna().to_numpy()
    truth = adata.obs[truth_key].astype(str).to_numpy()[known]
    keys = ResultKeys(key_added)
    probabilities = np.asarray(adata.obsm[keys.probabilities])[known]
    classes = list(adata.uns[keys.uns]["classes"])
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
    return save_show_or_return(fig, ax, "roc", show=show, save=save, return_fig=return_fig)
