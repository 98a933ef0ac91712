"""Command line: ``screformer annotate | predict | pretrain | demo | models | info``.

Only the standard library is imported here: each command imports what it needs when it runs,
so that ``--help`` and ``--version`` answer at once. Options whose default is a keyword default
of the function a command calls have no default here (``argparse.SUPPRESS``): only the options
given are passed on, and the function's signature keeps the one default.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import sys
from pathlib import Path

from . import __version__
from ._io import atomic_write
from ._keys import ResultKeys

_GIVEN = argparse.SUPPRESS  # no default here: the called function's default applies


def write_h5ad_atomic(adata, path: str | os.PathLike) -> None:
    """Write to a temporary file beside ``path``, then rename: never a half-written output."""
    with atomic_write(path) as tmp:
        adata.write_h5ad(tmp)


def _given(args, *names: str) -> dict:
    """The options among ``names`` given on the command line, by their Python names."""
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


def _threshold(value: str) -> float | None:
    return None if value.lower() == "none" else float(value)


def _default(fn, name: str):
    """The keyword default of ``fn``'s parameter ``name``."""
    return inspect.signature(fn).parameters[name].default


def _train_kwargs(args) -> dict:
    return _given(args, "max_epochs", "seed", "accelerator")


def _read_inputs(*paths):
    import anndata as ad

    for path in paths:
        if path and not Path(path).exists():
            raise FileNotFoundError(f"{path} does not exist.")
    return [ad.read_h5ad(path) if path else None for path in paths]


def _write_labelled(adata, args, key_added: str) -> int:
    write_h5ad_atomic(adata, args.out)
    counts = adata.obs[ResultKeys(key_added).prediction].value_counts()
    print(f"Wrote {args.out}: {adata.n_obs} cells labelled.\n{counts.to_string()}")
    return 0


def _query_kwargs(args) -> dict:
    kwargs = _given(args, "key_added", "layer", "gene_symbols", "novelty_threshold")
    if hasattr(args, "threshold"):
        kwargs["unassigned_threshold"] = args.threshold
    return kwargs


def _annotate(args) -> int:
    from . import tl

    adata, reference = _read_inputs(args.input, args.reference)
    model = tl.annotate(
        adata,
        args.labels_key,
        reference=reference,
        model=args.model,
        **_query_kwargs(args),
        **_given(args, "majority_voting", "over_clustering", "n_top_genes", "use_raw"),
        **_train_kwargs(args),
    )
    if args.save_model:
        model.save(args.save_model, overwrite=True)
    key_added = getattr(args, "key_added", _default(tl.annotate, "key_added"))
    return _write_labelled(adata, args, key_added)


def _predict(args) -> int:
    from . import tl

    source = Path(args.input)
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist.")
    if source.suffix.lower() != ".h5ad":
        raise ValueError(
            f"{source} is not an .h5ad file; predict reads .h5ad (AnnData) files. Convert it "
            f'first, e.g. python -c "import scanpy as sc; '
            f"sc.read_csv('{source}').write_h5ad('{source.with_suffix('.h5ad')}')\" "
            "(sc.read_10x_mtx / sc.read_10x_h5 for 10x output)."
        )
    result = tl.predict_file(
        args.model, source, args.out, **_given(args, "chunk_size"), **_query_kwargs(args)
    )
    counts = "\n".join(f"{label}  {n}" for label, n in result["counts"].items())
    print(
        f"Wrote {args.out}: {result['n_cells']} cells labelled "
        f"({result['n_unassigned']} Unassigned) in {result['seconds']:.1f} s "
        f"({result['cells_per_s']:.0f} cells/s).\n{counts}"
    )
    return 0


def _pretrain(args) -> int:
    from . import pretrain

    panel = None
    if args.panel:
        panel = Path(args.panel).read_text(encoding="utf-8").split()
    config = {
        k: getattr(args, k)
        for k in ("token_mode", "dim", "depth", "heads", "dim_head", "bucket_size")
        if getattr(args, k) is not None
    }
    options = _given(
        args,
        "layer",
        "gene_symbols",
        "max_epochs",
        "max_time",
        "batch_size",
        "accumulate_grad_batches",
        "lr",
        "chunk_size",
        "num_workers",
        "accelerator",
        "num_nodes",
        "strategy",
        "resume",
        "seed",
    )
    if hasattr(args, "devices"):
        options["devices"] = _devices(args.devices)
    if hasattr(args, "gene2vec"):
        options["gene_vectors"] = args.gene2vec
    path = pretrain(args.files, args.out, gene_panel=panel, **options, **config)
    print(f"Wrote the pretrained encoder to {path}.")
    return 0


def _devices(value: str):
    return int(value) if value.isdigit() else value


def _demo(args) -> int:
    import numpy as np

    from . import datasets, tl

    adata = datasets.pbmc3k()
    rng = np.random.default_rng(getattr(args, "seed", 0))
    hidden = rng.random(adata.n_obs) < args.holdout
    truth = adata.obs["classified"].astype(str).to_numpy()
    adata.obs["training_labels"] = np.where(hidden, "Unknown", truth)
    print(
        f"pbmc3k: {adata.n_obs} cells; training on {int((~hidden).sum())} labelled cells, "
        f"predicting all, scoring the {int(hidden.sum())} whose labels were hidden."
    )
    model = None if args.model.lower() == "none" else args.model
    print(
        "Training a new model on the 2,000 most variable genes."
        if model is None
        else f"Fine-tuning the pretrained model {model!r}."
    )
    tl.annotate(adata, "training_labels", model=model, **_train_kwargs(args))
    predicted = adata.obs[ResultKeys().prediction].astype(str).to_numpy()
    assigned = hidden & (predicted != tl.UNASSIGNED)
    print(
        f"Held-out cells: accuracy {np.mean(predicted[hidden] == truth[hidden]):.3f} "
        f"({int(hidden.sum() - assigned.sum())} Unassigned); accuracy of assigned cells "
        f"{np.mean(predicted[assigned] == truth[assigned]):.3f}."
    )
    write_h5ad_atomic(adata, args.out)
    print(f"Wrote {args.out}.")
    return 0


def _info(args) -> int:
    from . import pretrained

    print(f"screformer {__version__}")
    print(f"cache folder: {pretrained.cache_dir()} (set {pretrained.CACHE_ENV} to move it)")
    models = pretrained.available()
    if not models:
        print("pretrained models: none registered yet")
    for name, entry in sorted(models.items()):
        if entry.bundled is not None:
            where = f"{entry.bundled} (bundled)"
        else:
            cached = (pretrained.cache_dir() / entry.file_name).exists()
            where = f"{entry.url} ({'cached' if cached else 'not cached'})"
        print(f"  {name}: {where}: {entry.description}")
    return 0


def _models(args) -> int:
    from . import pretrained

    for name, entry in sorted(pretrained.available().items()):
        print(f"{name}: {entry.description}")
        card = pretrained.card(name)
        if card is None:
            continue
        cv = card["cross_validation"]["screformer"]
        lr = card["cross_validation"].get("logistic_regression", {})
        lines = [
            f"trained on: {card['training_data']} ({card['n_cells']:,} cells)",
            f"classes ({len(card['classes'])}): {', '.join(card['classes'])}",
            f"second level: uHAF {card['uhaf']['organ']} tier {card['uhaf']['tier']} "
            f"({', '.join(card['uhaf']['types'])})",
            f"genes: {card['genes']}; value encoding: {card['value_encoding']}",
            f"5-fold cross-validation: macro F1 {cv['macro_f1']}, accuracy {cv['accuracy']}"
            + (f" (logistic regression: macro F1 {lr['macro_f1']})" if lr else ""),
            f"built {card['built']} with screformer {card['screformer_version']}",
            f"use: screformer predict cells.h5ad --model {name} --out labelled.h5ad",
        ]
        print("\n".join(f"    {line}" for line in lines))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="screformer", description="Cell-type annotation with scReformer-BERT."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbose = argparse.ArgumentParser(add_help=False)  # -v before or after the command
    verbose.add_argument(
        "-v", "--verbose", action="store_true", default=_GIVEN, help="log progress details"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str):
        return sub.add_parser(
            name, help=help, description=help, parents=[verbose], argument_default=_GIVEN
        )

    def training_options(p):
        p.add_argument("--max-epochs", type=int, help="fine-tuning epochs (default: by data size)")
        p.add_argument("--seed", type=int, help="seed of the split, shuffles and weights")
        p.add_argument("--accelerator", help="auto, cpu or gpu (default: auto)")

    def query_options(p, out_help="output .h5ad (written atomically)"):
        p.add_argument("input", help="input .h5ad (cells to label)")
        p.add_argument("--out", required=True, help=out_help)
        p.add_argument(
            "--threshold",
            type=float,
            help="confidence below which a cell is Unassigned (default: tl.annotate's)",
        )
        p.add_argument(
            "--novelty-threshold",
            type=_threshold,
            help="novelty above which a cell is Unassigned; 'none' never (default: "
            "tl.annotate's: 0.99 when trained on the input's own labels, else none)",
        )
        p.add_argument("--layer", help="layer with counts (default X)")
        p.add_argument("--gene-symbols", help="var column with gene symbols (default var_names)")
        p.add_argument("--key-added", help="prefix of the obs columns written (screformer)")

    p = command("annotate", "fine-tune on labelled cells and label every cell")
    query_options(p)
    p.add_argument(
        "--labels-key", required=True, help="obs column with training labels (of --reference)"
    )
    p.add_argument("--reference", default=None, help="labelled .h5ad to train on instead")
    p.add_argument(
        "--model",
        default=None,
        help="pretrained encoder to start from: registered name (default) or path",
    )
    p.add_argument("--save-model", default=None, help="folder to save the trained model to")
    p.add_argument(
        "--n-top-genes",
        type=int,
        help="panel of a new model: the most variable training genes (default 2000)",
    )
    p.add_argument(
        "--majority-voting",
        action="store_true",
        help="also write each over-clustering cluster's most common label (as CellTypist)",
    )
    p.add_argument("--over-clustering", help="obs column of clusters to vote in (default: Leiden)")
    p.add_argument(
        "--use-raw",
        action="store_true",
        help="read the input's values and genes from its .raw (all genes, where X holds only "
        "the highly variable ones)",
    )
    training_options(p)
    p.set_defaults(run=_annotate)

    p = command(
        "predict", "label cells with a trained model (no training), reading the input from disk"
    )
    query_options(
        p,
        "output: .h5ad (a labelled copy of the input) or .csv (a table of labels and "
        "probabilities); written atomically",
    )
    p.add_argument("--model", required=True, help="trained model folder or registered name")
    p.add_argument("--chunk-size", type=int, help="cells read and predicted at once")
    p.set_defaults(run=_predict)

    p = command("pretrain", "masked-expression pre-training on .h5ad files")
    p.add_argument("files", nargs="+", help=".h5ad files of cells (streamed, never loaded whole)")
    p.add_argument("--out", required=True, help="output folder (model.pt, metrics, checkpoints)")
    p.add_argument(
        "--panel", default=None, help="text file of the model's genes (default: all, in order)"
    )
    p.add_argument(
        "--gene2vec",
        help="gene2vec text file, URL, or 'published' (Du et al.'s file) for the gene embeddings",
    )
    p.add_argument("--layer", help="layer with counts (default X)")
    p.add_argument("--gene-symbols", help="var column with gene symbols (default var_names)")
    p.add_argument("--max-epochs", type=int)
    p.add_argument("--max-time", help="stop after DD:HH:MM:SS")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--accumulate-grad-batches", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--chunk-size", type=int, help="rows read from disk at once")
    p.add_argument("--num-workers", type=int, help="data loader processes per device")
    p.add_argument("--accelerator", help="auto, cpu or gpu (default: auto)")
    p.add_argument("--devices", help="devices per machine (default: auto)")
    p.add_argument("--num-nodes", type=int, help="machines (run on each)")
    p.add_argument("--strategy", help="e.g. ddp (default: auto)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt")
    p.add_argument("--seed", type=int)
    p.add_argument("--token-mode", choices=["all", "expressed"], default=None)
    for name in ("dim", "depth", "heads", "dim-head", "bucket-size"):
        p.add_argument(
            f"--{name}", type=int, default=None, help="architecture (default: the CPU default)"
        )
    p.epilog = "Options without a stated default take screformer.pretrain's."
    p.set_defaults(run=_pretrain)

    p = command("demo", "annotate the bundled pbmc3k data with 20%% labels hidden")
    p.add_argument("--out", default="pbmc3k_annotated.h5ad")
    p.add_argument("--holdout", type=float, default=0.2, help="share of labels hidden")
    p.add_argument(
        "--model",
        default="none",
        help="pretrained encoder to fine-tune, e.g. the bundled 'default' (all its 14,737 genes: "
        "several times slower); default 'none': a new model on the 2,000 most variable genes",
    )
    training_options(p)
    p.set_defaults(run=_demo)

    p = command("models", "ready-to-use classifiers and pretrained encoders, with their cards")
    p.set_defaults(run=_models)

    p = command("info", "version, cache folder and registered pretrained models")
    p.set_defaults(run=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        return args.run(args)
    except (ValueError, KeyError, TypeError, FileNotFoundError, FileExistsError, OSError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"screformer: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
