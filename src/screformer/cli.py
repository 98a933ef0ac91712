"""Command line: ``screformer annotate`` and ``screformer demo``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np


def write_h5ad_atomic(adata, path: str | os.PathLike) -> None:
    """Write to a temporary file beside ``path``, then rename: never a half-written output."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        adata.write_h5ad(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _train_kwargs(args) -> dict:
    return dict(max_epochs=args.max_epochs, seed=args.seed, accelerator=args.accelerator)


def _annotate(args) -> int:
    import anndata as ad

    from . import tl

    # --model is checked by SCReformer.from_pretrained: a path or a registered name.
    for path in (args.input, args.reference):
        if path and not Path(path).exists():
            raise FileNotFoundError(f"{path} does not exist.")
    adata = ad.read_h5ad(args.input)
    reference = ad.read_h5ad(args.reference) if args.reference else None
    kwargs = dict(
        key_added=args.key_added,
        unassigned_threshold=args.threshold,
        layer=args.layer,
        gene_symbols=args.gene_symbols,
    )
    if args.model:
        model = tl.annotate(adata, model=args.model, **kwargs)
    else:
        model = tl.annotate(
            adata, args.labels_key, reference=reference, **kwargs, **_train_kwargs(args)
        )
    if args.save_model:
        model.save(args.save_model, overwrite=True)
    write_h5ad_atomic(adata, args.out)
    counts = adata.obs[f"{args.key_added}_prediction"].value_counts()
    print(f"Wrote {args.out}: {adata.n_obs} cells labelled.\n{counts.to_string()}")
    return 0


def _demo(args) -> int:
    from . import datasets, tl

    adata = datasets.pbmc3k()
    rng = np.random.default_rng(args.seed)
    hidden = rng.random(adata.n_obs) < args.holdout
    truth = adata.obs["classified"].astype(str).to_numpy()
    adata.obs["training_labels"] = np.where(hidden, "Unknown", truth)
    print(
        f"pbmc3k: {adata.n_obs} cells; training on {int((~hidden).sum())} labelled cells, "
        f"predicting all, scoring the {int(hidden.sum())} whose labels were hidden."
    )
    tl.annotate(adata, "training_labels", **_train_kwargs(args))
    predicted = adata.obs["screformer_prediction"].astype(str).to_numpy()
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
    from . import __version__, pretrained

    print(f"screformer {__version__}")
    print(f"cache folder: {pretrained.cache_dir()} (set {pretrained.CACHE_ENV} to move it)")
    models = pretrained.available()
    if not models:
        print("pretrained models: none registered yet")
    for name, entry in sorted(models.items()):
        cached = (pretrained.cache_dir() / entry.file_name).exists()
        print(f"  {name}: {entry.url} ({'cached' if cached else 'not cached'}) {entry.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="screformer", description="Cell-type annotation with scReformer-BERT."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    def training_options(p):
        p.add_argument("--max-epochs", type=int, help="fine-tuning epochs (default: by data size)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--accelerator", default="auto", help="auto, cpu or gpu (default auto)")

    p = sub.add_parser("annotate", help="fine-tune on labelled cells and label every cell")
    p.add_argument("input", help="input .h5ad (cells to label)")
    p.add_argument("--out", required=True, help="output .h5ad (written atomically)")
    p.add_argument("--labels-key", help="obs column with training labels (of --reference if set)")
    p.add_argument("--reference", help="labelled .h5ad to train on instead of the input")
    p.add_argument(
        "--model", help="saved model folder or registered pretrained name (skips training)"
    )
    p.add_argument("--save-model", help="folder to save the trained model to")
    p.add_argument("--threshold", type=float, default=0.5, help="Unassigned below this")
    p.add_argument("--layer", help="layer with counts (default X)")
    p.add_argument("--gene-symbols", help="var column with gene symbols (default var_names)")
    p.add_argument("--key-added", default="screformer")
    training_options(p)
    p.set_defaults(run=_annotate)

    p = sub.add_parser("demo", help="annotate the bundled pbmc3k data with 20%% labels hidden")
    p.add_argument("--out", default="pbmc3k_annotated.h5ad")
    p.add_argument("--holdout", type=float, default=0.2, help="share of labels hidden")
    training_options(p)
    p.set_defaults(run=_demo)

    p = sub.add_parser("info", help="version, cache folder and registered pretrained models")
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
