"""SHAP marker plots (the paper's Fig. 5): beeswarm and bar chart of one cell type."""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np
import shap
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._docs import doc_params
from ._utils import save_show_or_return


@doc_params()
def shap_markers(
    adata: AnnData,
    group: str,
    key: str = "screformer_shap",
    *,
    n_genes: int = 20,
    kind: str = "both",
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike | bool | None = None,
    return_fig: bool = False,
) -> Figure | Axes | dict[str, Axes] | None:
    """The genes that drive the model's call of ``group``, from :func:`screformer.tl.shap_markers`.

    ``kind="beeswarm"``: one dot per explained cell and gene, at its SHAP value (logit units;
    right of 0 pushes towards ``group``), coloured by the gene's expression in that cell (log2
    normalised), drawn by :func:`shap.plots.beeswarm`. ``kind="bar"``: mean ``|SHAP|`` per gene.
    ``"both"`` draws the two side by side (then ``ax`` cannot be given).

    Parameters
    ----------
    adata
        Annotated data with the results of :func:`screformer.tl.shap_markers` in
        ``uns[key]``.
    group
        The cell type to show; one of the groups that :func:`screformer.tl.shap_markers`
        explained.
    key
        The ``uns`` key of those results (its ``key_added``).
    n_genes
        How many genes to show, from the top of the ranking by mean ``|SHAP|``.
    kind
        ``"beeswarm"``, ``"bar"`` or ``"both"`` (described above).
    {show_save_ax}

    Returns
    -------
    {returns_plot}
        With ``kind="both"`` the axes are a dict, ``{{"beeswarm": Axes, "bar": Axes}}``.

    Examples
    --------
    >>> screformer.tl.shap_markers(adata, model, "cell_type")  # doctest: +SKIP
    >>> screformer.pl.shap_markers(adata, "B", n_genes=15)  # doctest: +SKIP
    """
    if key not in adata.uns:
        raise KeyError(f"No SHAP results in adata.uns[{key!r}]: run screformer.tl.shap_markers.")
    groups = adata.uns[key]["groups"]
    if group not in groups:
        raise KeyError(f"No SHAP results for {group!r}; computed for {sorted(groups)}.")
    if kind not in ("both", "beeswarm", "bar"):
        raise ValueError(f"kind must be 'both', 'beeswarm' or 'bar', not {kind!r}.")
    if kind == "both" and ax is not None:
        raise ValueError("kind='both' draws two panels: pass ax only with 'beeswarm' or 'bar'.")
    result = groups[group]
    n_genes = min(n_genes, len(result["genes"]))
    explanation = shap.Explanation(
        values=np.asarray(result["shap"])[:, :n_genes],
        data=np.asarray(result["expression"])[:, :n_genes],
        feature_names=[str(g) for g in result["genes"][:n_genes]],
    )
    height = 0.3 * n_genes + 1.5
    if kind == "both":
        fig, (left, right) = plt.subplots(1, 2, figsize=(13, height), layout="constrained")
        axes = {"beeswarm": left, "bar": right}
    else:
        if ax is None:
            fig, ax = plt.subplots(figsize=(6.5, height), layout="constrained")
        fig = ax.figure
        axes = {kind: ax}
    if "beeswarm" in axes:
        shap.plots.beeswarm(
            explanation,
            max_display=n_genes,
            ax=axes["beeswarm"],
            show=False,
            plot_size=None,
            color_bar_label="expression (log2 normalised)",
            group_remaining_features=False,
        )
        axes["beeswarm"].set_title(
            f"{group}: SHAP value per cell ({len(explanation.values)} cells)"
        )
    if "bar" in axes:
        # Drawn here rather than with shap.plots.bar, whose value labels round small SHAP
        # values to "+0"; the colour says which way the gene pushes on average.
        bar = axes["bar"]
        order = np.arange(n_genes)[::-1]
        mean_shap = np.asarray(result["mean_shap"])[:n_genes]
        colors = np.where(mean_shap >= 0, "#ff0051", "#008bfb")
        bar.barh(order, np.asarray(result["mean_abs_shap"])[:n_genes], color=colors)
        bar.set_yticks(order, explanation.feature_names)
        bar.set_xlabel("mean |SHAP value| (red: towards the type on average, blue: away)")
        bar.spines[["top", "right"]].set_visible(False)
        bar.set_title(f"{group}: mean |SHAP|")
    returned = axes if kind == "both" else axes[kind]
    return save_show_or_return(
        fig, returned, "shap_markers", show=show, save=save, return_fig=return_fig
    )
