"""Labelling an ``.h5ad`` from disk: wall time and peak memory of ``screformer predict`` as the
number of cells grows.

Data: ../shared/data/labelled/pbmc3k_labelled.h5ad (10x Genomics pbmc3k, 2,638 cells x 13,714
genes, raw UMI counts; CC BY 4.0), its cells repeated to ``--cells`` cells (counts in ``X``,
sparse) in a file built by a separate process, so that building it counts in no measurement.
The model is the one ``screformer annotate`` trains on pbmc3k with its defaults (a new model on
the 2,000 most variable genes; ``--encoder default --max-epochs N`` fine-tunes the bundled
encoder instead, on all its 14,737 genes), in a separate process too; or ``--model DIR``.

Each ``screformer predict BIG.h5ad --model DIR --out OUT.h5ad`` runs under its own wrapper
process, whose ``RUSAGE_CHILDREN`` peak RSS is that command's alone. Targets: peak memory
<= 2.5 GB at the largest size (60,000 cells), the same within 10% at the others (memory does
not grow with the cells), >= 500 cells/s end to end (process start and writing included).

Run from the repository root:

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \\
        python benchmarks/predict_from_disk.py --out benchmarks/results

Writes ``predict_from_disk.json`` and ``predict_from_disk.md`` to ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import DATA_DIR, write_results

DATA = DATA_DIR / "labelled/pbmc3k_labelled.h5ad"
LABELS_KEY = "classified"
MAX_PEAK_GB = 2.5
FLAT_WITHIN = 0.10
MIN_CELLS_PER_S = 500

# Runs the command given as its arguments and prints, as JSON, its wall time and peak RSS:
# this wrapper has no other child, so RUSAGE_CHILDREN is the command's own.
_MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({
    "returncode": proc.returncode,
    "wall_s": time.perf_counter() - start,
    "peak_rss_gb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2,
    "stdout": proc.stdout,
    "stderr": proc.stderr[-3000:],
}))
"""


def build_file(n_cells: int, path: Path) -> None:
    """``path``: pbmc3k's cells repeated to ``n_cells`` (X counts, obs, var; no layers)."""
    import anndata as ad
    import numpy as np
    from scipy import sparse

    source = ad.read_h5ad(DATA)
    reps = -(-n_cells // source.n_obs)
    X = sparse.vstack([sparse.csr_matrix(source.X)] * reps, format="csr")[:n_cells]
    take = np.arange(n_cells) % source.n_obs
    obs = source.obs.iloc[take].copy()
    obs.index = [f"{name}-{i // source.n_obs}" for i, name in zip(take, obs.index, strict=True)]
    big = ad.AnnData(X=X.astype(np.float32), obs=obs, var=source.var[[]].copy())
    path.parent.mkdir(parents=True, exist_ok=True)
    big.write_h5ad(path)


def run(command: list[str], what: str, echo: bool = True) -> subprocess.CompletedProcess:
    if echo:
        print(f"$ {' '.join(command)}", flush=True)
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{what} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def screformer_command() -> list[str]:
    script = Path(sys.executable).parent / "screformer"
    return [str(script)] if script.exists() else [sys.executable, "-m", "screformer.cli"]


def train_model(work: Path, encoder: str | None, max_epochs: int | None) -> tuple[Path, float]:
    """Train a model on pbmc3k in its own process, as ``screformer annotate`` does by default
    (or fine-tune ``encoder``); the saved model's folder."""
    model = work / "model"
    start = time.perf_counter()
    options = [] if encoder is None else ["--model", encoder]
    options += [] if max_epochs is None else ["--max-epochs", str(max_epochs)]
    run(
        [
            *screformer_command(),
            "annotate",
            str(DATA),
            "--labels-key",
            LABELS_KEY,
            *options,
            "--save-model",
            str(model),
            "--out",
            str(work / "pbmc3k_annotated.h5ad"),
        ],
        "training",
    )
    return model, time.perf_counter() - start


def measure(n_cells: int, model: str, work: Path, chunk_size: int) -> dict:
    big = work / f"cells_{n_cells}.h5ad"
    out = work / f"cells_{n_cells}_labelled.h5ad"
    start = time.perf_counter()
    run([sys.executable, __file__, "--build", str(n_cells), str(big)], "building the input")
    build_s = time.perf_counter() - start
    command = [
        *screformer_command(),
        "predict",
        str(big),
        "--model",
        model,
        "--out",
        str(out),
        "--chunk-size",
        str(chunk_size),
    ]
    print(f"$ {' '.join(command)}", flush=True)
    wrapped = run([sys.executable, "-c", _MEASURE, *command], "measuring", echo=False)
    result = json.loads(wrapped.stdout.strip().splitlines()[-1])
    if result["returncode"]:
        raise SystemExit(f"screformer predict failed:\n{result['stderr']}")
    print(result["stdout"], flush=True)
    summary_line = result["stdout"].splitlines()[0]  # "Wrote ...: N cells labelled (...) in S s"
    predict_s = float(summary_line.split(" in ")[-1].split(" s ")[0])
    n_unassigned = int(summary_line.split("(")[1].split(" Unassigned")[0])
    row = {
        "n_cells": n_cells,
        "input_gb": big.stat().st_size / 1024**3,
        "output_gb": out.stat().st_size / 1024**3,
        "build_s": build_s,
        "wall_s": result["wall_s"],
        "cells_per_s": n_cells / result["wall_s"],
        "predict_file_s": predict_s,
        "predict_file_cells_per_s": n_cells / predict_s,
        "peak_rss_gb": result["peak_rss_gb"],
        "n_unassigned": n_unassigned,
    }
    big.unlink()
    out.unlink()
    return row


def targets(rows: list[dict]) -> dict:
    largest = max(rows, key=lambda r: r["n_cells"])
    flat = all(
        abs(r["peak_rss_gb"] - largest["peak_rss_gb"]) <= FLAT_WITHIN * largest["peak_rss_gb"]
        for r in rows
    )
    slowest = min(r["cells_per_s"] for r in rows)
    return {
        f"peak_rss_gb_at_{largest['n_cells']}_cells <= {MAX_PEAK_GB}": bool(
            largest["peak_rss_gb"] <= MAX_PEAK_GB
        ),
        f"peak_rss_within_{FLAT_WITHIN:.0%}_of_largest": bool(flat),
        f"cells_per_s_end_to_end >= {MIN_CELLS_PER_S} (slowest {slowest:.0f})": bool(
            slowest >= MIN_CELLS_PER_S
        ),
    }


def markdown(s: dict) -> str:
    rows = "\n".join(
        f"| {r['n_cells']:,} | {r['input_gb']:.2f} | {r['wall_s']:.1f} | {r['cells_per_s']:.0f} | "
        f"{r['predict_file_cells_per_s']:.0f} | {r['peak_rss_gb']:.2f} | {r['n_unassigned']} |"
        for r in s["rows"]
    )
    checks = "\n".join(
        f"- {name}: {'met' if ok else 'NOT met'}" for name, ok in s["targets"].items()
    )
    return f"""# Labelling an .h5ad from disk (`screformer predict`)

Command: `{s["command"]}`; {s["machine"]["cpus"]} CPU cores, torch {s["machine"]["torch"]},
tcmalloc {s["machine"]["tcmalloc"]}. Input: pbmc3k's cells repeated ({s["data"]}, counts,
sparse X), labelled by `screformer predict IN.h5ad --model M --out OUT.h5ad --chunk-size
{s["chunk_size"]}` with {s["model"]}. Each command in its own process; peak RSS is that
process's alone (the input is built by another process).

| cells | input GB | wall s | cells/s end to end | cells/s in predict_file | peak GB | Unassigned |
|---|---|---|---|---|---|---|
{rows}

Targets:

{checks}
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--cells", type=int, nargs="+", default=[20000, 60000])
    parser.add_argument("--model", help="trained model folder or name (default: fine-tune one)")
    parser.add_argument("--encoder", help="pretrained encoder to fine-tune (default: a new model)")
    parser.add_argument("--max-epochs", type=int, help="training epochs (default: annotate's)")
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument("--work", help="folder for the big files (default: a temporary one)")
    parser.add_argument("--build", nargs=2, metavar=("N_CELLS", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.build:
        build_file(int(args.build[0]), Path(args.build[1]))
        return

    work = Path(args.work or tempfile.mkdtemp(prefix="predict_from_disk-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.model:
            model, described, train_s = args.model, f"the model `{args.model}`", None
        else:
            path, train_s = train_model(work, args.encoder, args.max_epochs)
            model = str(path)
            trained = (
                "a new model trained by `screformer annotate` with its defaults"
                if args.encoder is None
                else f"the `{args.encoder}` encoder fine-tuned"
            )
            epochs = "" if args.max_epochs is None else f" for {args.max_epochs} epoch(s)"
            described = (
                f"{trained} on pbmc3k `{LABELS_KEY}`{epochs} ({train_s:.0f} s, not measured below)"
            )
        rows = [measure(n, model, work, args.chunk_size) for n in sorted(args.cells)]
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)

    summary = {
        "data": DATA.name,
        "model": described,
        "train_s": train_s,
        "chunk_size": args.chunk_size,
        "rows": rows,
        "targets": targets(rows),
    }
    write_results(args.out, "predict_from_disk", summary, markdown)


if __name__ == "__main__":
    main()
