"""``screformer.tl.annotate``: fine-tune and label cells in one call."""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
from anndata import AnnData

from .._keys import ResultKeys
from ..model import SCReformer
from ..module import ReformerConfig
from ..pp import data_gene_names, prepare, unique_panel
from ..pp._genes import normalize_gene_name
from ..uhaf import UHAF_VERSION, map_labels

logger = logging.getLogger("screformer")

UNASSIGNED = "Unassigned"


def annotate(
    adata: AnnData,
    labels_key: str | None = None,
    *,
    reference: AnnData | None = None,
    model: SCReformer | str | os.PathLike | None = None,
    key_added: str = "screformer",
    unassigned_threshold: float = 0.5,
    unlabeled_category: str = "Unknown",
    layer: str | None = None,
    gene_symbols: str | None = None,
    config: ReformerConfig | dict | None = None,
    uhaf_organ: str | None = None,
    uhaf_tier: int = 1,
    uhaf_mapping: dict[str, str] | None = None,
    copy: bool = False,
    **train_kwargs,
) -> SCReformer | AnnData:
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
        Cells whose best probability is below this are called ``"Unassigned"`` (scBERT: 0.5);
        0 assigns every cell.
    unlabeled_category
        Label that marks unlabelled cells in ``labels_key``.
    layer, gene_symbols
        Where to read expression values and gene names of ``adata`` (and of ``reference``);
        with a trained ``model`` they describe ``adata`` only.
    config
        Model architecture: a :class:`~screformer.module.ReformerConfig` or a dict of its
        fields (``n_genes`` is set from the panel); default: the CPU default.
    uhaf_organ, uhaf_tier, uhaf_mapping
        Train on and predict the uHAF types at ``uhaf_tier`` (1: first tier, e.g.
        ``Cardiomyocyte cell``) of organ ``uhaf_organ`` instead of the labels themselves: each
        label is mapped up the organ's uHAF tree (:func:`screformer.uhaf.map_labels`;
        ``uhaf_mapping`` names labels the tree lacks). Fails, before training, listing any label
        that cannot be mapped.
    copy
        Return an annotated copy instead of writing into ``adata``.
    **train_kwargs
        Passed to :meth:`SCReformer.train` (``max_epochs``, ``lr``, ``batch_size``,
        ``accelerator``, ``seed``, ...).

    Returns
    -------
    The trained model, or the annotated copy with ``copy=True``. Writes, with ``key_added``
    ``"screformer"``:

    ``adata.obs["screformer_prediction"]``
        categorical cell type, ``"Unassigned"`` under the threshold or for cells with no panel
        gene expressed;
    ``adata.obs["screformer_confidence"]``
        the best class probability;
    ``adata.obsm["screformer_probabilities"]``
        cells x classes probabilities, columns in the order of ``uns["screformer"]["classes"]``;
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
    if not 0 <= unassigned_threshold <= 1:
        raise ValueError(f"unassigned_threshold must be in [0, 1], not {unassigned_threshold}.")
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

    uhaf = None

    if labels_key is not None:
        train_data = adata if reference is None else reference
        work = _training_view(train_data, labels_key, unlabeled_category, layer, gene_symbols)
        if uhaf_organ is not None:
            uhaf = _uhaf_mapping(
                work.obs[labels_key], unlabeled_category, uhaf_organ, uhaf_tier, uhaf_mapping
            )
            work.obs[labels_key] = work.obs[labels_key].map(lambda x: uhaf.mapped.get(x, x))
        SCReformer.setup_anndata(
            work,
            labels_key=labels_key,
            unlabeled_category=unlabeled_category,
            layer=layer,
            gene_symbols=gene_symbols,
        )
        if model is None:
            fields = config.to_dict() if isinstance(config, ReformerConfig) else dict(config or {})
            fields.pop("n_genes", None)  # the panel decides
            panel = None if reference is None else shared_genes(work, adata, gene_symbols)
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
    else:
        if model is None:
            raise ValueError("Pass labels_key (the obs column with cell types), or a model.")
        if train_kwargs:
            raise ValueError(f"Training arguments {sorted(train_kwargs)} need labels_key.")
        if not isinstance(model, SCReformer):
            model = SCReformer.from_pretrained(model)
        if not model.is_trained_:
            raise ValueError("The model is not trained; pass labels_key to train it.")
        prepared = prepare(adata, model.gene_panel, layer=layer, gene_symbols=gene_symbols)

    probabilities = model.predict_proba(prepared)
    prediction, confidence = _call_labels(
        probabilities, model.classes, unassigned_threshold, prepared.empty_cells
    )

    # ---- write, last
    target = adata.copy() if copy else adata
    keys = ResultKeys(key_added)
    target.obs[keys.prediction] = pd.Categorical(
        prediction, categories=[*model.classes, UNASSIGNED]
    )
    target.obs[keys.confidence] = confidence
    target.obsm[keys.probabilities] = probabilities
    target.uns[keys.uns] = run_record(
        model,
        {
            "labels_key": labels_key,
            "reference": reference is not None,
            "unassigned_threshold": unassigned_threshold,
            "unlabeled_category": unlabeled_category,
            "layer": layer,
            "gene_symbols": gene_symbols,
        },
        prepared.alignment,
        prepared.input_kind,
        int((prediction == UNASSIGNED).sum()),
    )
    if uhaf is not None:
        target.uns[key_added]["uhaf"] = {
            "organ": uhaf.organ,
            "tier": uhaf.tier,
            "version": UHAF_VERSION,
            "mapping": uhaf.mapped,
        }
        if reference is None:
            fine = target.obs[labels_key].astype(object)
            target.obs[f"{labels_key}_uhaf_tier{uhaf_tier}"] = pd.Categorical(
                fine.map(uhaf.mapped), categories=sorted(set(uhaf.mapped.values()))
            )
    return target if copy else model


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
        }
    )


def versions() -> dict[str, str]:
    """The versions of screformer and torch that made a result (stored in ``uns``)."""
    import torch

    from .. import __version__

    return {"screformer": str(__version__), "torch": str(torch.__version__)}


def _call_labels(probabilities: np.ndarray, classes, threshold: float, empty: np.ndarray):
    confidence = probabilities.max(1).astype(np.float32)
    prediction = np.asarray(classes, dtype=object)[probabilities.argmax(1)]
    prediction[(confidence < threshold) | empty] = UNASSIGNED
    return prediction, confidence


def _drop_none(d: dict) -> dict:
    """h5ad cannot store None: leave such entries out."""
    return {k: _drop_none(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}
