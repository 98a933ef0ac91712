"""Stratified 5-fold cross-validation on pbmc3k: screformer's default vs CellTypist-style
logistic regression, in one run; plus the cost of the paper configuration (all genes).

Data: ../shared/data/labelled/pbmc3k_labelled.h5ad (10x Genomics pbmc3k, 2,638 cells x 13,714
genes, raw UMI counts; labels obs['classified'] from the Seurat tutorial; CC BY 4.0).

Run from the repository root (tcmalloc steadies timings on this VM, see docs):

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
        python benchmarks/pbmc3k_cv.py --out benchmarks/results

Writes ``pbmc3k_cv.json`` and ``pbmc3k_cv.md`` to ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import inspect
import json
import subprocess
import sys
import time

import anndata as ad
import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

import screformer
from screformer import SCReformer
from screformer.data import cell_loader
from screformer.module import ReformerConfig, SCReformerModule
from screformer.pp import prepare, variable_genes

from _common import DATA_DIR, LogisticBaseline, mean_sd, peak_rss_gb, score, write_results

DATA = DATA_DIR / "labelled/pbmc3k_labelled.h5ad"
LABELS = "classified"


def screformer_fold(
    train: ad.AnnData, test: ad.AnnData, train_kwargs: dict, config: dict, n_top_genes
) -> dict:
    """A model trained as ``tl.annotate`` trains one (its panel: the training cells' most
    variable genes), scored on ``test``."""
    train = train.copy()
    start = time.perf_counter()
    panel = None if n_top_genes is None else variable_genes(train, n_top_genes)
    SCReformer.setup_anndata(train, labels_key=LABELS)
    model = SCReformer(train, gene_panel=panel, **config)
    model.train(enable_progress_bar=False, **train_kwargs)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    prepared = model.prepare(test)
    probabilities = model.predict_proba(prepared)
    predict_s = time.perf_counter() - start
    return {
        "prediction": np.asarray(model.classes)[probabilities.argmax(1)],
        "fit_s": fit_s,
        "predict_s": predict_s,
        "epochs": int(model.history["train_loss"].shape[0]),
        "config": model.config.to_dict(),
    }


def annotate_job(seed: int) -> None:
    """``tl.annotate`` fine-tune + predict of all pbmc3k cells, then inference alone; prints
    one JSON line (seconds, inference cells/s, this process's peak memory)."""
    start = time.perf_counter()
    adata = ad.read_h5ad(DATA)
    model = screformer.tl.annotate(adata, LABELS, seed=seed, enable_progress_bar=False)
    total_s = time.perf_counter() - start
    start = time.perf_counter()
    model.predict_proba(model.prepare(adata))
    inference_s = time.perf_counter() - start
    print(
        json.dumps(
            {
                "annotate_s": total_s,
                "epochs": int(model.history["train_loss"].shape[0]),
                "inference_cells_per_s": adata.n_obs / inference_s,
                "peak_rss_gb": peak_rss_gb(),
            }
        )
    )


def paper_cost(adata: ad.AnnData, n_forward: int, n_train: int) -> dict:
    """Seconds per cell of the paper configuration (every gene a token), forward and train."""
    prepared = prepare(adata, list(adata.var_names))
    config = ReformerConfig.paper(prepared.X.shape[1])
    module = SCReformerModule(config, n_classes=9)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    labels = np.zeros(adata.n_obs, dtype=np.int64)
    module.eval()
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in cell_loader(prepared.X, config, np.arange(n_forward), batch_size=1):
            module(batch["gene_ids"], batch["bins"], batch["mask"])
    forward = (time.perf_counter() - start) / n_forward
    module.train()
    start = time.perf_counter()
    for batch in cell_loader(prepared.X, config, np.arange(n_train), labels, batch_size=1):
        logits = module(batch["gene_ids"], batch["bins"], batch["mask"])
        torch.nn.functional.cross_entropy(logits, batch["labels"]).backward()
        optimizer.step()
        optimizer.zero_grad()
    train = (time.perf_counter() - start) / n_train
    return {
        "tokens_per_cell": config.n_genes,
        "forward_s_per_cell": forward,
        "train_s_per_cell": train,
        "n_forward_cells": n_forward,
        "n_train_cells": n_train,
        "config": config.to_dict(),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--max-epochs", type=int, default=None, help="default: the model's rule")
    parser.add_argument("--paper-forward-cells", type=int, default=48)
    parser.add_argument("--paper-train-cells", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--annotate-job", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-augment", action="store_true", help="train without augmentation")
    parser.add_argument("--value-encoding", choices=["absolute", "relative"])
    parser.add_argument("--no-annotate-job", action="store_true", help="folds only")
    parser.add_argument("--name", default="pbmc3k_cv", help="results file name")
    parser.add_argument(
        "--n-top-genes",
        type=lambda v: None if v == "all" else int(v),
        default=inspect.signature(screformer.tl.annotate).parameters["n_top_genes"].default,
        help="panel: the most variable training genes (default: tl.annotate's; 'all')",
    )
    args = parser.parse_args(argv)
    if args.annotate_job:
        return annotate_job(args.seed)

    adata = ad.read_h5ad(DATA)
    labels = adata.obs[LABELS].astype(str).to_numpy()
    folds = StratifiedKFold(args.folds, shuffle=True, random_state=args.seed)
    train_kwargs = dict(max_epochs=args.max_epochs, seed=args.seed)
    if args.no_augment:
        train_kwargs["augment"] = False
    config = {} if args.value_encoding is None else {"value_encoding": args.value_encoding}
    rows = {"screformer": [], "logistic_regression": []}
    for k, (tr, te) in enumerate(folds.split(np.zeros(len(labels)), labels)):
        train, test = adata[tr], adata[te]
        result = screformer_fold(train, test, train_kwargs, config, args.n_top_genes)
        truth = labels[te]
        rows["screformer"].append(
            {
                "fold": k,
                **score(truth, result["prediction"]),
                "fit_s": result["fit_s"],
                "epochs": result["epochs"],
                "predict_cells_per_s": len(te) / result["predict_s"],
            }
        )
        start = time.perf_counter()
        baseline = LogisticBaseline(train, labels[tr], list(adata.var_names)).predict(test)
        rows["logistic_regression"].append(
            {
                "fold": k,
                **score(truth, baseline),
                "fit_s": time.perf_counter() - start,
            }
        )
        print(f"fold {k}: screformer {rows['screformer'][-1]}", flush=True)
        print(f"fold {k}: logistic regression {rows['logistic_regression'][-1]}", flush=True)

    # tl.annotate on all 2,638 cells as a user would, in a fresh process of its own so that its
    # time and peak memory are its own.
    job = (
        None
        if args.no_annotate_job
        else json.loads(
            subprocess.run(
                [sys.executable, __file__, "--annotate-job", "--seed", str(args.seed)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.splitlines()[-1]
        )
    )

    paper = None
    if args.paper_forward_cells:
        paper = paper_cost(adata, args.paper_forward_cells, args.paper_train_cells)

    summary = {
        "data": str(DATA.name),
        "n_cells": adata.n_obs,
        "n_genes": adata.n_vars,
        "screformer_config": result["config"],
        "train_kwargs": train_kwargs,
        "n_top_genes": args.n_top_genes,
        "folds": rows,
        "annotate_job": job,
        "paper_configuration": paper,
    }
    write_results(args.out, args.name, summary, markdown)


def markdown(s: dict) -> str:
    sc, lr = s["folds"]["screformer"], s["folds"]["logistic_regression"]
    job = s["annotate_job"]
    lines = [
        f"# pbmc3k {len(sc)}-fold cross-validation",
        "",
        f"Command: `{s['command']}`  ",
        f"Data: {s['data']} ({s['n_cells']} cells x {s['n_genes']} genes)  ",
        f"Machine: {s['machine']}",
        "",
        "| method | accuracy | macro F1 | fit s / fold | predict cells/s |",
        "|---|---|---|---|---|",
        f"| screformer ({s['screformer_config']['value_encoding']}, augment="
        f"{s['train_kwargs'].get('augment', True)}, {s.get('n_top_genes') or 'all'} most "
        f"variable genes) | {mean_sd([r['accuracy'] for r in sc])} | "
        f"{mean_sd([r['macro_f1'] for r in sc])} | {np.mean([r['fit_s'] for r in sc]):.0f} | "
        f"{np.mean([r['predict_cells_per_s'] for r in sc]):.0f} |",
        "| logistic regression (CellTypist-style, all genes) | "
        f"{mean_sd([r['accuracy'] for r in lr])} | "
        f"{mean_sd([r['macro_f1'] for r in lr])} | {np.mean([r['fit_s'] for r in lr]):.0f} | |",
        "",
        (
            f"`tl.annotate` on all {s['n_cells']} cells (fine-tune {job['epochs']} epochs + "
            f"predict, reading the file included), in a process of its own: "
            f"{job['annotate_s']:.0f} s, peak memory {job['peak_rss_gb']:.2f} GB; inference alone "
            f"{job['inference_cells_per_s']:.0f} cells/s. "
            if job
            else ""
        )
        + f"Peak memory of this script (folds and paper configuration): {s['peak_rss_gb']:.2f} GB.",
        "",
        f"screformer configuration: `{s['screformer_config']}`; training: `{s['train_kwargs']}`; "
        f"epochs run per fold: {[r['epochs'] for r in sc]}. Fit time per fold includes choosing "
        "the panel genes.",
        "",
        "Per fold (macro F1): "
        + "; ".join(
            f"fold {a['fold']}: screformer {a['macro_f1']:.3f}, LR {b['macro_f1']:.3f}"
            for a, b in zip(sc, lr, strict=True)
        )
        + ".",
    ]
    p = s.get("paper_configuration")
    if p:
        lines += [
            "",
            f"Paper configuration (`token_mode='all'`, {p['tokens_per_cell']} tokens per cell, "
            f"dim 200, depth 6, 10 heads, bucket 64): forward {p['forward_s_per_cell']:.2f} s "
            f"per cell (over {p['n_forward_cells']} cells), forward + backward "
            f"{p['train_s_per_cell']:.2f} s per cell (over {p['n_train_cells']} cells).",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
