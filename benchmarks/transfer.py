"""Transfer: label another study, or a query processed differently, as well as a linear model.

screformer's configurations (``--variants``) and logistic regression on the same cells, in one
run (``results/transfer.md``: the default, ``DEFAULT`` below; each earlier default and each
variant measured beside it in its own ``results/transfer_*.md``, named in
``benchmarks/README.md``: before the moving average of the weights,
``relative+headbins+augment``, in ``results/transfer_before_ema.md``; before ``head_bins``,
``relative+augment``, in ``results/transfer_before_head_bins.md``; the value encodings compared
with the training recipe before 2026-12-02 in ``results/transfer_encodings.md``; the value
embedding in ``results/transfer_value_embedding.md`` and, on today's default,
``results/transfer_value_embedding_now.md``; other training seeds, ``--model-seed N``, side by
side in ``results/transfer_seeds.md`` via ``transfer_seeds.py``):

- pancreas: the 9 cross-study transfers of Xin (SMARTer), Wang and Baron (inDrop; its file
  holds human and mouse cells, scored also by species);
- PBMC: pbmc3k (10x v1) to Symphony's three 10x technologies, to Ding 2020's Drop-seq and inDrops
  cells, and technology to technology within Symphony and within Ding;
- processed query: pbmc3k and heart, stratified 80/20; a model fine-tuned on the 80% (counts)
  labels the 20% presented as counts, log-normalised to 1e4, log-normalised to the median total,
  2,000 and 500 highly variable genes (log-normalised to 1e4), counts thinned to half depth; and
  reference mode (trained on the 80% restricted to the view's genes) for the gene subsets;
  logistic regression both retrained on each view's genes and saved as the model is (trained
  once on the 80% on the model's panel, the genes a view lacks read as 0);
- heart 5-fold cross-validation (pbmc3k's with ``--pbmc3k-cv``; ``pbmc3k_cv.py`` runs it for the
  default).

Scores: macro F1 over the cell types present in the scored cells' truth, accuracy and the share
called Unassigned (screformer's default thresholds; logistic regression assigns every cell). Each
reference-mode model's calls are also scored at confidence thresholds 0 to 0.5, and each stage's
threshold chosen on the other stages alone (how the default with a reference was chosen).
In a cross-study transfer the scored cells are those whose type the reference has; the share of
the others called Unassigned is reported apart. Logistic regression: C=0.1 on log-normalised
values (screformer's preprocessing), trained on the genes both data sets share.

Data (../shared/data, see its README): pbmc3k_labelled, heart_litvinukova_sanger_624cells,
pancreas_{xin,wang}_subset, pancreas_baron_human_mouse_toy, symphony_pbmc_3tech_1500 (its
``logcp10k_original`` layer: only 1,764 genes were shipped, so its counts' totals are not the
cells' depths), ding2020_pbmc1_{dropseq_598,indrops_644} (``lognorm_original``, same reason).

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \\
        python benchmarks/transfer.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import inspect
import json
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
from sklearn.model_selection import StratifiedKFold

import screformer
from screformer import SCReformer
from screformer.data import Augmentation, stratified_split
from screformer.pp import prepare, variable_genes

from _common import DATA_DIR, LogisticBaseline, score, write_results

# screformer's configurations: architecture (config) and training arguments (train).
VARIANTS = {
    "absolute": dict(config={"value_encoding": "absolute"}, train={"augment": False}),
    "relative": dict(config={"value_encoding": "relative"}, train={"augment": False}),
    # The default before 2026-12-04 (the relative bins, augmentation; no head_bins).
    "relative+augment": dict(config={"value_encoding": "relative"}, train={"augment": True}),
    "absolute+augment": dict(config={"value_encoding": "absolute"}, train={"augment": True}),
    # Relative bins plus an embedding of the log2 value itself (xTrimoGene's auto-discretisation).
    "relative+value+augment": dict(
        config={"value_encoding": "relative", "value_embedding": True}, train={"augment": True}
    ),
    # The previous default trained with an exponential moving average of its weights (validated
    # and kept).
    "relative+augment+ema": dict(
        config={"value_encoding": "relative"}, train={"augment": True, "ema_decay": 0.995}
    ),
    # The previous default with the genes a batch loses marked unmeasured, as a query's missing
    # genes are.
    "relative+augment+unmeasured": dict(
        config={"value_encoding": "relative"}, train={"augment": Augmentation(mark_unmeasured=True)}
    ),
    # The previous default trained for all of its epochs: still keeping the best validation
    # epoch, or with no validation cells, the last epoch.
    "relative+augment, no early stopping": dict(
        config={"value_encoding": "relative"}, train={"augment": True, "early_stopping": False}
    ),
    "relative+augment, last epoch": dict(
        config={"value_encoding": "relative"}, train={"augment": True, "validation_size": 0}
    ),
    # The previous default trained as encoding_ceiling.py trains scBERT's head alone (with
    # --max-epochs 30): batches of 64, no validation (the last epoch kept).
    "relative+augment, head-alone recipe": dict(
        config={"value_encoding": "relative"},
        train={"augment": True, "validation_size": 0, "batch_size": 64},
    ),
    # A diagnostic, not a model: no encoder layers (depth 0), so the head reads each token's
    # embedding (gene + bin + position, layer-normalised) directly.
    "relative+augment, depth 0": dict(
        config={"value_encoding": "relative", "depth": 0}, train={"augment": True}
    ),
    "relative, depth 0": dict(
        config={"value_encoding": "relative", "depth": 0}, train={"augment": False}
    ),
    "relative+augment, depth 0, head-alone recipe": dict(
        config={"value_encoding": "relative", "depth": 0},
        train={"augment": True, "validation_size": 0, "batch_size": 64},
    ),
    # The head also reads each gene's relative bin as a number (ReformerConfig.head_bins): the
    # default from 2026-12-04 until the weight average below joined it.
    "relative+headbins+augment": dict(
        config={"value_encoding": "relative", "head_bins": True}, train={"augment": True}
    ),
    # head_bins and a moving average of the weights (measured before head_bins as
    # relative+augment+ema: it helped most on the worst seeds): the default from stop 31
    # (2026-12-04, chosen on results/transfer_seeds.md) until encoder dropout joined it.
    "relative+headbins+augment+ema": dict(
        config={"value_encoding": "relative", "head_bins": True},
        train={"augment": True, "ema_decay": 0.995},
    ),
    # The default of stop 35 (2026-12-05), chosen on two seeds of every stage
    # (results/transfer_encoder_dropout*.md): half of the training cells' MLPs read the genes'
    # levels alone (the encoder's values dropped), after the levels-only head kept Baron's
    # mouse cells.
    "relative+headbins+augment+ema, encoder dropout 0.5": dict(
        config={"value_encoding": "relative", "head_bins": True, "encoder_dropout": 0.5},
        train={"augment": True, "ema_decay": 0.995},
    ),
    # The default since stop 36 (2026-12-05), chosen on two seeds of the pancreas, PBMC and
    # heart-fold stages (results/transfer_rare_repeated_seed1.md and the scratch run of seed 0
    # in docs/transfer.md): each type of fewer than 20 training cells drawn again to 20 rows per
    # epoch (train(min_class_cells=20), each repeat augmented afresh), after the PBMC misses
    # traced to a reference type of 3 cells never called (Symphony's Platelet/MK).
    "relative+headbins+augment+ema, encoder dropout 0.5, rare types repeated": dict(
        config={"value_encoding": "relative", "head_bins": True, "encoder_dropout": 0.5},
        train={"augment": True, "ema_decay": 0.995, "min_class_cells": 20},
    ),
    # The default with three quarters of the training cells reading the levels alone (towards
    # the head without Reformer layers, which led on PBMC).
    "relative+headbins+augment+ema, encoder dropout 0.75": dict(
        config={"value_encoding": "relative", "head_bins": True, "encoder_dropout": 0.75},
        train={"augment": True, "ema_decay": 0.995},
    ),
    # The default with ten relative bins instead of five (a finer top: the cell's top tenth).
    "relative10+headbins+augment+ema": dict(
        config={"value_encoding": "relative", "head_bins": True, "top_bin": 10},
        train={"augment": True, "ema_decay": 0.995},
    ),
    # The default, and half of the batches that lose genes keep the panel's most variable ones
    # (ranked on the training cells), as a query cut to its own highly variable genes.
    "relative+headbins+augment(variable genes)+ema": dict(
        config={"value_encoding": "relative", "head_bins": True},
        train={"augment": Augmentation(variable_share=0.5), "ema_decay": 0.995},
    ),
    # The default before 2026-12-05: the depth augmentation thinned every cell from its own
    # depth, which for log values of a full-length study (Xin, Wang) is millions of counts.
    "relative+headbins+augment+ema, uncapped depth": dict(
        config={"value_encoding": "relative", "head_bins": True},
        train={"augment": Augmentation(max_depth=None), "ema_decay": 0.995},
    ),
    "relative+headbins+augment, depth 0": dict(
        config={"value_encoding": "relative", "head_bins": True, "depth": 0},
        train={"augment": True},
    ),
    # The default with stronger weight decay (AdamW; the default 0.01 barely moves the weights
    # at lr 1e-3): does a more regularised network keep, as LR's L2 penalty does, what carries
    # over to another species' cells?
    "relative+headbins+augment, weight decay 0.1": dict(
        config={"value_encoding": "relative", "head_bins": True},
        train={"augment": True, "weight_decay": 0.1},
    ),
    "relative+headbins+augment, weight decay 1": dict(
        config={"value_encoding": "relative", "head_bins": True},
        train={"augment": True, "weight_decay": 1.0},
    ),
    # The default trained as scBERT's head alone was (batches of 64, no validation, the last
    # epoch kept): does early stopping on the reference's own cells cost the other studies?
    "relative+headbins+augment, head-alone recipe": dict(
        config={"value_encoding": "relative", "head_bins": True},
        train={"augment": True, "validation_size": 0, "batch_size": 64},
    ),
    "relative+augment, balanced weights": dict(
        config={"value_encoding": "relative"}, train={"augment": True, "class_weight": "balanced"}
    ),
}
# Every variant above was measured before head_bins, the weight average, encoder dropout and
# the repeats of rare types (min_class_cells) became defaults: it keeps the head, the weights
# and the training it had. Their pancreas rows
# were measured before 2026-12-05, on log2 values read twice (see on_genes) and with every cell
# thinned from its own depth (Augmentation's max_depth, 20,000 since then; the other stages
# hold no deeper cell).
for _variant in VARIANTS.values():
    _variant["config"].setdefault("head_bins", False)
    _variant["config"].setdefault("encoder_dropout", 0.0)
    _variant["train"].setdefault("ema_decay", None)
    _variant["train"].setdefault("min_class_cells", None)
# The package's defaults (annotate's), and the variants a run trains unless told.
DEFAULT = "relative+headbins+augment+ema, encoder dropout 0.5, rare types repeated"
# The default with the value embedding (each token's log2 value embedded beside its bin):
# measured again on the corrected pancreas input, where a study's magnitudes are read once and so
# agree between studies (the ambient hormone of a deep cell sits in the top bin, at a 2,000th of
# the cell's own hormone: benchmarks/results/pancreas_markers.md).
VARIANTS[f"{DEFAULT}, value embedding"] = dict(
    config=VARIANTS[DEFAULT]["config"] | {"value_embedding": True},
    train=dict(VARIANTS[DEFAULT]["train"]),
)
DEFAULT_VARIANTS = [DEFAULT]
# Confidence thresholds scored from each reference-mode model's calls (cross-study and CV tasks).
THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
SAVED_LR = "logistic_regression (saved, on the model's panel)"
PROCESSED_NOTE = (
    " Processed stage: screformer's model is trained once on the 80% and labels every view (its"
    " reference mode is retrained on each gene subset); `logistic_regression` is retrained on"
    f" each view's genes; `{SAVED_LR}` is trained once, as the model is, and reads the genes a"
    " view lacks as 0."
)

# Coarse and harmonised PBMC labels: each study's names to one vocabulary.
PBMC3K_FINE = {
    "Naive CD4 T": "CD4 T",
    "Memory CD4 T": "CD4 T",
    "CD8 T": "CD8 T",
    "CD14+ Mono": "CD14 Mono",
    "FCGR3A+ Mono": "CD16 Mono",
    "B": "B",
    "NK": "NK",
    "DC": "DC",
    "Platelet": "Platelet/MK",
}
SYMPHONY = {
    "T_CD4": "CD4 T",
    "T_CD8": "CD8 T",
    "Mono_CD14": "CD14 Mono",
    "Mono_CD16": "CD16 Mono",
    "B": "B",
    "NK": "NK",
    "DC": "DC",
    "MK": "Platelet/MK",
    "HSC": "HSC",
}
# Ding's three types are coarse: pbmc3k is coarsened to match (T cells, monocytes).
PBMC3K_COARSE = {
    **PBMC3K_FINE,
    "Naive CD4 T": "T",
    "Memory CD4 T": "T",
    "CD8 T": "T",
    "CD14+ Mono": "Mono",
    "FCGR3A+ Mono": "Mono",
}
DING = {"Cytotoxic T cell": "T", "CD16+ monocyte": "Mono", "B cell": "B"}


PANCREAS = {
    "xin": ("pancreas_xin_subset.h5ad", "cell_type"),
    "wang": ("pancreas_wang_subset.h5ad", "cell_type"),
    "baron": ("pancreas_baron_human_mouse_toy.h5ad", "Group"),
}
# Baron's 'activated_stellate' is Wang's 'stellate'; no other label is changed.
PANCREAS_HARMONISE = {"activated_stellate": "stellate"}


def load_pancreas(name: str) -> ad.AnnData:
    file, key = PANCREAS[name]
    adata = ad.read_h5ad(DATA_DIR / "labelled" / file)
    adata.obs_names = [f"{name}:{i}" for i in range(adata.n_obs)]
    labels = adata.obs[key].astype(str).replace(PANCREAS_HARMONISE)
    # Baron's file holds human and mouse cells (on ortholog symbols; obs['Batch']).
    species = adata.obs["Batch"].astype(str) if name == "baron" else "human"
    obs = pd.DataFrame({"label": labels.to_numpy(), "species": species}, index=adata.obs_names)
    return ad.AnnData(adata.X, obs=obs, var=pd.DataFrame(index=adata.var_names))


def on_genes(studies: list[ad.AnnData], genes: list[str]) -> ad.AnnData:
    """The studies on ``genes``, stacked: each normalised over all its own genes first by
    screformer's preprocessing (counts per 1e4; Xin's and Wang's log values un-logged), and
    handed on un-logged, so that ``annotate`` and the LR baseline read each study's values once,
    as they read its own file (before 2026-12-05 they got log2 values, which they read again:
    Xin's and Wang's as linear values, Baron's as a natural log)."""
    parts = []
    for a in studies:
        X = prepare(a, genes).X
        X.data = np.exp2(X.data) - 1
        parts.append(ad.AnnData(X, obs=a.obs, var=pd.DataFrame(index=genes)))
    return ad.concat(parts) if len(parts) > 1 else parts[0]


def labelled(path: str, key: str, mapping: dict | None = None, layer: str | None = None):
    """An AnnData with ``obs['label']`` (mapped), values from ``layer`` as X, gene symbols."""
    adata = ad.read_h5ad(DATA_DIR / "labelled" / path)
    labels = adata.obs[key].astype(str)
    if mapping is not None:
        labels = labels.map(mapping)
    X = adata.X if layer is None else adata.layers[layer]
    out = ad.AnnData(
        X, obs=pd.DataFrame({"label": labels.to_numpy()}, index=adata.obs_names), var=adata.var
    )
    if "technology" in adata.obs:
        out.obs["technology"] = adata.obs["technology"].astype(str).to_numpy()
    return out[:, ~out.var_names.duplicated()].copy()


def run_screformer(query, reference, variant: dict, epochs) -> tuple[np.ndarray, float, dict]:
    """The default calls, the seconds taken, and the calls at each of ``THRESHOLDS``
    (:func:`calls_by_threshold`)."""
    query = query.copy()
    start = time.perf_counter()
    screformer.tl.annotate(
        query,
        "label",
        reference=reference,
        config=variant["config"],
        max_epochs=epochs,
        **variant["train"],
        enable_progress_bar=False,
    )
    seconds = time.perf_counter() - start
    predicted, by_threshold = calls_by_threshold(query)
    return predicted, seconds, by_threshold


def calls_by_threshold(query) -> tuple[np.ndarray, dict]:
    """The calls ``tl.annotate`` wrote into ``query``, and the same model's calls at each of
    ``THRESHOLDS`` (the threshold only decides which of its calls are kept)."""
    predicted = query.obs["screformer_prediction"].astype(str).to_numpy()
    confidence = query.obs["screformer_confidence"].to_numpy()
    best = np.asarray(query.uns["screformer"]["classes"])[
        query.obsm["screformer_probabilities"].argmax(1)
    ]
    # Unassigned for another reason than confidence (no panel gene expressed) at any threshold.
    used = query.uns["screformer"]["params"]["unassigned_threshold"]
    other = (predicted == "Unassigned") & (confidence >= used)
    by_threshold = {t: np.where((confidence < t) | other, "Unassigned", best) for t in THRESHOLDS}
    return predicted, by_threshold


def run_lr(query, reference) -> tuple[np.ndarray, float, dict]:
    start = time.perf_counter()
    genes = screformer.tl.shared_genes(reference, query, min_genes=1)
    model = LogisticBaseline(reference, reference.obs["label"], genes, C=0.1, scale=False)
    return model.predict(query), time.perf_counter() - start, {}


def transfer_row(task, query, reference, variants, epochs) -> dict:
    """Train on ``reference``, label ``query``; score its cells of the reference's types."""
    known = query.obs["label"].isin(set(reference.obs["label"])).to_numpy()
    truth = query.obs["label"].astype(str).to_numpy()
    row = {"task": task, "n_reference": reference.n_obs, "n_query": query.n_obs}
    row["n_genes"] = len(screformer.tl.shared_genes(reference, query, min_genes=1))
    methods = {name: (run_screformer, (v, epochs)) for name, v in variants.items()}
    methods["logistic_regression"] = (run_lr, ())

    def scored(calls) -> dict:
        out = score(truth[known], calls[known])
        if (~known).any():
            out["unseen_types_unassigned"] = float(np.mean(calls[~known] == "Unassigned"))
        return out

    species = query.obs["species"].to_numpy() if "species" in query.obs else None
    for name, (fn, extra) in methods.items():
        predicted, seconds, by_threshold = fn(query, reference, *extra)
        row[name] = scored(predicted) | {"seconds": seconds}
        if species is not None and len(np.unique(species)) > 1:
            row[name]["by_species"] = {
                sp: score(truth[known & (species == sp)], predicted[known & (species == sp)])
                for sp in np.unique(species)
            }
        if by_threshold:
            row[name]["by_threshold"] = {str(t): scored(c) for t, c in by_threshold.items()}
        print(f"{task} | {name}: {row[name]}", flush=True)
    return row


def pancreas_tasks():
    studies = {name: load_pancreas(name) for name in ("xin", "wang", "baron")}
    for target, test in studies.items():
        others = [n for n in studies if n != target]
        for sources in [[o] for o in others] + [others]:
            train = [studies[n] for n in sources]
            genes = sorted(set.intersection(*(set(a.var_names) for a in [test, *train])))
            reference = on_genes(train, genes)
            query = on_genes([test], genes)
            yield f"pancreas {'+'.join(sources)} -> {target}", query, reference


def pbmc_tasks():
    pbmc3k = labelled("pbmc3k_labelled.h5ad", "classified", PBMC3K_FINE)
    pbmc3k_coarse = labelled("pbmc3k_labelled.h5ad", "classified", PBMC3K_COARSE)
    symphony = labelled(
        "symphony_pbmc_3tech_1500.h5ad", "cell_type", SYMPHONY, layer="logcp10k_original"
    )
    ding = {
        name: labelled(f"ding2020_pbmc1_{name}.h5ad", "yy", DING, layer="lognorm_original")
        for name in ("dropseq_598", "indrops_644")
    }
    yield "pbmc3k -> Symphony (3 10x technologies)", symphony, pbmc3k
    for name, query in ding.items():
        yield f"pbmc3k -> Ding {name.split('_')[0]}", query, pbmc3k_coarse
    techs = list(symphony.obs["technology"].unique())
    for source in techs:
        for target in techs:
            if source != target:
                ref = symphony[symphony.obs["technology"] == source].copy()
                query = symphony[symphony.obs["technology"] == target].copy()
                yield f"Symphony {source} -> {target}", query, ref
    (a, qa), (b, qb) = ding.items()
    yield "Ding dropseq -> inDrops", qb, qa
    yield "Ding inDrops -> dropseq", qa, qb


def processed_views(query: ad.AnnData, seed: int) -> dict[str, ad.AnnData]:
    """The held-out counts presented as a user may hold them."""

    def lognorm(target_sum):
        view = query.copy()
        sc.pp.normalize_total(view, target_sum=target_sum)
        sc.pp.log1p(view)
        return view

    def hvg(n):
        # Normalised to 1e4 (CellTypist's convention) before the genes are taken: only the gene
        # subset differs from (b), the scale is view (b')'s test.
        view = lognorm(1e4)
        n = min(n, view.n_vars)
        sc.pp.highly_variable_genes(view, n_top_genes=n)
        return view[:, view.var["highly_variable"]].copy()

    thinned = query.copy()
    counts = thinned.X.tocsr().astype(np.int64)
    counts.data = np.random.default_rng(seed).binomial(counts.data, 0.5)
    counts.eliminate_zeros()
    thinned.X = counts.astype(np.float32)
    return {
        "(a) counts": query,
        "(b) log-normalised to 1e4": lognorm(1e4),
        "(b') log-normalised to the median total": lognorm(None),
        "(c) 2,000 HVGs, log-normalised to 1e4": hvg(2000),
        "(d) 500 HVGs, log-normalised to 1e4": hvg(500),
        "(e) counts thinned to half depth": thinned,
    }


def processed_query_rows(name, adata, variants, epochs, seed) -> list[dict]:
    """One model per method trained on 80% (counts) labels the 20% as each view."""
    # Stratified, with a class of one cell kept in training (heart's Mesothelial).
    tr, te = stratified_split(adata.obs["label"].to_numpy(), 0.2, seed)
    train, test = adata[tr].copy(), adata[te].copy()
    views = processed_views(test, seed)
    rows = {view: {"task": f"{name}: {view}", "n_genes": v.n_vars} for view, v in views.items()}
    truth = test.obs["label"].astype(str).to_numpy()
    # The panel tl.annotate gives a new model: the training cells' most variable genes.
    n_top_genes = inspect.signature(screformer.tl.annotate).parameters["n_top_genes"].default
    panel = variable_genes(train, n_top_genes)
    for method, variant in variants.items():
        SCReformer.setup_anndata(train, labels_key="label")
        seed = variant["train"].get("seed", 0)
        model = SCReformer(train, gene_panel=panel, seed=seed, **variant["config"])
        model.train(max_epochs=epochs, enable_progress_bar=False, **variant["train"])
        for view, query in views.items():
            query = query.copy()
            screformer.tl.annotate(query, model=model)
            predicted, by_threshold = calls_by_threshold(query)
            rows[view][method] = score(truth, predicted) | {
                "by_threshold": {str(t): score(truth, c) for t, c in by_threshold.items()}
            }
            if view.startswith(("(c)", "(d)")):
                predicted, _, _ = run_screformer(query, train, variant, epochs)
                rows[view][f"{method} (reference mode)"] = score(truth, predicted)
            print(f"{name} {view} | {method}: {rows[view][method]}", flush=True)
    # The linear model a user would save, as the screformer model is: trained once on the
    # panel, its genes the view lacks read as 0 (the like-for-like baseline for a saved model).
    saved_lr = LogisticBaseline(train, train.obs["label"], panel, C=0.1, scale=False)
    for view, query in views.items():
        predicted, _, _ = run_lr(query, train)
        rows[view]["logistic_regression"] = score(truth, predicted)
        rows[view][SAVED_LR] = score(truth, saved_lr.predict(query))
    return list(rows.values())


def cv_rows(name, adata, variants, epochs, folds, seed) -> list[dict]:
    labels = adata.obs["label"].astype(str).to_numpy()
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    rows = []
    for k, (tr, te) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        reference, query = adata[tr].copy(), adata[te].copy()
        rows.append(transfer_row(f"{name} fold {k}", query, reference, variants, epochs))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    parser.add_argument("--max-epochs", type=int, default=None, help="default: the model's rule")
    parser.add_argument("--pbmc3k-cv", action="store_true", help="also pbmc3k 5-fold")
    parser.add_argument("--only", nargs="+", choices=["pancreas", "pbmc", "processed", "cv"])
    parser.add_argument("--seed", type=int, default=0, help="the splits (processed, cv)")
    parser.add_argument(
        "--model-seed", type=int, default=0, help="screformer's initialisation and training order"
    )
    parser.add_argument("--name", default="transfer", help="results file name")
    parser.add_argument("--markdown-from", help="only rewrite the Markdown of this results JSON")
    parser.add_argument(
        "--merge", nargs=2, metavar=("NEW", "INTO"), help="replace INTO's stages by NEW's (JSON)"
    )
    args = parser.parse_args(argv)
    if args.merge:
        new, into = (json.loads(Path(p).read_text()) for p in args.merge)
        into["results"].update(new["results"])
        into["rerun"] = into.get("rerun", []) + [
            {"stages": list(new["results"]), "command": new["command"], "wall_s": new["wall_s"]}
        ]
        Path(args.merge[1]).write_text(json.dumps(into, indent=2, default=str))
        args.markdown_from = args.merge[1]
    if args.markdown_from:
        summary = json.loads(Path(args.markdown_from).read_text())
        Path(args.markdown_from).with_suffix(".md").write_text(markdown(summary))
        return
    variants = {name: VARIANTS[name] for name in args.variants}
    if args.model_seed:  # 0 is annotate's default: results files stay as they were
        variants = {
            n: v | {"train": v["train"] | {"seed": args.model_seed}} for n, v in variants.items()
        }
    stages = set(args.only or ["pancreas", "pbmc", "processed", "cv"])
    epochs = args.max_epochs
    pbmc3k = labelled("pbmc3k_labelled.h5ad", "classified")
    heart = labelled("heart_litvinukova_sanger_624cells.h5ad", "cell_type")

    start = time.perf_counter()
    results = {}
    if "pancreas" in stages:
        results["pancreas"] = [
            transfer_row(t, q, r, variants, epochs) for t, q, r in pancreas_tasks()
        ]
    if "pbmc" in stages:
        results["pbmc"] = [transfer_row(t, q, r, variants, epochs) for t, q, r in pbmc_tasks()]
    if "processed" in stages:
        results["processed"] = [
            *processed_query_rows("pbmc3k", pbmc3k, variants, epochs, args.seed),
            *processed_query_rows("heart", heart, variants, epochs, args.seed),
        ]
    if "cv" in stages:
        results["cv"] = cv_rows("heart", heart, variants, epochs, 5, args.seed)
        if args.pbmc3k_cv:
            results["cv"] += cv_rows("pbmc3k", pbmc3k, variants, epochs, 5, args.seed)
    summary = {
        "methods": [*variants, "logistic_regression"],
        "variants": variants,
        "max_epochs": epochs,
        "results": results,
        "wall_s": time.perf_counter() - start,
    }
    write_results(args.out, args.name, summary, markdown)


def _cell(result: dict | None) -> str:
    if not result:
        return ""
    text = f"{result['macro_f1']:.3f} / {result['accuracy']:.3f}"
    return text + (f" ({100 * result['unassigned']:.0f}%)" if result["unassigned"] else "")


def stage_means(s: dict) -> dict[str, dict[str, float]]:
    """Mean macro F1 of each method over each stage's tasks (processed: views (a)-(e))."""
    means = {}
    for stage, rows in s["results"].items():
        means[stage] = {
            m: float(np.mean([r[m]["macro_f1"] for r in rows if m in r]))
            for m in s["methods"]
            if any(m in r for r in rows)
        }
    return means


def targets(s: dict, method: str) -> list[str]:
    """The transfer issue's checks for ``method`` (the default) against logistic regression."""
    lr = "logistic_regression"
    rows = [r for stage in s["results"].values() for r in stage if method in r and lr in r]
    wins = [r["task"] for r in rows if r[method]["macro_f1"] >= r[lr]["macro_f1"]]
    cross = [r for st in ("pancreas", "pbmc") for r in s["results"].get(st, [])]
    confident = [r for r in cross if r[lr]["accuracy"] > 0.85]
    over = [
        f"{r['task']} ({100 * r[method]['unassigned']:.0f}%)"
        for r in confident
        if r[method]["unassigned"] >= 0.05
    ]
    return [
        f"`{method}` (the default when run) reaches logistic regression's macro F1 on "
        f"{len(wins)} of {len(rows)} tasks" + (f": {'; '.join(wins)}." if wins else "."),
        "",
        f"Unassigned share of the known types' cells, in the {len(confident)} cross-study "
        f"transfers where logistic regression's accuracy is above 0.85: under 5% in "
        f"{len(confident) - len(over)}" + (f"; 5% or more in {'; '.join(over)}." if over else "."),
    ]


def threshold_lines(s: dict, method: str) -> list[str]:
    """Mean macro F1 (Unassigned share) of each stage at each confidence threshold, and each
    stage's threshold as chosen on the other stages' tasks alone (ties: the higher threshold)."""
    stages = {
        stage: [r[method]["by_threshold"] for r in rows if "by_threshold" in r.get(method, {})]
        for stage, rows in s["results"].items()
    }
    stages = {stage: rows for stage, rows in stages.items() if rows}
    if not stages:
        return []
    thresholds = list(next(iter(stages.values()))[0])

    def mean(rows, t, key="macro_f1"):
        return float(np.mean([r[t][key] for r in rows]))

    unseen = [r for rows in stages.values() for r in rows if "unseen_types_unassigned" in r["0.0"]]
    columns = [f"{st} ({len(r)})" for st, r in stages.items()]
    if unseen:
        columns.append(f"types the reference lacks (tasks: {len(unseen)})")
    lines = [
        "",
        f"## Confidence threshold (`{method}`)",
        "",
        "The same models' calls at each threshold (cells under it are Unassigned): in reference "
        "mode, and in the processed stage the trained model's calls on the held-out views. Mean "
        "macro F1 (mean Unassigned share of the known types' cells) per stage"
        + (
            ", and the mean share of the cells of types the reference lacks called Unassigned"
            if unseen
            else ""
        )
        + "; last rows: each stage's threshold chosen on the other stages' tasks only, and its "
        "macro F1 there.",
        "",
        "| threshold | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for t in thresholds:
        cells = [
            f"{mean(r, t):.3f} ({100 * mean(r, t, 'unassigned'):.1f}%)" for r in stages.values()
        ]
        if unseen:
            cells.append(f"{100 * mean(unseen, t, 'unseen_types_unassigned'):.0f}%")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    if len(stages) < 2:
        return lines
    chosen = {}
    for stage in stages:
        others = [r for st, rows in stages.items() if st != stage for r in rows]
        chosen[stage] = max(reversed(thresholds), key=lambda t: mean(others, t))
    lines.append("| chosen on the other stages | " + " | ".join(chosen[st] for st in stages) + " |")
    lines.append(
        "| macro F1 at that threshold | "
        + " | ".join(f"{mean(rows, chosen[st]):.3f}" for st, rows in stages.items())
        + " |"
    )
    return lines


def markdown(s: dict) -> str:
    methods = s["methods"]
    means = stage_means(s)
    lines = [
        "# Transfer: other studies and processed queries",
        "",
        f"Command: `{s['command']}`  ",
        f"Machine: {s['machine']}  ",
        f"Wall time: {s['wall_s'] / 60:.0f} min; peak memory {s['peak_rss_gb']:.2f} GB.",
        *(
            f"Stages {', '.join(r['stages'])} rerun by `{r['command']}` "
            f"({r['wall_s'] / 60:.0f} min).  "
            for r in s.get("rerun", [])
        ),
        *([s["note"] + "  "] if "note" in s else []),
        "",
        "Each cell: macro F1 over the types present in the scored cells' truth / accuracy "
        "(share called Unassigned, when any). Logistic regression: C=0.1, log-normalised, on "
        "the shared genes. screformer variants: "
        + "; ".join(f"`{k}` = {v}" for k, v in s["variants"].items())
        + "."
        + (PROCESSED_NOTE if any(SAVED_LR in r for r in s["results"].get("processed", [])) else ""),
        "",
        "## Mean macro F1 per stage",
        "",
        "| stage | tasks | " + " | ".join(methods) + " |",
        "|---" * (len(methods) + 2) + "|",
    ]
    for stage, values in means.items():
        n = len(s["results"][stage])
        cells = [f"{values[m]:.3f}" if m in values else "" for m in methods]
        lines.append(f"| {stage} | {n} | " + " | ".join(cells) + " |")
    every = [r for rows in s["results"].values() for r in rows]
    overall = [np.mean([r[m]["macro_f1"] for r in every if m in r]) for m in methods]
    lines.append(
        f"| **all** | {len(every)} | " + " | ".join(f"**{v:.3f}**" for v in overall) + " |"
    )
    # The default of the run's time: today's, or one before the repeats of rare types, encoder
    # dropout, the weight average or head_bins.
    former = (
        DEFAULT,
        "relative+headbins+augment+ema, encoder dropout 0.5",
        "relative+headbins+augment+ema",
        "relative+headbins+augment",
        "relative+augment",
    )
    default = next((m for m in former if m in methods), None)
    if default is not None:
        lines += ["", *targets(s, default), *threshold_lines(s, default)]
    for stage, rows in s["results"].items():
        extra = {m for r in rows for m, v in r.items() if isinstance(v, dict) and m not in methods}
        columns = [*methods, *sorted(extra)]
        lines += ["", f"## {stage}", "", "| task | genes | " + " | ".join(columns) + " |"]
        lines.append("|---" * (len(columns) + 2) + "|")
        for r in rows:
            cells = [_cell(r.get(m)) for m in columns]
            lines.append(f"| {r['task']} | {r.get('n_genes', '')} | " + " | ".join(cells) + " |")
        split = [r for r in rows if "by_species" in r.get(methods[0], {})]
        if split:
            lines += [
                "",
                "The same, split by the query's species (Baron: human and mouse cells):",
                "",
            ]
            lines += ["| task | species | " + " | ".join(methods) + " |"]
            lines.append("|---" * (len(methods) + 2) + "|")
            for r in split:
                for sp in r[methods[0]]["by_species"]:
                    cells = [_cell(r[m]["by_species"][sp]) for m in methods]
                    lines.append(f"| {r['task']} | {sp} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
