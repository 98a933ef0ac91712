"""Why the bins lose Baron's mouse alpha cells: islet markers as screformer's tokens see them.

On the transfer benchmark, a model trained on Xin's SMARTer cells labels Baron's human inDrop
cells as well as logistic regression (LR) does but calls Baron's mouse alpha cells delta or
gamma, where LR keeps them (`benchmarks/transfer.py`, `docs/transfer.md`). This script prints,
for Xin's cells and Baron's human and mouse cells of each type, on the genes the two studies
share, each marker's median relative bin (what the tokens and the head read, 1-5), the share of
cells that detect it, and its median log2-normalised value (what LR reads).

Run: ``python benchmarks/pancreas_markers.py`` (seconds); writes
``results/pancreas_markers.{json,md}``.
"""

from __future__ import annotations

import argparse

import numpy as np
from transfer import pancreas_tasks

from screformer.pp import bin_matrix, prepare

from _common import write_results

# Hormones and the transcription factors that mark islet types (alpha: GCG, ARX, IRX2; beta:
# INS, PCSK1; delta: SST, HHEX; gamma: PPY).
MARKERS = ["GCG", "ARX", "IRX2", "INS", "PCSK1", "SST", "HHEX", "PPY"]
TYPES = ["alpha", "beta", "delta", "gamma"]


def marker_rows(adata, study: str, genes: list[str]) -> list[dict]:
    X = prepare(adata, genes).X.tocsr()
    bins = bin_matrix(X, "relative").toarray()
    values = X.toarray()
    labels = adata.obs["label"].astype(str).to_numpy()
    species = (
        adata.obs["species"].astype(str).to_numpy()
        if "species" in adata.obs
        else np.full(adata.n_obs, "human")
    )
    rows = []
    for sp in np.unique(species):
        for cell_type in TYPES:
            cells = (species == sp) & (labels == cell_type)
            if not cells.any():
                continue
            row = {"study": study, "species": sp, "type": cell_type, "cells": int(cells.sum())}
            row["detected genes"] = float(np.median((values[cells] > 0).sum(1)))
            for gene in (g for g in MARKERS if g in genes):
                j = genes.index(gene)
                row[gene] = {
                    "bin": float(np.median(bins[cells, j])),
                    "detected": float(np.mean(values[cells, j] > 0)),
                    "log2": float(np.median(values[cells, j])),
                }
            rows.append(row)
    return rows


def markdown(summary: dict) -> str:
    markers = [g for g in MARKERS if g in summary["rows"][0]]
    lines = [
        "# Islet markers as the tokens see them: Xin and Baron",
        "",
        f"Command: `{summary['command']}`  ",
        f"Genes: the {summary['n_genes']} that Xin and Baron share (the transfer benchmark's"
        " Xin -> Baron panel); not among them: "
        + (", ".join(g for g in MARKERS if g not in markers) or "none")
        + ".",
        "",
        "Each cell: median relative bin (1-5, 0 = not detected) / share of cells detecting the"
        " gene / median log2-normalised value (log2(1 + x), x scaled to 1e4 per cell).",
        "",
        "| study | species | type | cells | detected genes | " + " | ".join(markers) + " |",
        "|---" * (5 + len(markers)) + "|",
    ]
    for r in summary["rows"]:
        cells = [
            f"{r[g]['bin']:.0f} / {r[g]['detected']:.2f} / {r[g]['log2']:.1f}" for g in markers
        ]
        lines.append(
            f"| {r['study']} | {r['species']} | {r['type']} | {r['cells']} | "
            f"{r['detected genes']:.0f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    _, query, reference = next(t for t in pancreas_tasks() if t[0] == "pancreas xin -> baron")
    genes = list(reference.var_names)  # on_genes put both studies on the shared genes
    rows = marker_rows(reference, "Xin", genes) + marker_rows(query, "Baron", genes)
    write_results(args.out, "pancreas_markers", {"n_genes": len(genes), "rows": rows}, markdown)


if __name__ == "__main__":
    main()
