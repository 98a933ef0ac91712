"""How much of the transfer gap is the value encoding: simple models on screformer's tokens.

screformer trails logistic regression (LR) on some transfers (`benchmarks/transfer.py`). This
script asks whether the information is lost before the network: the same LR (C=0.1) is trained
on the same cells and genes of every cross-study transfer of the transfer benchmark (pancreas
and PBMC), once on log2-normalised values (the baseline) and once on each value encoding's
bins, as numbers and one-hot per (gene, bin) as the token embedding sees them, and on two
per-cell orders finer at the top (:func:`order_bins`; not package encodings). Where LR on an
encoding's bins fails and LR on values holds, the bins have dropped what the linear model uses,
and a network reading them has to recover it from the other genes.

The last columns ask the same of a network without the encoder: scBERT's head alone (a
3-layer MLP, 512 and 100 hidden units, dropout 0.5 on its input and hidden layers, as
screformer's head) on the log2 values, the relative bins and the halving bins as numbers. Its
recipe (AdamW, learning rate 1e-3, weight decay 0.01, batches of 64, 30 epochs, no validation) is
the first one tried; 8 and 60 epochs were also tried on these tasks (PBMC mean 0.80 and 0.86 on
the bins), so it is a diagnostic of where the gap lies, not a tuned competitor.

Run: ``python benchmarks/encoding_ceiling.py`` (about 4 minutes on 2 CPU cores); writes
``results/encoding_ceiling.{json,md}``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from transfer import pancreas_tasks, pbmc_tasks

import screformer
from screformer.pp import bin_matrix, prepare
from screformer.pp._expression import values_below

from _common import score, write_results

# name: (encoding, top bin, one-hot per (gene, bin)).
FEATURES = {
    "log2 values (LR baseline)": None,
    "scBERT bins 0-5 (absolute)": ("absolute", 5, False),
    "relative bins 1-5 (screformer's tokens)": ("relative", 5, False),
    "relative bins 1-5, one-hot per gene": ("relative", 5, True),
    "relative bins 1-50": ("relative", 50, False),
    # Per-cell orders that keep the top of the cell finer (not package encodings): quantile bins
    # that halve towards the top, and the gene's rank counted from the cell's strongest gene.
    "halving quantile bins 1-5": ("halving", 5, False),
    "ranks from the top, 1-5": ("ranks", 5, False),
}

# Columns read by the MLP (no encoder) instead of logistic regression.
MLP_FEATURES = {
    "MLP, log2 values": None,
    "MLP, relative bins 1-5": ("relative", 5, False),
    "MLP, halving quantile bins 1-5": ("halving", 5, False),
}
COLUMNS = FEATURES | MLP_FEATURES


def features(X: sparse.csr_matrix, spec) -> sparse.csr_matrix:
    """Prepared values ``X`` (log2, on the shared genes) as they are, or their bins: numbers
    scaled to 0-5 (the scale of scBERT's bins), or one column per (gene, bin)."""
    if spec is None:
        return X
    encoding, top_bin, one_hot = spec
    if encoding in ("halving", "ranks"):
        bins = order_bins(X, encoding, top_bin)
    else:
        bins = bin_matrix(X, encoding, top_bin)
    if not one_hot:
        return sparse.csr_matrix(
            (bins.data * 5.0 / top_bin, bins.indices, bins.indptr), shape=bins.shape
        )
    columns = bins.indices * (top_bin + 1) + bins.data
    return sparse.csr_matrix(
        (np.ones(bins.nnz), columns, bins.indptr), shape=(X.shape[0], X.shape[1] * (top_bin + 1))
    )


def order_bins(X: sparse.csr_matrix, kind: str, top_bin: int = 5) -> sparse.csr_matrix:
    """Bins 1 .. ``top_bin`` from each value's place among its cell's non-zero values (ties
    share a place), finer towards the top. ``"halving"``: bin ``k + 1`` from the quantile
    ``1 - 2^-k`` (the top bin holds the cell's top 1/16 with 5 bins); ``"ranks"``: ``top_bin``
    for the cell's strongest gene, one bin lower each time the count of genes above doubles
    (1-2 above: ``top_bin - 1``; 15 or more: 1).

    >>> X = sparse.csr_matrix(np.array([[1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 15]]))
    >>> order_bins(X, "halving").data.tolist()
    [1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 4, 4]
    >>> order_bins(X, "ranks").data.tolist()
    [1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 4, 5, 5]
    """
    X = sparse.csr_matrix(X)
    if kind == "halving":
        per_row = np.diff(X.indptr)
        share = values_below(X) / np.repeat(per_row, per_row)
        data = 1 + np.clip(np.floor(-np.log2(1 - share)), 0, top_bin - 1)
    else:  # the values above a value are the ones below it once the cell's values are negated
        above = values_below(sparse.csr_matrix((-X.data, X.indices, X.indptr), shape=X.shape))
        data = top_bin - np.clip(np.floor(np.log2(1 + above)), 0, top_bin - 1)
    return sparse.csr_matrix((data.astype(np.int64), X.indices, X.indptr), shape=X.shape)


def mlp_predict(X_ref, labels, X_query, epochs=30, batch_size=64, seed=0) -> np.ndarray:
    """scBERT's head alone (input dropout, 512 and 100 hidden units) trained on ``X_ref``."""
    torch.manual_seed(seed)
    classes, y = np.unique(labels, return_inverse=True)
    X_ref, X_query = (torch.tensor(X.toarray(), dtype=torch.float32) for X in (X_ref, X_query))
    net = torch.nn.Sequential(
        torch.nn.Dropout(0.5),
        torch.nn.Linear(X_ref.shape[1], 512),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.5),
        torch.nn.Linear(512, 100),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.5),
        torch.nn.Linear(100, len(classes)),
    )
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
    y = torch.from_numpy(y)
    for _ in range(epochs):
        for batch in torch.randperm(len(y)).split(batch_size):
            loss = torch.nn.functional.cross_entropy(net(X_ref[batch]), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        return classes[net.eval()(X_query).argmax(1).numpy()]


def task_row(task, query, reference) -> dict:
    genes = screformer.tl.shared_genes(reference, query, min_genes=1)
    known = query.obs["label"].isin(set(reference.obs["label"])).to_numpy()
    truth = query.obs["label"].astype(str).to_numpy()
    species = query.obs["species"].to_numpy() if "species" in query.obs else None
    row = {"task": task, "n_genes": len(genes)}
    # Prepared once per task; each feature set is derived from these values.
    X_ref, X_query = (
        sparse.csr_matrix(prepare(a, genes, min_genes=1).X) for a in (reference, query)
    )
    labels = reference.obs["label"].astype(str).to_numpy()
    for name, spec in COLUMNS.items():
        if name in MLP_FEATURES:
            predicted = mlp_predict(features(X_ref, spec), labels, features(X_query, spec))
        else:
            clf = LogisticRegression(C=0.1, max_iter=1000)
            clf.fit(features(X_ref, spec), labels)
            predicted = clf.predict(features(X_query, spec))
        row[name] = score(truth[known], predicted[known])
        if species is not None and len(np.unique(species)) > 1:
            row[name]["by_species"] = {
                sp: score(truth[known & (species == sp)], predicted[known & (species == sp)])
                for sp in np.unique(species)
            }
    print(task, {n: round(row[n]["macro_f1"], 3) for n in COLUMNS}, flush=True)
    return row


def markdown(s: dict) -> str:
    names = list(COLUMNS)
    lines = [
        "# What screformer's tokens keep: logistic regression and scBERT's head alone on them",
        "",
        f"Command: `{s['command']}`  ",
        f"Machine: {s['machine']}  ",
        f"Wall time: {s['wall_s'] / 60:.1f} min.",
        "",
        "Logistic regression (C=0.1) on the genes the reference and the query share, trained on "
        "the reference, scored on the query's cells of the reference's types (macro F1 over the "
        "types present). Columns: the features it reads. Bins as numbers are scaled to 0-5; "
        "one-hot has a column per (gene, bin), as the token embedding sees a token; halving "
        "quantile bins and ranks from the top are per-cell orders finer at the top (`order_bins` "
        "in the script), not package encodings. The `MLP` columns: scBERT's head alone (a "
        "3-layer MLP, no encoder; recipe in the script's docstring) instead of logistic "
        "regression.",
        "",
        "| task | genes | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for stage, rows in s["results"].items():
        for r in rows:
            cells = [f"{r[n]['macro_f1']:.3f}" for n in names]
            lines.append(f"| {r['task']} | {r['n_genes']} | " + " | ".join(cells) + " |")
            for sp in r[names[0]].get("by_species", {}):
                cells = [f"{r[n]['by_species'][sp]['macro_f1']:.3f}" for n in names]
                lines.append(f"| &nbsp;&nbsp;{sp} cells | | " + " | ".join(cells) + " |")
        means = [f"**{np.mean([r[n]['macro_f1'] for r in rows]):.3f}**" for n in names]
        lines.append(f"| **{stage} mean ({len(rows)})** | | " + " | ".join(means) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    start = time.perf_counter()
    results = {
        "pancreas": [task_row(*t) for t in pancreas_tasks()],
        "pbmc": [task_row(*t) for t in pbmc_tasks()],
    }
    summary = {"features": list(COLUMNS), "results": results}
    summary["wall_s"] = time.perf_counter() - start
    write_results(args.out, "encoding_ceiling", summary, markdown)


if __name__ == "__main__":
    main()
