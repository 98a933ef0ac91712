"""Marker genes by predicted cell type, through Scanpy's dotplot."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.figure import Figure

from .._docs import doc_params
from .._keys import ResultKeys
from ._utils import save_show_or_return


@doc_params()
def dotplot(
    adata: AnnData,
    markers: dict[str, list[str]] | str = "screformer_shap",
    *,
    key_added: str = "screformer",
    groupby: str | None = None,
    n_genes: int = 3,
    layer: str | None = None,
    show: bool | None = None,
    save: str | os.PathLike | bool | None = None,
    return_fig: bool = False,
    **kwargs,
) -> Figure | dict | None:
    """Marker genes by predicted cell type: :func:`scanpy.pl.dotplot` of ``markers`` grouped
    by ``obs[f"{{key_added}}_prediction"]``, to check each call against biology.

    Dot size: the share of a group's cells that express the gene; colour: its mean expression
    (use log-normalised values: ``layer`` or ``X``).

    Parameters
    ----------
    adata
        Annotated data with the results of :func:`screformer.tl.annotate`.
    markers
        ``{{cell type: [genes]}}`` (canonical markers), or the ``uns`` key of
        :func:`screformer.tl.shap_markers` results: the top ``n_genes`` genes of each type the
        model's SHAP values ranked.
    {key_added}
    groupby
        ``obs`` column to group by instead (e.g. ``f"{{key_added}}_majority_voting"``).
    n_genes
        Genes per type taken from SHAP results.
    layer
        Layer with the values to show (default ``X``).
    show, save, return_fig
        As for every plot of :mod:`screformer.pl`.
    kwargs
        Passed to :func:`scanpy.pl.dotplot` (``standard_scale="var"``, ``dendrogram``, ...).

    Returns
    -------
    matplotlib.figure.Figure, dict or None
        The figure with ``return_fig=True``; otherwise Scanpy's dict of axes when ``show=False``,
        ``None`` when the figure is shown. Nothing is written into ``adata``.

    Examples
    --------
    >>> markers = {{"B": ["MS4A1", "CD79A"], "NK": ["GNLY", "NKG7"]}}
    >>> screformer.pl.dotplot(adata, markers, standard_scale="var")  # doctest: +SKIP
    """
    import scanpy as sc

    groupby = groupby or ResultKeys(key_added).prediction
    if groupby not in adata.obs:
        raise KeyError(f"obs has no {groupby!r}: run screformer.tl.annotate first.")
    if isinstance(markers, str):
        if markers not in adata.uns or "groups" not in adata.uns[markers]:
            raise KeyError(
                f"uns has no SHAP markers at {markers!r}: run screformer.tl.shap_markers, or pass "
                "markers={cell type: [genes]}."
            )
        groups = adata.uns[markers]["groups"]
        markers = {group: list(result["genes"][:n_genes]) for group, result in groups.items()}
    known = set(adata.var_names)
    missing = sorted({g for genes in markers.values() for g in genes} - known)
    if missing:
        raise KeyError(f"Marker genes not in adata.var_names: {missing[:10]}.")
    # Scanpy makes string columns categorical in place: it gets a light AnnData of its own.
    values = adata.X if layer is None else adata.layers[layer]
    light = AnnData(values, obs=adata.obs[[groupby]].copy(), var=adata.var[[]].copy())
    colours = f"{groupby}_colors"
    if colours in adata.uns:
        light.uns[colours] = adata.uns[colours]
    groups = light.obs[groupby]
    if isinstance(groups.dtype, pd.CategoricalDtype):
        # Scanpy fails on a category without cells (e.g. "Unassigned" when every cell was
        # assigned): plot the groups that have cells, each keeping its colour.
        used = groups.cat.categories.isin(groups.unique())
        light.obs[groupby] = groups.cat.remove_unused_categories()
        if colours in light.uns and len(light.uns[colours]) == len(used):
            light.uns[colours] = list(np.asarray(light.uns[colours])[used])
    plot = sc.pl.dotplot(light, markers, groupby, show=False, return_fig=True, **kwargs)
    plot.make_figure()
    return save_show_or_return(
        plot.fig, plot.get_axes(), "dotplot", show=show, save=save, return_fig=return_fig
    )
