"""``screformer.tl.annotate``: fine-tune and label cells in one call."""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings

import pandas as pd
from anndata import AnnData

from ..model import SCReformer
from ..module import ReformerConfig
from ..pp import PreparedData, data_gene_names, prepare, unique_panel, variable_genes
from ..pp._genes import normalize_gene_name
from ..pp._prepare import refuse_backed
from ..uhaf import map_labels
from ._result import (
    UNASSIGNED,
    AnnotationResult,
    Level,
    label_palette,
    uhaf_levels,
    warn_if_mostly_unassigned,
)
from ._voting import majority_vote, over_cluster

logger = logging.getLogger("screformer")

# Novelty above which a cell is Unassigned when the model is trained on the query's own cells:
# beyond 99% of the validation cells, so about 1% of cells of known types are lost to it.
NOVELTY_THRESHOLD = 0.99
# Confidence under which a cell is Unassigned: scBERT's 0.5 for a model labelling the data set it
# was trained on, and 0.1 for cells from anywhere else (a reference, or a trained model given),
# where the shift between data sets lowers the confidence of right calls too. Chosen on the
# transfer benchmark, each stage held out while the others choose (first on 2026-12-02 in
# transfer_threshold.md); since head_bins the held-out choices are 0.1-0.3 (with the repeats of
# rare types, stop 36: 0.1 on three stages, 0.2 on one) for the same mean macro F1 as 0.1
# (benchmarks/results/transfer.md; docs: transfer).
UNASSIGNED_THRESHOLD = 0.5
TRANSFER_UNASSIGNED_THRESHOLD = 0.1


def annotate(
    adata: AnnData,
    labels_key: str | None = None,
    *,
    reference: AnnData | None = None,
    model: SCReformer | str | os.PathLike | None = None,
    key_added: str = "screformer",
    unassigned_threshold: float | str = "auto",
    novelty_threshold: float | str | None = "auto",
    majority_voting: bool = False,
    over_clustering: str | None = None,
    unlabeled_category: str = "Unknown",
    layer: str | None = None,
    gene_symbols: str | None = None,
    use_raw: bool = False,
    config: ReformerConfig | dict | None = None,
    n_top_genes: int | None = 2000,
    uhaf_organ: str | None = None,
    uhaf_tier: int = 1,
    uhaf_mapping: dict[str, str] | None = None,
    copy: bool = False,
    **train_kwargs,
) -> SCReformer | tuple[AnnData, SCReformer]:
    """Label the cells of ``adata`` with cell types.

    Fine-tunes a screformer model on labelled cells, either the labelled cells of ``adata``
    itself (label present and not ``unlabeled_category``) or a separate ``reference``, then
    predicts every cell of ``adata``. With ``labels_key``, ``model`` may name a pretrained encoder
    to start from (``"default"``: the bundled one); without it, ``model`` must be a trained
    classifier (object, saved folder or name), which predicts without training.

    Parameters
    ----------
    adata
        Cells to label: raw counts or log-normalised values, gene symbols (or the ``var`` column
        ``gene_symbols``).
    labels_key
        ``obs`` column with the training labels (of ``reference`` when it is given). Missing
        values count as unlabelled.
    reference
        Labelled AnnData to train on instead of ``adata``.
    model
        With ``labels_key``: a pretrained encoder to fine-tune, by registered name (``"default"``,
        see :mod:`screformer.pretrained`) or path (from :func:`screformer.pretrain`); ``None``
        trains from randomly initialised weights on ``adata``'s own genes. Without
        ``labels_key``: a trained :class:`~screformer.SCReformer`, its folder or name.
    key_added
        Prefix of the keys written (below).
    unassigned_threshold
        Cells whose best probability is below this are called ``"Unassigned"``; 0 assigns every
        cell. ``"auto"``: scBERT's 0.5 when the model is trained here on ``adata``'s own
        labelled cells, else 0.1 (a ``reference``, or a trained ``model``): on cells from
        another data set the model's confidence drops on the cells it calls right too (with
        0.5, 8% to a third of Baron's pancreas cells were Unassigned, about half of them
        called right at 0.1; the transfer benchmark's macro F1 on the 37 tasks of its
        2026-12-04 run: 0.851 at 0.5, 0.860 at 0.1). The price: cells of a type the model
        lacks are then labelled as the nearest type it has (docs: transfer).
    novelty_threshold
        Cells whose novelty score (0-1: how unlike its predicted type's training cells a cell
        is, by expression, model features and energy, as a quantile among the validation cells;
        see :class:`~screformer.model.NoveltyReference`) is above this are called
        ``"Unassigned"`` too: cells of a type the model was not trained on. ``"auto"``: 0.99
        when the model is trained on ``adata``'s own labelled cells, off (None) for a
        ``reference`` or a trained ``model``, where the score is still written. Across studies
        the distances move with the technology and the calibration does not hold (with the
        expression part alone, on eight of the transfer benchmark's tasks, 2-100% of cells of
        known types lay beyond the reference's 0.99). Lower values catch more novel cells and
        lose more known ones (0.9 on pbmc3k: half of a left-out type, known accuracy 0.85;
        docs: interpretation).
    majority_voting
        Also write each cell's over-clustering cluster and its cluster's most common prediction
        (CellTypist's majority voting), which smooths single-cell errors within a cluster.
    over_clustering
        ``obs`` column of clusters to vote in; default: Leiden clusters computed here on the
        cells' neighbour graph (``obsp["connectivities"]`` when ``adata`` has one, else one
        from a PCA of the panel genes), at a resolution that grows with the number of cells as
        in CellTypist.
    unlabeled_category
        Label that marks unlabelled cells in ``labels_key``.
    layer, gene_symbols
        Where to read expression values and gene names of ``adata`` (and of ``reference``);
        with a trained ``model`` they describe ``adata`` only.
    use_raw
        Read ``adata``'s values and gene names from ``adata.raw`` (with ``gene_symbols``, a
        column of ``adata.raw.var``): the genes Scanpy keeps there when ``adata.X`` is cut to
        the highly variable genes. The results are written into ``adata`` as always. A
        trained model reads only the panel genes a query holds (a pbmc3k model's 2,000 genes
        held 147 of its panel in the held-out cells' own 500 most variable genes: macro F1
        0.58 against 0.94 on all their genes; docs: transfer), so with a trained ``model``,
        when ``adata.X`` holds under half of the panel and ``adata.raw`` holds more, a warning
        suggests this. Off by default: ``adata.X`` is read unless asked. Only ``adata`` is
        read so: a ``reference`` is read from its own ``X`` (``layer`` cannot be combined
        with ``use_raw``).
    config
        Model architecture: a :class:`~screformer.module.ReformerConfig` or a dict of its
        fields (``n_genes`` is set from the panel); default: the CPU default.
    n_top_genes
        The panel of a new model (``model=None``): the training cells' ``n_top_genes`` most
        variable genes (:func:`screformer.pp.variable_genes`), among the genes ``adata`` shares
        with ``reference`` when one is given; ``None``: all the (shared) genes. A pretrained
        encoder keeps its own panel.
    uhaf_organ, uhaf_tier, uhaf_mapping
        Also predict the uHAF types at ``uhaf_tier`` (1: first tier, e.g.
        ``Cardiomyocyte cell``) of organ ``uhaf_organ``: each label is mapped up the organ's
        uHAF tree (:func:`screformer.uhaf.map_labels`; ``uhaf_mapping`` names labels the tree
        lacks), the model is trained on the labels and remembers the mapping. Fails, before
        training, listing any label that cannot be mapped.
    copy
        Return ``(annotated copy, model)`` instead of writing into ``adata``.
    **train_kwargs
        Passed to :meth:`SCReformer.train` (``max_epochs``, ``lr``, ``batch_size``,
        ``accelerator``, ``seed``, ...).

    Returns
    -------
    The trained model, or ``(annotated copy, model)`` with ``copy=True``. Writes (through
    :meth:`AnnotationResult.to_adata`), with ``key_added`` ``"screformer"``:

    ``adata.obs["screformer_prediction"]``
        categorical cell type, ``"Unassigned"`` under the threshold or for cells with no panel
        gene expressed;
    ``adata.obs["screformer_confidence"]``
        the best class probability;
    ``adata.obsm["screformer_probabilities"]``
        cells x classes probabilities, columns in the order of ``uns["screformer"]["classes"]``;
    ``adata.obs["screformer_novelty"]``
        the novelty score, when the model has validation cells to calibrate it;
    ``adata.obs["screformer_over_clustering"]``, ``adata.obs["screformer_majority_voting"]``
        with ``majority_voting``;
    ``adata.obs["screformer_uhaf_tier1_prediction"]``, ``..._confidence``
        with ``uhaf_organ`` (or a model trained with it): the calls at the uHAF tier, whose
        probabilities (``obsm["screformer_uhaf_tier1_probabilities"]``, classes in
        ``uns["screformer_uhaf_tier1"]``) are sums of the classes'; the class is called within
        the called type,
        so the two levels never disagree;
    ``adata.uns["screformer"]``
        ``params``, ``classes``, ``gene_overlap`` (panel genes found), ``model_config``,
        ``input_kind``, ``n_unassigned`` and ``versions`` (of screformer and torch); with
        ``uhaf_organ`` also ``uhaf`` (organ, tier,
        version and the label -> uHAF type mapping);
    ``adata.obs[f"{labels_key}_uhaf_tier{uhaf_tier}"]``
        with ``uhaf_organ``, when the labels are ``adata``'s own: each cell's known label mapped
        to its uHAF type, next to the fine label, to compare with the prediction.

    Nothing is written when the call fails.

    Examples
    --------
    >>> import scanpy as sc, screformer
    >>> adata = sc.read_h5ad("pbmc3k_labelled.h5ad")  # doctest: +SKIP
    >>> screformer.tl.annotate(adata, "classified", max_epochs=10)  # doctest: +SKIP
    >>> adata.obs[["screformer_prediction", "screformer_confidence"]].head()  # doctest: +SKIP
    """
    # ---- validate everything before any work or write
    if not isinstance(adata, AnnData):
        raise TypeError(f"adata must be an AnnData, not {type(adata).__name__}.")
    if adata.is_view and not copy:
        raise ValueError("adata is a view; pass adata.copy(), or copy=True.")
    if unassigned_threshold == "auto":
        own_cells = labels_key is not None and reference is None
        unassigned_threshold = UNASSIGNED_THRESHOLD if own_cells else TRANSFER_UNASSIGNED_THRESHOLD
    if not isinstance(unassigned_threshold, (int, float)) or not 0 <= unassigned_threshold <= 1:
        raise ValueError(
            f"unassigned_threshold must be in [0, 1] or 'auto', not {unassigned_threshold!r}."
        )
    if novelty_threshold == "auto":
        novelty_threshold = NOVELTY_THRESHOLD if labels_key and reference is None else None
    if novelty_threshold is not None and not 0 <= novelty_threshold <= 1:
        raise ValueError("novelty_threshold must be in [0, 1], 'auto' or None.")
    if not key_added:
        raise ValueError("key_added must be a non-empty string.")
    if isinstance(model, SCReformer) and (labels_key is not None or reference is not None):
        raise ValueError("Pass either a trained model, or labels to train on, not both.")
    if reference is not None and labels_key is None:
        raise ValueError("A reference needs labels_key (its obs column with cell types).")
    if uhaf_organ is not None and labels_key is None:
        raise ValueError("uhaf_organ chooses the classes to train: it needs labels_key.")
    if config is not None and model is not None:
        raise ValueError("config describes a new model; a given model brings its own.")
    if n_top_genes is not None and n_top_genes < 1:
        raise ValueError(f"n_top_genes must be a positive number or None, not {n_top_genes}.")
    if over_clustering is not None and over_clustering not in adata.obs:
        raise KeyError(f"over_clustering={over_clustering!r} is not a column of obs.")
    if use_raw:  # the raw view below would hide that adata is backed from prepare's check
        refuse_backed(adata)
    if use_raw and adata.raw is None:
        raise ValueError("use_raw=True, but adata.raw is None: there is nothing to read.")
    if use_raw and layer is not None:
        raise ValueError("layer and use_raw both say where to read values: pass one of them.")
    data = _raw_view(adata) if use_raw else adata

    if labels_key is not None:
        model, prepared = _fit(
            data,
            labels_key,
            reference,
            model,
            config,
            unlabeled_category,
            layer,
            gene_symbols,
            uhaf_organ,
            uhaf_tier,
            uhaf_mapping,
            n_top_genes,
            train_kwargs,
        )
    else:
        model, prepared = _load(data, model, layer, gene_symbols, train_kwargs)

    result = label_cells(
        model, prepared, adata.obs_names, unassigned_threshold, novelty_threshold, key_added
    )
    result.record = run_record(
        model,
        {
            "labels_key": labels_key,
            "reference": reference is not None,
            "unassigned_threshold": unassigned_threshold,
            "novelty_threshold": novelty_threshold,
            "unlabeled_category": unlabeled_category,
            "layer": layer,
            "gene_symbols": gene_symbols,
            "use_raw": use_raw,
            "majority_voting": majority_voting,
            "n_top_genes": n_top_genes,
        },
        prepared.alignment,
        prepared.input_kind,
        int((result.cells.prediction == UNASSIGNED).sum()),
    )
    if labels_key is not None:
        source = adata if reference is None else reference
        result.palette = label_palette(source.obs[labels_key], source.uns, labels_key)
    warn_if_mostly_unassigned(result.record["n_unassigned"], adata.n_obs)
    if majority_voting:
        if over_clustering is not None:
            clusters = adata.obs[over_clustering].astype(str).to_numpy()
        else:
            clusters = over_cluster(prepared.X, adata.obsp.get("connectivities"))
        result.over_clustering = clusters
        result.majority_voting = majority_vote(result.cells.prediction, clusters)
    if model.uhaf_ is not None and labels_key is not None and reference is None:
        # The known labels at the uHAF tier, beside the prediction, to compare with it.
        fine = adata.obs[labels_key].astype(object).map(model.uhaf_["mapping"])
        result.extra_obs[f"{labels_key}_uhaf_tier{model.uhaf_['tier']}"] = pd.Categorical(
            fine, categories=sorted(set(model.uhaf_["mapping"].values()))
        )

    # ---- write, last
    target = result.to_adata(adata.copy() if copy else adata)
    return (target, model) if copy else model


def _fit(
    adata,
    labels_key,
    reference,
    model,
    config,
    unlabeled_category,
    layer,
    gene_symbols,
    uhaf_organ,
    uhaf_tier,
    uhaf_mapping,
    n_top_genes,
    train_kwargs,
) -> tuple[SCReformer, PreparedData]:
    """Fine-tune a model on the labelled cells of ``reference`` (default: ``adata``); the
    query's cells on its panel, checked before training."""
    train_data = adata if reference is None else reference
    work = _training_view(train_data, labels_key, unlabeled_category, layer, gene_symbols)
    uhaf = None
    if uhaf_organ is not None:
        uhaf = _uhaf_mapping(
            work.obs[labels_key], unlabeled_category, uhaf_organ, uhaf_tier, uhaf_mapping
        )
    SCReformer.setup_anndata(
        work,
        labels_key=labels_key,
        unlabeled_category=unlabeled_category,
        layer=layer,
        gene_symbols=gene_symbols,
    )
    if model is None:
        # Every field, as set: to_dict leaves out a 0 encoder_dropout, which would read 0.5.
        fields = (
            dataclasses.asdict(config) if isinstance(config, ReformerConfig) else dict(config or {})
        )
        fields.pop("n_genes", None)  # the panel decides
        panel = None if reference is None else shared_genes(work, adata, gene_symbols)
        if n_top_genes is not None:
            panel = variable_genes(
                work, n_top_genes, genes=panel, layer=layer, gene_symbols=gene_symbols
            )
        model = SCReformer(work, gene_panel=panel, seed=train_kwargs.get("seed", 0), **fields)
    else:
        model = SCReformer.from_pretrained(model, work)
        if model.is_trained_:
            raise ValueError(
                "model is a trained classifier: to predict with it, leave labels_key out; "
                "to fine-tune, pass a pretrained encoder (e.g. model='default')."
            )
        if reference is not None:  # the encoder's panel is fixed: train on the shared genes
            train_kwargs.setdefault("only_genes", data_gene_names(adata, gene_symbols))
    # Fail on the query's genes or values now, not after training.
    prepared = prepare(adata, model.gene_panel, layer=layer, gene_symbols=gene_symbols)
    model.train(**train_kwargs)
    if uhaf is not None:
        model.uhaf_ = uhaf.hierarchy(model.classes)
    return model, prepared


def _load(adata, model, layer, gene_symbols, train_kwargs) -> tuple[SCReformer, PreparedData]:
    """A trained model (object, folder or name) and the query's cells on its panel."""
    if model is None:
        raise ValueError("Pass labels_key (the obs column with cell types), or a model.")
    if train_kwargs:
        raise ValueError(f"Training arguments {sorted(train_kwargs)} need labels_key.")
    if not isinstance(model, SCReformer):
        model = SCReformer.from_pretrained(model)
    if not model.is_trained_:
        raise ValueError("The model is not trained; pass labels_key to train it.")
    if layer is None:
        _suggest_raw(adata, model.gene_panel, gene_symbols)
    return model, prepare(adata, model.gene_panel, layer=layer, gene_symbols=gene_symbols)


def _raw_view(adata: AnnData) -> AnnData:
    """``adata.raw``'s values and genes with ``adata``'s cells, sharing the matrix (no copy)."""
    return AnnData(adata.raw.X, obs=adata.obs, var=adata.raw.var)


def _suggest_raw(adata: AnnData, panel, gene_symbols) -> None:
    """Warn when ``adata.X`` holds under half of the model's panel and ``adata.raw`` more (before
    the overlap is checked, so the hint comes with the error of a too small overlap too)."""
    if adata.raw is None or (gene_symbols is not None and gene_symbols not in adata.raw.var):
        return
    panel_keys = {normalize_gene_name(g) for g in panel}

    def held(var) -> int:
        return len(
            panel_keys & {normalize_gene_name(g) for g in data_gene_names(var, gene_symbols)}
        )

    in_x = held(adata)
    if in_x < len(panel_keys) / 2 and (in_raw := held(adata.raw)) > in_x:
        warnings.warn(
            f"adata.raw holds {in_raw} of the model's {len(panel_keys)} panel genes, where "
            f"adata.X holds {in_x}: pass use_raw=True (CLI: --use-raw) to read them.",
            stacklevel=4,
        )


def label_cells(
    model: SCReformer,
    prepared: PreparedData,
    obs_names,
    unassigned_threshold: float,
    novelty_threshold: float | None,
    key_added: str,
) -> AnnotationResult:
    """The calls of a trained model for the prepared cells (the record is left empty): classes,
    novelty and, when the model has one, the uHAF level."""
    probabilities, novelty = model.predict_proba_and_novelty(prepared)
    unassigned = prepared.empty_cells.copy()
    if novelty is not None and novelty_threshold is not None:
        unassigned |= novelty > novelty_threshold
    cells = Level.call(probabilities, model.classes, unassigned_threshold, unassigned)
    uhaf = None
    if model.uhaf_ is not None:
        cells, uhaf = uhaf_levels(cells, model.uhaf_["mapping"], unassigned_threshold, unassigned)
    return AnnotationResult(
        pd.Index(obs_names),
        cells,
        {},
        novelty=novelty,
        uhaf=uhaf,
        uhaf_tier=None if uhaf is None else model.uhaf_["tier"],
        key_added=key_added,
    )


MIN_SHARED_GENES = 50


def shared_genes(
    reference: AnnData,
    query: AnnData,
    gene_symbols: str | None = None,
    min_genes: int | None = None,
) -> list[str]:
    """The reference's genes that the query has too, in the reference's order: the panel of a
    model trained on ``reference`` to label ``query``.

    Matching is case-insensitive and ignores Ensembl version suffixes, as
    :func:`screformer.pp.align_genes`.

    Raises
    ------
    ValueError
        When the two share fewer than ``min_genes`` genes (default: 50, or half the
        reference's genes when it has fewer than 100).

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> ref = ad.AnnData(np.ones((2, 3)), var=pd.DataFrame(index=["CD3E", "LYZ", "MS4A1"]))
    >>> query = ad.AnnData(np.ones((2, 2)), var=pd.DataFrame(index=["ms4a1", "CD3E"]))
    >>> shared_genes(ref, query, min_genes=1)
    ['CD3E', 'MS4A1']
    """
    reference_genes = unique_panel(data_gene_names(reference, gene_symbols))
    query_keys = {normalize_gene_name(g) for g in data_gene_names(query, gene_symbols)}
    shared = [g for g in reference_genes if normalize_gene_name(g) in query_keys]
    if min_genes is None:
        min_genes = min(MIN_SHARED_GENES, len(reference_genes) // 2)
    if len(shared) < max(min_genes, 1):
        raise ValueError(
            f"The reference and the query share {len(shared)} genes (at least {min_genes} "
            f"needed). Reference genes: {reference_genes[:5]}; query genes: "
            f"{list(data_gene_names(query, gene_symbols)[:5])}. Check that both use the same "
            "kind of gene names (symbols or Ensembl IDs; gene_symbols=) and species."
        )
    return shared


def _training_view(adata: AnnData, labels_key, unlabeled_category, layer, gene_symbols) -> AnnData:
    """A light AnnData sharing ``adata``'s matrix, so registration never touches the user's."""
    if labels_key not in adata.obs:
        raise KeyError(
            f"labels_key={labels_key!r} is not a column of obs "
            f"(columns: {list(adata.obs.columns)})."
        )
    labels = adata.obs[labels_key].astype(object)
    labels = labels.where(labels.notna(), unlabeled_category).astype(str)
    var = adata.var[[gene_symbols]].copy() if gene_symbols in adata.var else None
    layers = {layer: adata.layers[layer]} if layer is not None and layer in adata.layers else None
    return AnnData(
        X=adata.X if layer is None else None,
        obs=pd.DataFrame({labels_key: labels.to_numpy()}, index=adata.obs_names),
        var=var if var is not None else pd.DataFrame(index=adata.var_names),
        layers=layers,
    )


def _uhaf_mapping(labels: pd.Series, unlabeled_category, organ, tier, mapping):
    names = [x for x in labels.unique() if x != unlabeled_category]
    result = map_labels(names, organ, tier, mapping)
    if result.unmapped:
        raise ValueError(
            f"{len(result.unmapped)} label(s) cannot be mapped to uHAF {result.organ} tier {tier}: "
            + "; ".join(f"{k!r} ({v})" for k, v in result.unmapped.items())
            + ". Name their uHAF types with uhaf_mapping={label: type}."
        )
    return result


def run_record(model, params: dict, alignment, input_kind, n_unassigned: int) -> dict:
    """What ``uns[key_added]`` records of a labelling run (entries that are None left out)."""
    pretrained = {"pretrained": model.pretrained_} if model.pretrained_ else {}
    return _drop_none(
        {
            "params": {**params, **model.train_params_, **pretrained},
            "classes": list(model.classes),
            "gene_overlap": alignment.report(),
            "model_config": model.config.to_dict(),
            "input_kind": input_kind,
            "n_unassigned": int(n_unassigned),
            "versions": versions(),
            "uhaf": model.uhaf_,
        }
    )


def versions() -> dict[str, str]:
    """The versions of screformer and torch that made a result (stored in ``uns``)."""
    import torch

    from .. import __version__

    return {"screformer": str(__version__), "torch": str(torch.__version__)}


def _drop_none(d: dict) -> dict:
    """h5ad cannot store None: leave such entries out."""
    return {k: _drop_none(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}
