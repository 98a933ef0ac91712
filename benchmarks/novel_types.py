"""Novel cell types: leave one type out of training, count how many of its cells are called
``Unassigned`` and how accurate the known types stay, at screformer's default settings, against
logistic regression.

Data (../shared/data/labelled): pbmc3k_labelled.h5ad (10x pbmc3k, 2,638 cells, labels
``classified``) and heart_litvinukova_sanger_624cells.h5ad (624 cells, ``cell_type``).

One stratified 80/20 split (seed 0, screformer.data.stratified_split). For each type T the
user's situation is rebuilt: the 80% minus T carry labels, the 20% and every cell of T are
unlabelled, and
``tl.annotate(adata, labels_key)`` labels them with its defaults (novelty threshold "auto": 0.99,
since the model is trained on the data's own cells; confidence threshold 0.5). Scored: "novel" =
share of T's cells called Unassigned; "known" = accuracy on the held-out cells of the other types
(Unassigned counts as wrong). From the same run: the same calls without the novelty score
(confidence only, as before it existed), and logistic regression (C=0.1, log-normalised) with
a confidence threshold of 0.5 and of 0.9. And from the same models: the calls with each kind of
novelty evidence alone (expression, model features, energy; see
``screformer.model.NoveltyReference``) against the combined score, at 0.99, which is how the
combination was chosen (on the heart, the smaller data set: pbmc3k is the check), and the
combined score's trade-off between novel cells caught and known cells kept at thresholds
from 0.8 to 0.99.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \\
        python benchmarks/novel_types.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import time

import anndata as ad
import numpy as np
import pandas as pd

import screformer
from screformer.data import stratified_split

from _common import DATA_DIR, LogisticBaseline, write_results

DATASETS = {
    "pbmc3k": ("pbmc3k_labelled.h5ad", "classified"),
    "heart": ("heart_litvinukova_sanger_624cells.h5ad", "cell_type"),
}
UNASSIGNED = "Unassigned"
EVIDENCE = ("expression", "features", "energy", "combined")
THRESHOLDS = (0.8, 0.85, 0.9, 0.95, 0.99)


def novel_known(called, truth, is_novel) -> dict:
    return {
        "novel_unassigned": float(np.mean(called[is_novel] == UNASSIGNED)),
        "known_accuracy": float(np.mean(called[~is_novel] == truth[~is_novel])),
    }


def leave_one_out(adata, labels, train_idx, test_idx, novel, seed) -> dict:
    fit = train_idx[labels[train_idx] != novel]
    scored = np.concatenate([test_idx[labels[test_idx] != novel], np.flatnonzero(labels == novel)])
    truth, is_novel = labels[scored], labels[scored] == novel
    work = adata.copy()
    hidden = np.full(work.n_obs, "Unknown", dtype=object)
    hidden[fit] = labels[fit]
    work.obs["label"] = hidden
    start = time.perf_counter()
    model = screformer.tl.annotate(work, "label", seed=seed, enable_progress_bar=False)
    seconds = time.perf_counter() - start
    obs = work.obs.iloc[scored]
    called = obs["screformer_prediction"].astype(str).to_numpy()
    # The same model's calls on confidence alone: the best class wherever it reaches 0.5.
    best = np.asarray(work.uns["screformer"]["classes"])[
        work.obsm["screformer_probabilities"][scored].argmax(1)
    ]
    confident = obs["screformer_confidence"].to_numpy() >= 0.5
    without_novelty = np.where(confident, best, UNASSIGNED)
    lr = LogisticBaseline(adata[fit], labels[fit], list(adata.var_names), C=0.1, scale=False)
    lr_proba = lr.predict_proba(adata[scored])
    lr_best = np.asarray(lr.classes)[lr_proba.argmax(1)]
    row = {
        "novel_type": novel,
        "n_novel_cells": int(is_novel.sum()),
        "n_known_cells": int((~is_novel).sum()),
        "seconds": seconds,
        "screformer": novel_known(called, truth, is_novel),
        "screformer_without_novelty": novel_known(without_novelty, truth, is_novel),
        "lr_0.5": novel_known(
            np.where(lr_proba.max(1) >= 0.5, lr_best, UNASSIGNED), truth, is_novel
        ),
        "lr_0.9": novel_known(
            np.where(lr_proba.max(1) >= 0.9, lr_best, UNASSIGNED), truth, is_novel
        ),
        "novel_called": {k: int(v) for k, v in pd.Series(called[is_novel]).value_counts().items()},
    }
    row |= compare_evidence(model, work[scored], truth, is_novel)
    print(f"{novel}: {row['screformer']} ({seconds:.0f} s)", flush=True)
    return row


def compare_evidence(model, scored: ad.AnnData, truth, is_novel) -> dict:
    """Novel / known with each kind of novelty evidence alone and combined, at 0.99, and with
    the combined score at each of ``THRESHOLDS`` (confidence 0.5 throughout; the same model)."""
    prepared = model.prepare(scored)
    logits, features = model._logits_and_features(prepared.X)
    probabilities = model._softmax(logits)
    predicted = probabilities.argmax(1)
    reference = model.novelty_
    scores = {"combined": reference.score(prepared.X, predicted, (logits, features))}
    if reference.combined_calibration is not None:  # else too few validation cells for it
        distances = reference.distance(prepared.X, predicted)
        each = reference._quantiles(distances, predicted, (logits, features))
        scores |= dict(zip(EVIDENCE[:3], each, strict=True))
    best = np.asarray(model.classes)[predicted]

    def calls(score, threshold):
        keep = (probabilities.max(1) >= 0.5) & (score <= threshold)
        return novel_known(np.where(keep, best, UNASSIGNED), truth, is_novel)

    return {
        "evidence": {name: calls(score, 0.99) for name, score in scores.items()},
        "thresholds": {str(t): calls(scores["combined"], t) for t in THRESHOLDS},
    }


METHODS = ("screformer", "screformer_without_novelty", "lr_0.5", "lr_0.9")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--data", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--types", nargs="+", help="left-out types to run (default: all)")
    parser.add_argument("--name", default="novel_types", help="results file name")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results = {}
    for name in args.data:
        file, key = DATASETS[name]
        adata = ad.read_h5ad(DATA_DIR / "labelled" / file)
        labels = adata.obs[key].astype(str).to_numpy()
        # Stratified; a type of one cell stays in training (the heart's Mesothelial).
        train_idx, test_idx = stratified_split(labels, 0.2, args.seed)
        types, counts = np.unique(labels, return_counts=True)
        results[name] = [
            leave_one_out(adata, labels, train_idx, test_idx, novel, args.seed)
            for novel in types[counts >= 5]  # too few cells to score a type below 5
            if args.types is None or novel in args.types
        ]
    summary = {"seed": args.seed, "results": results, "wall_s": time.perf_counter() - start}
    write_results(args.out, args.name, summary, markdown)


def markdown(s: dict) -> str:
    lines = [
        "# Novel types: leave one type out",
        "",
        f"Command: `{s['command']}`  ",
        f"Machine: {s['machine']}; wall time {s['wall_s'] / 60:.0f} min; peak memory "
        f"{s['peak_rss_gb']:.2f} GB.",
        "",
        "Each cell: share of the left-out type's cells called Unassigned / accuracy on the "
        "held-out cells of the known types (Unassigned = wrong). `screformer`: "
        "`tl.annotate(adata, labels_key)` with its defaults (novelty threshold 0.99, confidence "
        "0.5); `screformer_without_novelty`: the same model's calls on confidence alone; "
        "`lr_0.5` / `lr_0.9`: logistic regression (C=0.1) with a confidence threshold.",
    ]
    for data, rows in s["results"].items():
        lines += [
            "",
            f"## {data}",
            "",
            "| left-out type | cells | " + " | ".join(METHODS) + " | screformer's calls |",
            "|---" * (len(METHODS) + 3) + "|",
        ]
        for r in rows:
            cells = [
                f"{r[m]['novel_unassigned']:.2f} / {r[m]['known_accuracy']:.3f}" for m in METHODS
            ]
            lines.append(
                f"| {r['novel_type']} | {r['n_novel_cells']} | "
                + " | ".join(cells)
                + f" | {r['novel_called']} |"
            )
        means = [
            f"**{np.mean([r[m]['novel_unassigned'] for r in rows]):.2f} / "
            f"{np.mean([r[m]['known_accuracy'] for r in rows]):.3f}**"
            for m in METHODS
        ]
        lines.append("| mean | | " + " | ".join(means) + " | |")
        for title, key, columns in [
            ("Each kind of evidence alone and combined, at 0.99", "evidence", EVIDENCE),
            ("The combined score's threshold", "thresholds", [str(t) for t in THRESHOLDS]),
        ]:
            lines += [
                "",
                f"{title} (same models; mean novel / known; n/a: under 100 validation "
                "cells, so the score is the expression part alone):",
                "",
                "| | " + " | ".join(columns) + " |",
                "|---" * (len(columns) + 1) + "|",
                "| mean | "
                + " | ".join(
                    f"{np.mean([r[key][c]['novel_unassigned'] for r in rows]):.2f} / "
                    f"{np.mean([r[key][c]['known_accuracy'] for r in rows]):.3f}"
                    if all(c in r[key] for r in rows)
                    else "n/a"
                    for c in columns
                )
                + " |",
            ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
