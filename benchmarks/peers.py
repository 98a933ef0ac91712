"""Peers: screformer beside logistic regression, CellTypist and scANVI on the same transfers.

Each method as a new user would run it, on the same cells and the same shared genes, in one run:

- screformer: ``tl.annotate(query, "label", reference=reference)`` with its defaults
  (``--variants`` adds transfer.py's configurations);
- logistic regression: transfer.py's (C=0.1 on screformer's log-normalised values);
- CellTypist 1.7.1: ``celltypist.train`` on the reference (its defaults: C=1, features scaled and
  clipped at 10, one-vs-rest), then ``celltypist.annotate`` with ``majority_voting=False`` and
  ``True`` (over-clustering of the query by its own Leiden run), both on ln(1 + counts per 1e4);
- scANVI (scvi-tools 1.4.2): ``SCVI.setup_anndata`` on reference + query concatenated, counts,
  ``batch_key`` the cells' study (Symphony: its technology), the query's labels "Unknown"; SCVI
  trained with its defaults (400 epochs under 20,000 cells), then ``SCANVI.from_scvi_model``
  trained with its defaults (10 epochs after a pre-trained SCVI).

Transfers: the 9 pancreas transfers and the PBMC transfers of transfer.py (``pancreas_tasks``,
``pbmc_tasks``), and heart 5-fold cross-validation with transfer.py's folds. Scores: macro F1 over
the types present in the scored cells' truth, accuracy, the share called Unassigned (only
screformer leaves cells unassigned), and wall time per method; as in transfer.py, a cross-study
transfer scores the query cells whose type the reference has.

Values each method sees. screformer and logistic regression get transfer.py's tasks as they are.
The peers get the same cells and genes from the studies as shipped (../shared/data, see its
README), each cell normalised over all its own genes before the shared genes are taken:

- counts (pbmc3k, heart, Baron): CellTypist ln(1 + counts per 1e4), scANVI the counts;
- Symphony and Ding: CellTypist their shipped log-normalised layers (``logcp10k_original``,
  ``lognorm_original``: normalised to 1e4 over every gene of the cell, while only 1,764 / 2,000
  genes were shipped), scANVI the integer counts in ``X`` on those genes (Symphony's recovered
  exactly from the shipped values; Ding's reconstructed assuming a cell's smallest count is 1);
- Xin and Wang hold log-scale values only (no counts, no depth; natural log assumed, as
  screformer's ``detect_input`` reads them): CellTypist gets them un-logged, scaled to 1e4 over the
  shipped genes and logged again; scANVI gets those values per 1e4 rounded to integers
  (pseudo-counts: every cell the same depth, so scANVI's library-size model learns nothing
  there). screformer and LR get transfer.py's pancreas tasks (``on_genes``): each study
  normalised over its own genes and un-logged, which ``annotate`` and the baseline scale to 1e4
  over the shared genes and log again: CellTypist's input up to a factor per cell (since
  2026-12-05; before, they read ``on_genes``'s log2 values a second time, Xin's and Wang's as
  linear values).

Wall time per method covers training and prediction; the peers' input is prepared before the
clock starts. The first majority-voting call of a run also pays one-off loading and numba
compilation (4-18 s here).

CellTypist's ``check_expression`` is turned off: it requires the values of a cell to sum to 1e4
over the genes given, and the shared genes are a subset of those each cell was normalised on
(CellTypist's own models keep a subset too). A method that fails on a transfer is recorded with
its error and left out of its means. One exception, retried: scANVI's defaults can draw a
training batch of a single cell (the training set's size one above a multiple of 128), which its
batch norm refuses ("Expected more than 1 value per channel"); scvi-tools warns of exactly this
and says to avoid that batch, so that run is repeated once with
``datasplitter_kwargs={"drop_last": True}`` and marked in the results.

Install: ``pip install torch==2.13.0`` first, then ``pip install -e ".[benchmarks]"``:
celltypist==1.7.1 needs scikit-learn<1.8, because it passes ``multi_class='ovr'`` to
``LogisticRegression`` (deprecated in 1.5, removed in 1.8: ``TypeError`` on 1.9.1); verified with
scikit-learn 1.7.2, scvi-tools 1.4.2, scanpy 1.11.5, leidenalg 0.12.0.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \\
        python benchmarks/peers.py --out benchmarks/results

About 46 minutes on 2 cores in full (results/peers.md gives each method's seconds per transfer;
scANVI's 400 SCVI epochs take most of it). ``--merge NEW INTO`` puts a rerun of some methods
(``--methods screformer --out /tmp/x`` after a change of screformer's defaults) into a full run.

``--quick`` (1 screformer epoch, 2 SCVI + 1 SCANVI epochs; results marked as no benchmark) with
``--only pancreas --task "wang -> xin"`` is a smoke test of under a minute.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
import traceback
from pathlib import Path

import anndata as ad
import celltypist
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc
import scvi
import sklearn
from scipy import sparse
from sklearn.model_selection import StratifiedKFold
from transfer import (
    VARIANTS,
    labelled,
    load_pancreas,
    pancreas_tasks,
    pbmc_tasks,
    run_lr,
    run_screformer,
)

import screformer
from screformer.pp import align_genes, detect_input

from _common import DATA_DIR, score, write_results

PEERS = ["logistic_regression", "celltypist", "celltypist_majority_voting", "scanvi"]
# Column names of the table and figure.
SHOWN = {
    "logistic_regression": "LR (C=0.1)",
    "celltypist": "CellTypist",
    "celltypist_majority_voting": "CellTypist + majority voting",
    "scanvi": "scANVI",
}


def _log1p_cp10k(X) -> sparse.csr_matrix:
    """CellTypist's input: ln(1 + x per 1e4 of the cell's total)."""
    adata = ad.AnnData(sparse.csr_matrix(X, dtype=np.float32))
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    return adata.X


def _study(X, obs_names, var_names, batch, log1p=None) -> ad.AnnData:
    """A study as the peers read it: layers "log1p" (CellTypist) and "counts" (scANVI)."""
    if detect_input(X) == "counts":
        counts = sparse.csr_matrix(X, dtype=np.float32)
        log1p = _log1p_cp10k(counts) if log1p is None else sparse.csr_matrix(log1p)
        kind = "counts"
    else:  # log values with no counts (Xin, Wang): see the module docstring
        log1p = _log1p_cp10k(sparse.csr_matrix(X, dtype=np.float32).expm1())
        counts = log1p.expm1().rint()
        kind = "pseudo-counts: log values un-logged per 1e4 over the shipped genes, rounded"
    study = ad.AnnData(
        obs=pd.DataFrame({"batch": batch}, index=obs_names),
        var=pd.DataFrame(index=var_names),
        layers={"log1p": log1p, "counts": counts},
    )
    study.uns["scanvi_input"] = kind
    return study[:, ~study.var_names.duplicated()].copy()


@functools.cache
def shipped() -> dict[str, ad.AnnData]:
    """Every study as shipped, its cells named as transfer.py's tasks name them."""

    def read(name):
        return ad.read_h5ad(DATA_DIR / "labelled" / name)

    out = {}
    for name in ("pbmc3k_labelled.h5ad", "heart_litvinukova_sanger_624cells.h5ad"):
        a = read(name)
        out[name.split("_")[0]] = _study(a.X, a.obs_names, a.var_names, name.split("_")[0])
    for name in ("xin", "wang", "baron"):
        a = load_pancreas(name)
        out[name] = _study(a.X, a.obs_names, a.var_names, name)
    a = read("symphony_pbmc_3tech_1500.h5ad")
    tech = ("Symphony " + a.obs["technology"].astype(str)).to_numpy()
    out["symphony"] = _study(
        a.X, a.obs_names, a.var_names, tech, log1p=a.layers["logcp10k_original"]
    )
    for name in ("dropseq_598", "indrops_644"):
        a = read(f"ding2020_pbmc1_{name}.h5ad")
        study = f"Ding {name.split('_')[0]}"
        out[study] = _study(a.X, a.obs_names, a.var_names, study, a.layers["lognorm_original"])
    return out


def peer_view(adata: ad.AnnData, genes: list[str], layer: str) -> ad.AnnData:
    """``adata``'s cells (with its labels) on ``genes``, values from the shipped studies'
    ``layer`` ("log1p" or "counts"), ``obs["batch"]`` their study."""
    parts = []
    for study in shipped().values():
        cells = study[study.obs_names.isin(adata.obs_names)]
        if cells.n_obs:
            columns = align_genes(cells.var_names, genes, min_genes=len(genes)).data_index
            X = cells.layers[layer][:, columns]
            parts.append(ad.AnnData(X, obs=cells.obs[["batch"]], var=pd.DataFrame(index=genes)))
    view = ad.concat(parts)
    # Cell names are unique across the studies: each task cell is found exactly once.
    assert view.n_obs == adata.n_obs and view.obs_names.is_unique, "cells not found once"
    view = view[adata.obs_names].copy()
    view.obs["label"] = adata.obs["label"].astype(str).to_numpy()
    return view


def run_celltypist(query, reference, majority_voting: bool) -> tuple[np.ndarray, float]:
    genes = screformer.tl.shared_genes(reference, query, min_genes=1)
    train, test = peer_view(reference, genes, "log1p"), peer_view(query, genes, "log1p")
    start = time.perf_counter()
    # check_expression wants 1e4 over the genes given; these are a subset (module docstring).
    model = celltypist.train(train, labels="label", check_expression=False)
    result = celltypist.annotate(test, model=model, majority_voting=majority_voting)
    labels = result.predicted_labels
    # CellTypist skips majority voting, with a warning, for 50 cells or fewer.
    column = "majority_voting" if "majority_voting" in labels else "predicted_labels"
    return labels[column].astype(str).to_numpy(), time.perf_counter() - start


def run_scanvi(query, reference, epochs: tuple[int | None, int | None]):
    genes = screformer.tl.shared_genes(reference, query, min_genes=1)
    both = ad.concat(
        {
            "reference": peer_view(reference, genes, "counts"),
            "query": peer_view(query, genes, "counts"),
        },
        label="side",
        index_unique="-",
    )
    is_query = (both.obs["side"] == "query").to_numpy()
    both.obs["label"] = np.where(is_query, "Unknown", both.obs["label"].astype(str))
    start, notes = time.perf_counter(), {}
    try:
        predicted = _scanvi_predictions(both, epochs)
    except ValueError as error:
        # With its defaults a training batch of one cell can be drawn, which batch norm
        # refuses; scvi-tools' own warning for it says to avoid that last batch. Retried once,
        # only then, with the last incomplete batch dropped (datasplitter_kwargs drop_last).
        if "Expected more than 1 value per channel" not in str(error):
            raise
        predicted = _scanvi_predictions(both, epochs, {"drop_last": True})
        notes["retried_with"] = "datasplitter_kwargs={'drop_last': True}"
    return predicted[is_query], time.perf_counter() - start, notes


def _scanvi_predictions(both, epochs, datasplitter_kwargs=None) -> np.ndarray:
    scvi.model.SCVI.setup_anndata(both, batch_key="batch")
    vae = scvi.model.SCVI(both)
    vae.train(
        max_epochs=epochs[0], enable_progress_bar=False, datasplitter_kwargs=datasplitter_kwargs
    )
    model = scvi.model.SCANVI.from_scvi_model(vae, "Unknown", labels_key="label")
    model.train(
        max_epochs=epochs[1], enable_progress_bar=False, datasplitter_kwargs=datasplitter_kwargs
    )
    return np.asarray(model.predict(), dtype=str)


def _screformer(query, reference, variant: dict, epochs) -> tuple[np.ndarray, float]:
    """transfer.py's ``run_screformer`` without its calls at each confidence threshold (a third
    item here would be taken for notes on the run)."""
    return run_screformer(query, reference, variant, epochs)[:2]


def method_table(variants: list[str], quick: bool) -> dict:
    """Each method as ``f(query, reference) -> (predictions, seconds)``."""
    epochs = 1 if quick else None
    methods = {
        "screformer": functools.partial(
            _screformer, variant=dict(config={}, train={}), epochs=epochs
        )
    }
    for name in variants:
        methods[f"screformer {name}"] = functools.partial(
            _screformer, variant=VARIANTS[name], epochs=epochs
        )
    methods["logistic_regression"] = run_lr
    methods["celltypist"] = functools.partial(run_celltypist, majority_voting=False)
    methods["celltypist_majority_voting"] = functools.partial(run_celltypist, majority_voting=True)
    methods["scanvi"] = functools.partial(run_scanvi, epochs=(2, 1) if quick else (None, None))
    return methods


def peer_row(task, query, reference, methods: dict) -> dict:
    """transfer.py's ``transfer_row`` for any methods: score the query cells of the reference's
    types; a method's error is recorded instead of ending the run."""
    known = query.obs["label"].isin(set(reference.obs["label"])).to_numpy()
    truth = query.obs["label"].astype(str).to_numpy()
    row = {"task": task, "n_reference": reference.n_obs, "n_query": query.n_obs}
    row["n_genes"] = len(screformer.tl.shared_genes(reference, query, min_genes=1))
    for name, fn in methods.items():
        try:
            # A method may add notes on its run (scANVI: a retry) as a third item.
            predicted, seconds, *notes = fn(query, reference)
        except Exception as error:  # a peer failing with its defaults is a result too
            traceback.print_exc()
            row[name] = {"error": f"{type(error).__name__}: {error}"}
            continue
        row[name] = score(truth[known], predicted[known]) | {"seconds": seconds}
        row[name] |= notes[0] if notes else {}
        if (~known).any():
            row[name]["unseen_types_unassigned"] = float(np.mean(predicted[~known] == "Unassigned"))
        print(f"{task} | {name}: {row[name]}", flush=True)
    return row


def heart_folds(seed: int, folds: int = 5):
    """transfer.py's heart cv stage (``cv_rows``): the same stratified folds."""
    heart = labelled("heart_litvinukova_sanger_624cells.h5ad", "cell_type")
    labels = heart.obs["label"].astype(str).to_numpy()
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for k, (tr, te) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        yield f"heart fold {k}", heart[te].copy(), heart[tr].copy()


def merge_methods(new_path: str, into_path: str) -> None:
    """Put the methods of the run ``new_path`` (a rerun of some methods on the same transfers,
    e.g. screformer after a change of its defaults) into the run ``into_path``, noting the
    rerun's command (in place of an earlier rerun of the same methods); the other methods'
    results stay as they were measured."""
    new, into = (json.loads(Path(p).read_text()) for p in (new_path, into_path))
    for stage, rows in new["results"].items():
        if [r["task"] for r in rows] != [r["task"] for r in into["results"][stage]]:
            raise ValueError(f"{new_path} and {into_path} differ in the {stage} transfers.")
        for row, old in zip(rows, into["results"][stage], strict=True):
            old.update({m: row[m] for m in new["methods"]})
    into["methods"] += [m for m in new["methods"] if m not in into["methods"]]
    stages = list(new["results"])
    rerun = {
        "methods": new["methods"],
        "stages": stages,
        "command": new["command"],
        "wall_s": new["wall_s"],
    }

    def replaced(r: dict) -> bool:  # an earlier rerun with no result left here
        covered = r.get("stages", list(into["results"]))  # no "stages": it ran every stage
        return set(r["methods"]) <= set(new["methods"]) and set(covered) <= set(stages)

    into["rerun"] = [r for r in into.get("rerun", []) if not replaced(r)] + [rerun]
    Path(into_path).write_text(json.dumps(into, indent=2, default=str))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--name", help="results file name (default: peers, or peers_quick)")
    parser.add_argument("--only", nargs="+", choices=["pancreas", "pbmc", "cv"])
    parser.add_argument(
        "--methods", nargs="+", choices=["screformer", *PEERS], help="default: all (+ --variants)"
    )
    parser.add_argument("--variants", nargs="+", default=[], choices=list(VARIANTS))
    parser.add_argument("--task", nargs="+", help="only tasks whose name holds one of these")
    parser.add_argument("--tasks-limit", type=int, help="the first N tasks of each stage")
    parser.add_argument("--quick", action="store_true", help="tiny epochs: a smoke test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown-from", help="only rewrite the Markdown and figure of a JSON")
    parser.add_argument(
        "--merge", nargs=2, metavar=("NEW", "INTO"), help="replace INTO's methods by NEW's (JSON)"
    )
    args = parser.parse_args(argv)
    if args.merge:
        merge_methods(*args.merge)
        args.markdown_from = args.merge[1]
    if args.markdown_from:
        summary = json.loads(Path(args.markdown_from).read_text())
        Path(args.markdown_from).with_suffix(".md").write_text(markdown(summary))
        figure(summary, Path(args.markdown_from).parent / summary["figure"])
        return
    name = args.name or ("peers_quick" if args.quick else "peers")
    methods = method_table(args.variants, args.quick)
    if args.methods:
        keep = set(args.methods) | {m for m in methods if m.startswith("screformer ")}
        methods = {m: fn for m, fn in methods.items() if m in keep}
    scvi.settings.seed = args.seed
    stages = {
        "pancreas": pancreas_tasks,
        "pbmc": pbmc_tasks,
        "cv": functools.partial(heart_folds, args.seed),
    }
    start = time.perf_counter()
    results = {}
    for stage in args.only or list(stages):
        tasks = [t for t in stages[stage]() if not args.task or any(s in t[0] for s in args.task)][
            : args.tasks_limit
        ]
        results[stage] = [peer_row(t, q, r, methods) for t, q, r in tasks]
    summary = {
        "methods": list(methods),
        "quick": args.quick,
        "versions": {
            "screformer": screformer.__version__,
            "celltypist": celltypist.__version__,
            "scvi-tools": scvi.__version__,
            "scikit-learn": sklearn.__version__,
            "scanpy": sc.__version__,
        },
        "scanvi_input": {k: v.uns["scanvi_input"] for k, v in shipped().items()},
        "figure": f"{name}.png",
        "results": results,
        "wall_s": time.perf_counter() - start,
    }
    write_results(args.out, name, summary, markdown)
    figure(summary, Path(args.out) / f"{name}.png")


def _rows(s: dict) -> list[dict]:
    return [r for rows in s["results"].values() for r in rows]


def _f1(row: dict, method: str) -> float:
    return row.get(method, {}).get("macro_f1", np.nan)


def _cell(result: dict | None) -> str:
    if not result:
        return ""
    if "error" in result:
        return "failed"
    text = f"{result['macro_f1']:.3f} / {result['accuracy']:.3f}"
    return text + (f" ({100 * result['unassigned']:.0f}%)" if result["unassigned"] else "")


def _mean(rows: list[dict], method: str, key: str) -> str:
    values = [r[method][key] for r in rows if key in r.get(method, {})]
    if not values:
        return ""
    text = f"{np.mean(values):.2f}" if key == "seconds" else f"{np.mean(values):.3f}"
    return text + (f" ({len(values)} of {len(rows)})" if len(values) < len(rows) else "")


def markdown(s: dict) -> str:
    methods, every = s["methods"], _rows(s)
    shown = [SHOWN.get(m, m) for m in methods]
    title = "# Peers: screformer, logistic regression, CellTypist and scANVI on the same transfers"
    lines = [title, ""]
    if s["quick"]:
        lines += ["**Smoke test (`--quick`: 1-2 epochs): not a benchmark; do not quote.**", ""]
    lines += [
        f"Command: `{s['command']}`  ",
        f"Machine: {s['machine']}  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in s["versions"].items()) + "  ",
        f"Wall time: {s['wall_s'] / 60:.1f} min; peak memory {s['peak_rss_gb']:.2f} GB.",
        *(
            f"Rerun since, on the same transfers: {', '.join(r['methods'])} "
            f"({', '.join(r['stages']) + ' only; ' if 'stages' in r else ''}"
            f"`{r['command']}`, {r['wall_s'] / 60:.1f} min).  "
            for r in s.get("rerun", [])
        ),
        "",
        "Each method with its documented defaults on the same cells and shared genes (setup, and "
        "the values each reads, in `benchmarks/peers.py`'s docstring). Each cell: macro F1 over "
        "the types present in the scored cells' truth / accuracy (share called Unassigned, when "
        "any). scANVI's input per study: "
        + "; ".join(f"{k}: {v}" for k, v in s["scanvi_input"].items())
        + ".",
        "",
        f"![macro F1 per transfer and method, and seconds per transfer]({s['figure']})",
        "",
        "## Mean over the transfers",
        "",
        "| | " + " | ".join(shown) + " |",
        "|---" * (len(methods) + 1) + "|",
    ]
    for key, label in [
        ("macro_f1", "macro F1"),
        ("accuracy", "accuracy"),
        ("unassigned", "Unassigned"),
        ("seconds", "seconds per transfer"),
    ]:
        lines.append(f"| {label} | " + " | ".join(_mean(every, m, key) for m in methods) + " |")
    best = [max(methods, key=lambda m: np.nan_to_num(_f1(r, m), nan=-1)) for r in every]
    lines.append(
        "| best macro F1 (transfers) | " + " | ".join(str(best.count(m)) for m in methods) + " |"
    )
    for stage, rows in s["results"].items():
        lines += ["", f"## {stage}", "", "| transfer | genes | " + " | ".join(shown) + " |"]
        lines.append("|---" * (len(methods) + 2) + "|")
        for r in rows:
            cells = [_cell(r.get(m)) for m in methods]
            lines.append(f"| {r['task']} | {r['n_genes']} | " + " | ".join(cells) + " |")
        means = [_mean(rows, m, "macro_f1") for m in methods]
        lines.append("| **mean macro F1** | | " + " | ".join(means) + " |")
    # Runs that failed, and runs retried after scANVI's batch-of-one failure.
    for title, key, say in [
        ("Failures", "error", "{}"),
        (
            "Retries",
            "retried_with",
            "failed with its defaults (a training batch of one cell), retried with {}",
        ),
    ]:
        notes = [
            f"- {r['task']}, {m}: " + say.format(r[m][key])
            for r in every
            for m in methods
            if key in r.get(m, {})
        ]
        if notes:
            lines += ["", f"## {title}", "", *notes]
    return "\n".join(lines) + "\n"


def figure(s: dict, path: Path) -> None:
    """Macro F1 heatmap (transfers x methods, a mean row last) over mean seconds per method."""
    methods, rows = s["methods"], _rows(s)
    f1 = np.array([[_f1(r, m) for m in methods] for r in rows])
    f1 = np.vstack([f1, np.nanmean(f1, axis=0)])
    names = [r["task"] for r in rows] + ["mean"]
    seconds = [
        np.mean([r[m]["seconds"] for r in rows if "seconds" in r.get(m, {})] or [np.nan])
        for m in methods
    ]
    fig, (top, bottom) = plt.subplots(
        2,
        1,
        sharex=True,
        figsize=(3.5 + 1.3 * len(methods), 2.5 + 0.32 * len(names)),
        height_ratios=[len(names), 6],
    )
    top.imshow(f1, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for (i, j), value in np.ndenumerate(f1):
        text = "failed" if np.isnan(value) else f"{value:.2f}"
        color = "black" if value > 0.6 else "white"
        top.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
    top.axhline(len(rows) - 0.5, color="white", linewidth=3)
    top.set_yticks(range(len(names)), names, fontsize=8)
    top.set_title("Macro F1" + (" (--quick smoke test: not a benchmark)" if s["quick"] else ""))
    bars = bottom.bar(range(len(methods)), seconds, color="grey")
    bottom.bar_label(bars, fmt="%.2g", fontsize=8)
    bottom.set_yscale("log")
    bottom.set_ylim(top=5 * np.nanmax(seconds))  # room for the labels
    bottom.set_ylabel("seconds per transfer\n(mean)")
    bottom.set_xticks(
        range(len(methods)), [SHOWN.get(m, m) for m in methods], rotation=30, ha="right"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


if __name__ == "__main__":
    main()
