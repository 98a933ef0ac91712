"""The daily workflow: majority voting against per-cell calls, and the bundled PBMC classifier
labelling unlabelled cells from the command line, offline.

1. Majority voting (``tl.annotate(..., majority_voting=True)``, Leiden over-clustering computed
   by screformer): pbmc3k and the heart, one stratified 80/20 split (seed 0); the 80% carry
   labels, the 20% are labelled by the model trained on them; accuracy and macro F1 of the
   per-cell calls and of the majority-voting calls on the 20%.
2. ``screformer predict pbmc3k.h5ad --model pbmc --out labels.csv`` in a fresh process with
   ``SCREFORMER_OFFLINE=1``: wall time end to end (Python start, imports, reading, labelling,
   writing) for the 2,638 cells of pbmc3k. These are the cells the classifier was trained on:
   the accuracy printed beside it is not a test of the classifier (its card has the
   cross-validated one).

Data: ../shared/data/labelled/pbmc3k_labelled.h5ad, heart_litvinukova_sanger_624cells.h5ad.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \\
        python benchmarks/workflow.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

import screformer
from screformer.data import stratified_split

from _common import DATA_DIR, score, write_results

DATASETS = {
    "pbmc3k": ("pbmc3k_labelled.h5ad", "classified"),
    "heart": ("heart_litvinukova_sanger_624cells.h5ad", "cell_type"),
}


def majority_voting(name: str, seed: int) -> dict:
    file, key = DATASETS[name]
    adata = ad.read_h5ad(DATA_DIR / "labelled" / file)
    labels = adata.obs[key].astype(str).to_numpy()
    train, test = stratified_split(labels, 0.2, seed)
    hidden = np.full(adata.n_obs, "Unknown", dtype=object)
    hidden[train] = labels[train]
    adata.obs["label"] = hidden
    start = time.perf_counter()
    screformer.tl.annotate(
        adata, "label", majority_voting=True, seed=seed, enable_progress_bar=False
    )
    seconds = time.perf_counter() - start
    obs = adata.obs.iloc[test]
    row = {
        "n_test_cells": len(test),
        "n_clusters": int(adata.obs["screformer_over_clustering"].nunique()),
        "seconds": seconds,
        "per_cell": score(labels[test], obs["screformer_prediction"].astype(str)),
        "majority_voting": score(labels[test], obs["screformer_majority_voting"].astype(str)),
    }
    print(f"{name}: {row}", flush=True)
    return row


def bundled_classifier_cli() -> dict:
    path = DATA_DIR / "labelled" / "pbmc3k_labelled.h5ad"
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "labels.csv"
        command = [sys.executable, "-m", "screformer.cli", "predict", str(path), "--model"]
        command += ["pbmc", "--out", str(out)]
        start = time.perf_counter()
        subprocess.run(command, check=True, env=os.environ | {"SCREFORMER_OFFLINE": "1"})
        seconds = time.perf_counter() - start
        table = pd.read_csv(out, index_col="cell")
    truth = ad.read_h5ad(path).obs["classified"].astype(str)
    row = {
        "command": " ".join(["screformer", *command[3:-1], "labels.csv"]),
        "n_cells": len(table),
        "seconds": seconds,
        "training_cells_score": score(truth.to_numpy(), table["screformer_prediction"]),
    }
    print(f"bundled classifier: {row}", flush=True)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    summary = {
        "majority_voting": {name: majority_voting(name, args.seed) for name in DATASETS},
        "bundled_classifier": bundled_classifier_cli(),
    }
    write_results(args.out, "workflow", summary, markdown)


def markdown(s: dict) -> str:
    lines = [
        "# Workflow: majority voting, bundled classifier",
        "",
        f"Command: `{s['command']}`  ",
        f"Machine: {s['machine']}; peak memory {s['peak_rss_gb']:.2f} GB.",
        "",
        "## Majority voting (one stratified 80/20 split; the 20% scored)",
        "",
        "| data | test cells | clusters | per-cell accuracy / macro F1 (Unassigned) | "
        "majority voting accuracy / macro F1 (Unassigned) | annotate, s |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in s["majority_voting"].items():
        cells = [
            f"{r[m]['accuracy']:.3f} / {r[m]['macro_f1']:.3f} ({100 * r[m]['unassigned']:.1f}%)"
            for m in ("per_cell", "majority_voting")
        ]
        lines.append(
            f"| {name} | {r['n_test_cells']} | {r['n_clusters']} | "
            + " | ".join(cells)
            + f" | {r['seconds']:.0f} |"
        )
    b = s["bundled_classifier"]
    lines += [
        "",
        "## Bundled PBMC classifier from the command line, offline",
        "",
        f"`{b['command']}`: {b['n_cells']:,} cells in {b['seconds']:.1f} s end to end, in a "
        "fresh process. Accuracy on these cells (the classifier's own training cells, not a "
        f"test): {b['training_cells_score']['accuracy']:.3f}.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
