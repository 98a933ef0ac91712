"""``screformer.tl.shap_markers``: the genes that drive each cell type, by SHAP."""

from __future__ import annotations

import numpy as np
import pandas as pd
import shap
import torch
from anndata import AnnData
from torch import nn
from tqdm.auto import tqdm

from ..data import tokenize
from ..model import SCReformer
from ..pp import bin_matrix


class _ClassLogit(nn.Module):
    """One cell's tokens as a function of their input embeddings (and, for a ``head_bins``
    model, their levels) -> the logit of one class.

    The gene ids and padding mask are fixed; only the embeddings vary, as SHAP's gradient
    explainer needs. LSH hashing is re-seeded at every call so every sample sees the same buckets.
    """

    def __init__(self, module, gene_ids, mask, class_index: int, seed: int, unmeasured=None):
        super().__init__()
        self.module, self.gene_ids, self.mask = module, gene_ids, mask
        self.class_index, self.seed, self.unmeasured = class_index, seed, unmeasured
        self.probe = False

    def forward(self, embedded: torch.Tensor, levels: torch.Tensor | None = None) -> torch.Tensor:
        n = embedded.shape[0]
        if self.probe:  # shap's constructor only runs the model to count its outputs
            return embedded.new_zeros(n, 1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            logits = self.module.classify_embedded(
                embedded,
                self.gene_ids.expand(n, -1),
                self.mask.expand(n, -1),
                self.unmeasured,
                levels,
            )
        return logits[:, [self.class_index]]


def shap_markers(
    adata: AnnData,
    model: SCReformer,
    groupby: str,
    groups: list[str] | None = None,
    n_background: int = 100,
    n_cells: int = 200,
    nsamples: int = 64,
    n_top_genes: int = 50,
    key_added: str = "screformer_shap",
    batch_size: int = 32,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """Rank the genes that drive the model's call of each cell type, with SHAP values.

    For up to ``n_cells`` cells of each group, the SHAP value of every expressed gene for the
    logit of the group's class is computed with :class:`shap.GradientExplainer` (expected
    gradients): the input of a gene is its token's embedding (gene + expression bin + position,
    and value for a model with ``value_embedding``; plus the level its classifier reads
    directly for a model with ``head_bins``), and the baseline replaces the expression
    part by that of ``n_background`` random cells of ``adata`` (the zero vector where a
    background cell does not express the gene, as such genes are not tokens in ``expressed``
    mode). A gene's value is its attribution summed over the embedding dimensions; genes that
    are not tokens of a cell get 0. Groups are then ranked by mean ``|SHAP|``.

    Why not :class:`shap.DeepExplainer`: it fails on this network (shap 0.51, reformer-pytorch
    1.4.4). Its DeepLIFT rules know standard layers only (it warns that the Reformer's modules
    are unrecognised), it breaks inside reformer-pytorch's RNG-restoring wrappers (``TypeError:
    expected a torch.ByteTensor, but got NoneType``), and past that on a tensor-size mismatch.
    Expected gradients need only ordinary gradients; they are taken through the same layers run
    without the reversible trick (see ``ReformerEncoder.irreversible``).

    Parameters
    ----------
    adata
        Cells with the groups in ``obs[groupby]`` (e.g. known or predicted cell types), raw or
        log-normalised expression on the model's genes.
    model
        A trained :class:`~screformer.SCReformer`; the groups must be among its classes.
    groupby
        ``obs`` column whose values name model classes.
    groups
        Groups to explain (default: every group that is a model class).
    n_background
        Cells drawn at random from ``adata`` as the SHAP baseline.
    n_cells
        Cells explained per group (drawn at random when the group has more).
    nsamples
        Gradient samples per explained cell (shap's ``nsamples``): the cost is ``nsamples``
        forward + backward passes per cell (pbmc3k, CPU, 2 cores, the default model before
        ``head_bins``: about 0.2 s per cell at ``nsamples=32``); lower it for a quick look,
        raise it for steadier values.
    n_top_genes
        Genes per group kept in ``adata.uns[key_added]`` for plotting.
    key_added
        Where the results go in ``adata.uns``.
    batch_size
        Samples per forward/backward pass.
    seed
        Seed of the cell draws, the SHAP samples and the LSH hashing.

    Returns
    -------
    ``{group: DataFrame}``, each ranking every panel gene by ``mean_abs_shap`` with columns
    ``mean_abs_shap``, ``mean_shap`` (positive: pushes towards the group) and
    ``mean_expression`` (log2-normalised, over the explained cells). ``adata.uns[key_added]``
    gets ``params`` and, per group, the top ``n_top_genes`` rows and the per-cell SHAP values
    and expression of those genes (what :func:`screformer.pl.shap_markers` draws).

    Examples
    --------
    >>> model = screformer.tl.annotate(adata, "cell_type")  # doctest: +SKIP
    >>> ranks = screformer.tl.shap_markers(adata, model, "cell_type", n_cells=50)  # doctest: +SKIP
    >>> ranks["B"].head(10)  # doctest: +SKIP
    >>> screformer.pl.shap_markers(adata, "B")  # doctest: +SKIP
    """
    if groupby not in adata.obs:
        raise KeyError(f"groupby={groupby!r} is not a column of adata.obs.")
    if not model.is_trained_:
        raise ValueError("The model is not trained.")
    for name, value in (
        ("n_background", n_background),
        ("n_cells", n_cells),
        ("nsamples", nsamples),
    ):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, not {value}.")
    labels = adata.obs[groupby].astype(str).to_numpy()
    usable = set(labels) & set(model.classes)
    groups = sorted(usable) if groups is None else list(groups)
    missing = [g for g in groups if g not in usable]
    if missing or not groups:
        raise ValueError(
            f"Groups {missing or groups} are not both in adata.obs[{groupby!r}] and among the "
            f"model's classes {model.classes}."
        )

    prepared = model.prepare(adata)
    X = prepared.X  # log2-normalised on the panel, CSR
    rng = np.random.default_rng(seed)
    background = rng.choice(adata.n_obs, size=min(n_background, adata.n_obs), replace=False)
    background_X = X[background]
    module, config = model.module, model.config
    # Binned once, on the background cells' whole rows (relative bins depend on the whole cell).
    background_bins = bin_matrix(background_X, config.value_encoding, config.top_bin)
    module.eval()
    device = next(module.parameters()).device
    # The panel genes adata lacks, read as unmeasured as in predictions.
    unmeasured = prepared.alignment.unmeasured
    unmeasured = torch.from_numpy(unmeasured).to(device) if unmeasured.any() else None
    numpy_state = np.random.get_state()  # shap seeds numpy's global generator
    rankings, stored = {}, {}
    try:
        module.requires_grad_(False)
        for group in groups:
            members = np.flatnonzero(labels == group)
            cells = rng.choice(members, size=min(n_cells, len(members)), replace=False)
            values = np.zeros((len(cells), config.n_genes), dtype=np.float32)
            for row, cell in enumerate(tqdm(cells, desc=f"SHAP {group}", disable=None)):
                genes, attribution = _explain_cell(
                    module,
                    config,
                    X[cell],
                    background_X,
                    background_bins,
                    model.classes.index(group),
                    nsamples,
                    batch_size,
                    seed + row,
                    device,
                    unmeasured,
                )
                values[row, genes] = attribution
            expression = X[cells].toarray()
            rankings[group], stored[group] = _rank(
                values, expression, model.gene_panel, cells, adata.obs_names, n_top_genes
            )
    finally:
        module.requires_grad_(True)
        np.random.set_state(numpy_state)

    adata.uns[key_added] = {
        "params": {
            "groupby": groupby,
            "n_background": len(background),
            "n_cells": n_cells,
            "nsamples": nsamples,
            "seed": seed,
            "output": "logit of the group's class",
        },
        "groups": stored,
    }
    return rankings


def _explain_cell(
    module,
    config,
    x,
    background_X,
    background_bins,
    class_index,
    nsamples,
    batch_size,
    seed,
    device,
    unmeasured=None,
):
    """SHAP values (summed over embedding dims) of one cell's tokens; returns (genes, values)."""
    tokens = {k: v.to(device) for k, v in tokenize(x, config).items()}
    gene_ids, mask = tokens["gene_ids"], tokens["mask"]
    genes = gene_ids[0][mask[0]].cpu().numpy()
    if len(genes) == 0:  # expresses no panel gene: nothing to attribute
        return genes, np.zeros(0, dtype=np.float32)
    embedding = module.embedding
    with torch.no_grad():
        identity = embedding.identity(gene_ids)
        cell = identity + embedding.expression(tokens["bins"], tokens.get("values"))
        # The background cells' expression of this cell's genes, as bins (one cell: no padding).
        bg_bins = torch.from_numpy(background_bins[:, genes].toarray()).to(device)
        bg_values = None
        if config.value_embedding:
            bg_values = torch.from_numpy(background_X[:, genes].toarray().astype(np.float32))
            bg_values = bg_values.to(device)
        expression = embedding.expression(bg_bins, bg_values)
        if config.token_mode == "expressed":  # bin 0 is no token there: no expression signal
            expression = expression * (bg_bins != 0).unsqueeze(-1)
        baseline = identity + expression
        inputs, baselines = [cell], [baseline]
        if config.head_bins:  # the levels the head reads are a second input, varied alike
            levels = module.classifier.bin_levels
            inputs.append(levels(tokens["bins"]))
            baselines.append(levels(bg_bins))
    wrapper = _ClassLogit(module, gene_ids, mask, class_index, seed, unmeasured)
    wrapper.probe = True
    if len(inputs) == 1:  # shap takes one input as a tensor, several as a list
        inputs, baselines = inputs[0], baselines[0]
    explainer = shap.GradientExplainer(wrapper, baselines, batch_size=batch_size)
    wrapper.probe = False
    with module.encoder.irreversible():
        values = explainer.shap_values(inputs, nsamples=nsamples, rseed=seed)
    if not config.head_bins:
        values = [values]
    n_tokens = gene_ids.shape[1]
    # A gene's value: its embedding's attribution summed over dims, plus its level's.
    total = sum(np.asarray(v).reshape(n_tokens, -1).sum(-1) for v in values)
    return genes, total[: len(genes)]


def _rank(values, expression, panel, cells, obs_names, n_top):
    table = pd.DataFrame(
        {
            "mean_abs_shap": np.abs(values).mean(0),
            "mean_shap": values.mean(0),
            "mean_expression": expression.mean(0),
        },
        index=pd.Index(panel, name="gene"),
    ).sort_values("mean_abs_shap", ascending=False)
    top = table.index[:n_top]
    columns = pd.Index(panel).get_indexer(top)
    stored = {
        "genes": np.asarray(top, dtype=str),
        "mean_abs_shap": table["mean_abs_shap"].to_numpy()[:n_top],
        "mean_shap": table["mean_shap"].to_numpy()[:n_top],
        "shap": values[:, columns],
        "expression": expression[:, columns].astype(np.float32),
        "cells": np.asarray(obs_names[cells], dtype=str),
    }
    return table, stored
