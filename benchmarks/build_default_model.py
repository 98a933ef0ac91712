"""Build the bundled default model: gene2vec on the shared corpus, then masked-expression
pre-training on the same cells (no labels), then copy the encoder into the package.

    python benchmarks/build_default_model.py --work build/default_model --out benchmarks/results

Corpus: every .h5ad of ``$SCREFORMER_DATA/unlabelled`` and ``labelled`` (expression only). Panel:
the gene2vec symbols (``reference/gene2vec_gene_symbols.txt``, the published embedding's 24,447
genes) detected in at least 5 cells of the corpus, in that file's order.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import torch
from scipy import sparse

import screformer
from screformer.pp._genes import normalize_gene_name

from _common import DATA_DIR, write_results

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PACKAGE_MODEL = Path(screformer.__file__).parent / "_data" / "default_model.pt"


def corpus_files() -> list[Path]:
    return sorted((DATA_DIR / "unlabelled").glob("*.h5ad")) + sorted(
        (DATA_DIR / "labelled").glob("*.h5ad")
    )


def panel_from_corpus(files, min_cells: int) -> list[str]:
    detected: dict[str, int] = {}
    for path in files:
        adata = ad.read_h5ad(path)
        per_gene = np.diff(sparse.csc_matrix(adata.X).indptr)
        for name, n in zip(adata.var_names, per_gene, strict=True):
            key = normalize_gene_name(name)
            detected[key] = detected.get(key, 0) + int(n)
    symbols = (DATA_DIR / "reference/gene2vec_gene_symbols.txt").read_text().split()
    return [g for g in symbols if detected.get(normalize_gene_name(g), 0) >= min_cells]


def plot_history(history: pd.DataFrame, path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.plot(history["epoch"] + 1, history["train_loss"], "o-", label="training")
    left.plot(history["epoch"] + 1, history["validation_loss"], "o-", label="validation")
    left.set(xlabel="epoch", ylabel="masked-bin cross-entropy", title="Loss")
    left.legend()
    right.plot(history["epoch"] + 1, history["validation_accuracy"], "o-", label="model")
    right.plot(
        history["epoch"] + 1,
        history["validation_baseline_accuracy"],
        "--",
        label="cell's most common bin",
    )
    right.set(xlabel="epoch", ylabel="accuracy on masked bins", title="Validation accuracy")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", default="build/default_model")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--max-epochs", type=int, default=8)
    parser.add_argument("--max-time", default="00:00:40:00")
    parser.add_argument("--min-cells", type=int, default=5)
    parser.add_argument("--no-install", action="store_true", help="do not copy into the package")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    files = corpus_files()
    panel = panel_from_corpus(files, args.min_cells)
    print(f"corpus: {len(files)} files; panel: {len(panel)} genes")

    started = time.perf_counter()
    vectors_path = work / "gene2vec_corpus_200.txt"
    n_vectors = screformer.gene2vec.train_gene2vec(files, vectors_path, dim=200)
    gene2vec_s = time.perf_counter() - started
    _, n_found = screformer.gene2vec.read_gene2vec(vectors_path, panel)

    config = screformer.ReformerConfig(n_genes=len(panel))  # the CPU default
    model_path = screformer.pretrain(
        files,
        work / "pretraining",
        gene_panel=panel,
        config=config,
        gene_vectors=vectors_path,
        max_epochs=args.max_epochs,
        max_time=args.max_time,
        accelerator="cpu",
        seed=0,
    )
    payload = torch.load(model_path, weights_only=True)
    info = payload["pretraining"]
    history = pd.DataFrame(info["history"])
    plot_history(history, Path(args.out) / "default_model_pretraining.png")
    n_train = sum(
        int((~screformer.data.validation_mask(ad.read_h5ad(f, backed="r").n_obs, 0.1, 0, i)).sum())
        for i, f in enumerate(files)
    )
    if not args.no_install:
        shutil.copyfile(model_path, PACKAGE_MODEL)

    def markdown(s):
        rows = "\n".join(
            f"| {e + 1} | {t:.4f} | {v:.4f} | {a:.3f} | {b:.3f} |"
            for e, t, v, a, b in zip(
                history["epoch"],
                history["train_loss"],
                history["validation_loss"],
                history["validation_accuracy"],
                history["validation_baseline_accuracy"],
                strict=True,
            )
        )
        return f"""# The bundled default model: pre-training record

Command: `{s["command"]}`

- Corpus: {len(files)} files of `shared/data` ({s["n_cells"]} cells; {n_train} trained on, the
  rest held out for validation), expression only: {", ".join(s["files"])}.
- Panel: {len(panel)} genes (gene2vec symbols detected in >= {args.min_cells} corpus cells).
- gene2vec (Du et al.'s method on this corpus): {n_vectors} genes with 200-d vectors in
  {gene2vec_s:.0f} s; {n_found} panel genes have one (the rest start at random), projected on
  their first {config.dim} principal components.
- Model: `ReformerConfig` defaults (expressed tokens, dim {config.dim}, depth {config.depth},
  {config.heads} heads); {s["n_parameters"]:,} encoder parameters; file {s["file_mb"]:.1f} MB.
- Training: {s["epochs_run"]} epochs in {s["seconds"]:.0f} s on {s["machine"]["cpus"]} CPU cores
  ({s["cells_per_s"]:.1f} training cells/s); best validation epoch {s["best_epoch"] + 1}.

| epoch | training loss | validation loss | masked-bin accuracy | most-common-bin baseline |
|---|---|---|---|---|
{rows}
"""

    summary = {
        **{k: v for k, v in info.items() if k != "history"},
        "history": info["history"],
        "n_panel": len(panel),
        "n_gene2vec_genes": n_vectors,
        "n_panel_with_gene2vec": n_found,
        "gene2vec_seconds": gene2vec_s,
        "n_parameters": sum(v.numel() for v in payload["state_dict"].values()),
        "file_mb": model_path.stat().st_size / 1e6,
        "seconds": info["seconds_this_run"],
        "cells_per_s": n_train * info["epochs_run"] / info["seconds_this_run"],
    }
    write_results(args.out, "default_model_pretraining", summary, markdown)


if __name__ == "__main__":
    main()
