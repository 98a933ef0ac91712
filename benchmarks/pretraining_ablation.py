"""The paper's ablation (Li et al. 2025, Table 2) on pbmc3k: does the bundled pretrained encoder
help fine-tuning? Stratified 5-fold cross-validation of one architecture (the default model's:
its 14,737-gene panel and configuration) started three ways:

- ``pretrained``: the bundled ``"default"`` encoder (gene2vec on the corpus + masked-expression
  pre-training), fresh classifier head;
- ``gene2vec_only``: no pre-training, gene embeddings from the same corpus gene2vec vectors;
- ``random``: no pre-training, random gene embeddings (the same seed for the weights).

Data: ../shared/data/labelled/pbmc3k_labelled.h5ad (10x pbmc3k, Seurat tutorial labels). Note:
the default model's pre-training corpus includes pbmc3k's expression (never its labels).

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \\
        python benchmarks/pretraining_ablation.py --out benchmarks/results

``--gene2vec`` takes the corpus vectors written by build_default_model.py
(build/default_model/gene2vec_corpus_200.txt); without the file they are trained again (same
code, same seed).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import anndata as ad
import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score

import screformer
from screformer import SCReformer
from screformer.gene2vec import read_gene2vec, train_gene2vec

from _common import DATA_DIR, mean_sd, write_results

DATA = DATA_DIR / "labelled/pbmc3k_labelled.h5ad"
LABELS = "classified"
VARIANTS = ("pretrained", "gene2vec_only", "random")


def build(variant: str, train: ad.AnnData, encoder: dict, vectors: np.ndarray, seed: int):
    if variant == "pretrained":
        return SCReformer.from_pretrained("default", train)
    return SCReformer(
        train,
        gene_panel=encoder["gene_panel"],
        config=encoder["config"],
        gene_vectors=vectors if variant == "gene2vec_only" else None,
        seed=seed,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--max-epochs", type=int, default=4)
    parser.add_argument("--gene2vec", default="build/default_model/gene2vec_corpus_200.txt")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    encoder = torch.load(screformer.pretrained.fetch("default"), weights_only=True)
    panel, dim = encoder["gene_panel"], encoder["config"]["dim"]
    if not Path(args.gene2vec).exists():
        corpus = sorted((DATA_DIR / "unlabelled").glob("*.h5ad"))
        corpus += sorted((DATA_DIR / "labelled").glob("*.h5ad"))
        train_gene2vec(corpus, args.gene2vec, dim=200, seed=0)
    vectors, _ = read_gene2vec(args.gene2vec, panel, dim=dim)

    adata = ad.read_h5ad(DATA)
    labels = adata.obs[LABELS].astype(str).to_numpy()
    folds = screformer.tl.stratified_folds(labels, args.folds, seed=args.seed)
    rows = {v: [] for v in VARIANTS}
    for k, (tr, te) in enumerate(folds):
        train, test = adata[tr].copy(), adata[te]
        SCReformer.setup_anndata(train, labels_key=LABELS)
        for variant in VARIANTS:
            model = build(variant, train, encoder, vectors, args.seed)
            start = time.perf_counter()
            model.train(max_epochs=args.max_epochs, seed=args.seed, enable_progress_bar=False)
            fit_s = time.perf_counter() - start
            prediction = model.predict(test)
            rows[variant].append(
                {
                    "fold": k,
                    "accuracy": accuracy_score(labels[te], prediction),
                    "macro_f1": f1_score(labels[te], prediction, average="macro"),
                    "fit_s": fit_s,
                    "final_validation_loss": float(model.history["validation_loss"].iloc[-1, 0]),
                }
            )
            print(f"fold {k} {variant}: {rows[variant][-1]}", flush=True)

    info = encoder["pretraining"]
    history = info["history"]
    best = info["best_epoch"]
    summary = {
        "data": DATA.name,
        "n_cells": adata.n_obs,
        "panel_genes": len(panel),
        "pbmc3k_genes_in_panel": int(
            screformer.pp.align_genes(adata.var_names, panel, min_genes=1).n_found
        ),
        "config": encoder["config"],
        "max_epochs": args.max_epochs,
        "folds": rows,
        "masked_bin_accuracy_held_out": history["validation_accuracy"][best],
        "most_common_bin_accuracy_held_out": history["validation_baseline_accuracy"][best],
        "pretraining_validation_cells": "10% of the corpus cells, never trained on",
    }

    def markdown(s):
        lines = [
            "# Pre-training ablation on pbmc3k (Li et al. 2025, Table 2)",
            "",
            f"Command: `{s['command']}`",
            "",
            f"Stratified {args.folds}-fold CV on {s['n_cells']} cells; one architecture "
            f"(panel of {s['panel_genes']} genes, {s['pbmc3k_genes_in_panel']} of them in "
            f"pbmc3k; dim {s['config']['dim']}, depth {s['config']['depth']}), "
            f"{s['max_epochs']} fine-tuning epochs each.",
            "",
            "| start | accuracy | macro F1 | fit s / fold |",
            "|---|---|---|---|",
        ]
        for variant, runs in s["folds"].items():
            acc = mean_sd([r["accuracy"] for r in runs])
            f1 = mean_sd([r["macro_f1"] for r in runs])
            fit = np.mean([r["fit_s"] for r in runs])
            lines.append(f"| {variant} | {acc} | {f1} | {fit:.0f} |")
        lines += [
            "",
            "Masked-expression task, on the pre-training corpus's held-out cells: the pretrained "
            f"encoder predicts {s['masked_bin_accuracy_held_out']:.3f} of masked bins right; "
            "predicting each cell's most common bin gets "
            f"{s['most_common_bin_accuracy_held_out']:.3f}.",
            "",
        ]
        return "\n".join(lines)

    write_results(args.out, "pretraining_ablation", summary, markdown)


if __name__ == "__main__":
    main()
