"""Cross-study transfer on three real pancreas studies: train on one or two, predict another on
the genes they share, against CellTypist-style logistic regression.

Data (../shared/data/labelled, see its README): pancreas_xin_subset.h5ad (Xin 2016, SMARTer,
674 cells x 980 genes, log-scale), pancreas_wang_subset.h5ad (Wang 2016, 501 x 219, log-scale),
pancreas_baron_human_mouse_toy.h5ad (Baron 2016, inDrop, 350 x 12,474 counts, human and mouse),
scClassify (GPL-3) and CIDER (MIT) example data. Baron's 'activated_stellate' is called
'stellate' as in Wang; no other label is changed.

Each study is first put on the shared genes with screformer's preprocessing (log2 of counts
per 1e4; Xin's values exceed the range of a log scale and are treated as normalised values), so
both methods see the same numbers. Scores are over the target cells whose type the training
studies have; the share of the other target cells called Unassigned (threshold 0.5) is reported
as "unseen types unassigned".

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
        python benchmarks/pancreas_cross_study.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import time

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score

from screformer import SCReformer
from screformer.pp import prepare

from _common import DATA_DIR, LogisticBaseline, write_results

STUDIES = {
    "xin": ("pancreas_xin_subset.h5ad", "cell_type"),
    "wang": ("pancreas_wang_subset.h5ad", "cell_type"),
    "baron": ("pancreas_baron_human_mouse_toy.h5ad", "Group"),
}
HARMONISE = {"activated_stellate": "stellate"}


def load(name: str) -> ad.AnnData:
    file, key = STUDIES[name]
    adata = ad.read_h5ad(DATA_DIR / "labelled" / file)
    adata.obs_names = [f"{name}:{i}" for i in range(adata.n_obs)]
    labels = adata.obs[key].astype(str).replace(HARMONISE)
    return ad.AnnData(
        adata.X,
        obs=pd.DataFrame({"cell_type": labels.to_numpy()}, index=adata.obs_names),
        var=pd.DataFrame(index=adata.var_names),
    )


def on_genes(studies: list[ad.AnnData], genes: list[str]) -> ad.AnnData:
    """The studies on ``genes``, each log2-normalised by screformer's preprocessing, stacked."""
    parts = [
        ad.AnnData(prepare(a, genes).X, obs=a.obs, var=pd.DataFrame(index=genes)) for a in studies
    ]
    return ad.concat(parts) if len(parts) > 1 else parts[0]


def scores(truth, predicted, best, seen: set[str]) -> dict:
    known = np.isin(truth, list(seen))
    return {
        "n_scored_cells": int(known.sum()),
        "accuracy": accuracy_score(truth[known], predicted[known]),
        "macro_f1": f1_score(
            truth[known], predicted[known], average="macro", labels=sorted(set(truth[known]))
        ),
        "n_unseen_type_cells": int((~known).sum()),
        "unseen_types_unassigned": float((best[~known] < 0.5).mean()) if (~known).any() else None,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--max-epochs", type=int, default=None, help="default: the model's rule")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    data = {name: load(name) for name in STUDIES}
    rows = []
    for target in STUDIES:
        others = [s for s in STUDIES if s != target]
        for sources in [*([s] for s in others), others]:
            genes = sorted(set.intersection(*(set(data[s].var_names) for s in [*sources, target])))
            train = on_genes([data[s] for s in sources], genes)
            test = on_genes([data[target]], genes)
            truth = test.obs["cell_type"].to_numpy()
            seen = set(train.obs["cell_type"])

            SCReformer.setup_anndata(train, labels_key="cell_type")
            model = SCReformer(train)
            start = time.perf_counter()
            model.train(max_epochs=args.max_epochs, seed=args.seed, enable_progress_bar=False)
            fit_s = time.perf_counter() - start
            proba = model.predict_proba(model.prepare(test))
            lr = LogisticBaseline(train, train.obs["cell_type"], genes)
            lr_proba = lr.predict_proba(test)
            row = {
                "train": "+".join(sources),
                "test": target,
                "n_genes": len(genes),
                "n_train_cells": train.n_obs,
                "train_types": sorted(seen),
                "fit_s": fit_s,
                "screformer": scores(
                    truth, np.asarray(model.classes)[proba.argmax(1)], proba.max(1), seen
                ),
                "logistic_regression": scores(
                    truth, np.asarray(lr.classes)[lr_proba.argmax(1)], lr_proba.max(1), seen
                ),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)

    summary = {
        "rows": rows,
    }
    write_results(args.out, "pancreas_cross_study", summary, markdown)


def markdown(s: dict) -> str:
    def cell(r):
        unseen = r["unseen_types_unassigned"]
        return f"{r['accuracy']:.3f} | {r['macro_f1']:.3f} | " + (
            "" if unseen is None else f"{unseen:.2f}"
        )

    lines = [
        "# Pancreas: cross-study transfer (Xin, Wang, Baron)",
        "",
        f"Command: `{s['command']}`  ",
        f"Machine: {s['machine']}",
        "",
        "Accuracy and macro F1 over the target cells of the types the training studies have; "
        "'unseen' = share of the other target cells called Unassigned (best probability < 0.5).",
        "",
        "| train -> test | genes | train cells | screformer acc | F1 | unseen | "
        "log. regression acc | F1 | unseen |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in s["rows"]:
        lines.append(
            f"| {r['train']} -> {r['test']} | {r['n_genes']} | {r['n_train_cells']} | "
            f"{cell(r['screformer'])} | {cell(r['logistic_regression'])} |"
        )
    for method in ("screformer", "logistic_regression"):
        f1 = [r[method]["macro_f1"] for r in s["rows"]]
        lines.append(f"\nMean macro F1, {method}: {np.mean(f1):.3f} over {len(f1)} transfers.")
    lines.append(f"\nPeak memory: {s['peak_rss_gb']:.2f} GB.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
