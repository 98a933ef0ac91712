"""The paper's use case: heart cells labelled with uHAF first-tier types, 5-fold CV against
CellTypist-style logistic regression, with the confusion matrix and per-class ROC curves.

Data: ../shared/data/labelled/heart_litvinukova_sanger_624cells.h5ad (Litvinukova et al. 2020,
Heart Cell Atlas, Sanger donors; 624 cells x 1,000 genes, raw counts; via the scBC package, MIT).
Its 11 major types (obs['cell_type']) map onto 10 uHAF 2.2.0 Heart first-tier types
(ventricular and atrial cardiomyocytes are both 'Cardiomyocyte cell').

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
        python benchmarks/heart_uhaf_cv.py --out benchmarks/results

Writes heart_uhaf_cv.{json,md} and heart_uhaf_{confusion,roc}.png (out-of-fold predictions of
screformer, every cell predicted once).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd

import screformer

from _common import DATA_DIR, LogisticBaseline, mean_sd, score, write_results

matplotlib.use("Agg")

DATA = DATA_DIR / "labelled/heart_litvinukova_sanger_624cells.h5ad"
LABELS = "cell_type"
ORGAN = "Heart"
TIER = "screformer_uhaf_tier1"  # the keys of the tier-1 level that annotate writes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--max-epochs", type=int, default=None, help="default: the model's rule")
    parser.add_argument("--seed", type=int, default=0, help="of the folds and of training")
    parser.add_argument(
        "--weights-themselves",
        action="store_true",
        help="train without the moving average of the weights (the default before stop 31)",
    )
    args = parser.parse_args(argv)
    averaging = {"ema_decay": None} if args.weights_themselves else {}

    adata = ad.read_h5ad(DATA)
    mapping = screformer.uhaf.map_labels(adata.obs[LABELS], ORGAN)
    print(mapping.report())
    tier1 = adata.obs[LABELS].astype(str).map(mapping.mapped).to_numpy()
    classes = sorted(set(tier1))
    probabilities = np.zeros((adata.n_obs, len(classes)), dtype=np.float32)
    rows = {"screformer": [], "logistic_regression": []}
    for k, (train, test) in enumerate(screformer.tl.stratified_folds(tier1, args.folds, args.seed)):
        query = adata[test].copy()
        start = time.perf_counter()
        screformer.tl.annotate(
            query,
            LABELS,
            reference=adata[train].copy(),
            uhaf_organ=ORGAN,
            unassigned_threshold=0.0,
            max_epochs=args.max_epochs,
            seed=args.seed,
            enable_progress_bar=False,
            **averaging,
        )
        fit_s = time.perf_counter() - start
        # One model on the fine labels writes both levels; the tier-1 calls are scored here.
        fold_classes = query.uns[TIER]["classes"]
        probabilities[np.ix_(test, [classes.index(c) for c in fold_classes])] = query.obsm[
            f"{TIER}_probabilities"
        ]
        predicted = query.obs[f"{TIER}_prediction"].astype(str).to_numpy()
        fine = query.obs["screformer_prediction"].astype(str)
        fine_to_tier = query.uns["screformer"]["uhaf"]["mapping"]
        consistent = float(np.mean(fine.map(fine_to_tier).to_numpy() == predicted))
        fine_f1 = score(adata.obs[LABELS].astype(str).to_numpy()[test], fine)["macro_f1"]
        lr = LogisticBaseline(adata[train], tier1[train], list(adata.var_names))
        baseline = lr.predict(adata[test])
        for method, pred, seconds in (
            ("screformer", predicted, fit_s),
            ("logistic_regression", baseline, None),
        ):
            rows[method].append(
                {
                    "fold": k,
                    **score(tier1[test], pred),
                    "fit_predict_s": seconds,
                    "epochs": query.uns["screformer"]["params"]["max_epochs"]
                    if method == "screformer"
                    else None,
                }
                | ({"fine_macro_f1": fine_f1, "levels_consistent": consistent} if seconds else {})
            )
            print(f"fold {k} {method}: {rows[method][-1]}", flush=True)

    # Out-of-fold predictions of every cell, evaluated and drawn with screformer's own tools.
    oof = ad.AnnData(obs=pd.DataFrame({"uhaf_tier1": tier1}, index=adata.obs_names))
    oof.obs["screformer_prediction"] = np.asarray(classes)[probabilities.argmax(1)]
    oof.obsm["screformer_probabilities"] = probabilities
    oof.uns["screformer"] = {"classes": classes}
    evaluation = screformer.tl.evaluate(oof, "uhaf_tier1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig = screformer.pl.confusion_matrix(oof, "uhaf_tier1", return_fig=True)
    fig.savefig(out / "heart_uhaf_confusion.png", dpi=110, bbox_inches="tight")
    fig = screformer.pl.roc(oof, "uhaf_tier1", return_fig=True)
    fig.savefig(out / "heart_uhaf_roc.png", dpi=110, bbox_inches="tight")

    summary = {
        "data": DATA.name,
        "n_cells": adata.n_obs,
        "n_genes": adata.n_vars,
        "uhaf_mapping": mapping.mapped,
        "class_sizes": pd.Series(tier1).value_counts().to_dict(),
        "folds": rows,
        "out_of_fold": {
            "accuracy": evaluation["accuracy"],
            "macro_f1": evaluation["macro_f1"],
            "macro_auc": evaluation["macro_auc"],
            "per_class": evaluation["per_class"].round(3).to_dict(orient="index"),
            "auc": evaluation["auc"].round(4).to_dict(),
        },
    }
    write_results(args.out, "heart_uhaf_cv", summary, markdown)


def markdown(s: dict) -> str:
    sc, lr = s["folds"]["screformer"], s["folds"]["logistic_regression"]
    oof = s["out_of_fold"]
    lines = [
        f"# Heart cells, uHAF first-tier types: {len(sc)}-fold cross-validation",
        "",
        f"Command: `{s['command']}`  ",
        f"Data: {s['data']} ({s['n_cells']} cells x {s['n_genes']} genes); machine: {s['machine']}",
        "",
        f"Labels mapped to uHAF Heart tier 1: `{s['uhaf_mapping']}`; cells per type: "
        f"`{s['class_sizes']}`.",
        "",
        "| method | accuracy | macro F1 |",
        "|---|---|---|",
        f"| screformer (default, `uhaf_organ='Heart'`) | {mean_sd([r['accuracy'] for r in sc])} | "
        f"{mean_sd([r['macro_f1'] for r in sc])} |",
        f"| logistic regression (CellTypist-style) | {mean_sd([r['accuracy'] for r in lr])} | "
        f"{mean_sd([r['macro_f1'] for r in lr])} |",
        "",
        "screformer is trained on the 11 fine labels; its tier-1 probabilities are sums of "
        "theirs. On the fine labels it reaches macro F1 "
        f"{mean_sd([r['fine_macro_f1'] for r in sc])}; its fine and tier-1 calls agree for "
        f"{100 * np.mean([r['levels_consistent'] for r in sc]):.1f}% of cells.",
        "",
        f"screformer fit + predict per fold: {np.mean([r['fit_predict_s'] for r in sc]):.0f} s "
        f"(epochs: {[r['epochs'] for r in sc]}). Out-of-fold over all cells: accuracy "
        f"{oof['accuracy']:.3f}, macro F1 {oof['macro_f1']:.3f}, macro one-vs-rest AUC "
        f"{oof['macro_auc']:.3f}.",
        "",
        "| uHAF type | precision | recall | F1 | cells | AUC |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in oof["per_class"].items():
        auc = oof["auc"].get(name, float("nan"))
        lines.append(
            f"| {name} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | "
            f"{int(r['support'])} | {auc:.3f} |"
        )
    lines += [
        "",
        "![confusion matrix](heart_uhaf_confusion.png) ![ROC](heart_uhaf_roc.png)",
        "",
        f"Peak memory: {s['peak_rss_gb']:.2f} GB.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
