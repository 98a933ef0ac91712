"""``screformer.tl.predict_file``: label the cells of an ``.h5ad`` file larger than memory."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from anndata.io import read_elem, write_elem
from tqdm.auto import tqdm

from .._io import atomic_write
from ..data import _streaming
from ..model import SCReformer
from ..pp import PreparedData, detect_input, to_panel
from ._annotate import TRANSFER_UNASSIGNED_THRESHOLD, label_cells, run_record
from ._result import UNASSIGNED, warn_if_mostly_unassigned

logger = logging.getLogger("screformer")

SUFFIXES = (".h5ad", ".csv")


def predict_file(
    model: SCReformer | str | os.PathLike,
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    chunk_size: int = 4096,
    key_added: str = "screformer",
    unassigned_threshold: float = TRANSFER_UNASSIGNED_THRESHOLD,
    novelty_threshold: float | None = None,
    layer: str | None = None,
    gene_symbols: str | None = None,
) -> dict:
    """Label the cells of the ``.h5ad`` file ``path`` with a trained model, reading it from disk
    ``chunk_size`` cells at a time, and write the labels to ``out``.

    The expression matrix is never loaded whole: memory grows with ``chunk_size`` and with the
    small per-cell results (cells x classes probabilities), not with the file. The kind of values
    (counts or log-normalised) is detected on the first ``chunk_size`` cells. The labels are those
    of :func:`screformer.tl.annotate` with the same model, up to the randomness of LSH attention,
    which depends on which cells share a batch.

    Parameters
    ----------
    model
        A trained :class:`~screformer.SCReformer`, or its folder or registered name
        (:meth:`SCReformer.from_pretrained`).
    path
        The ``.h5ad`` file of cells to label (raw counts or log-normalised values).
    out
        Where to write, by extension: ``.h5ad``, a copy of ``path`` with the keys of
        :func:`~screformer.tl.annotate` added (``obs[f"{key_added}_prediction"]``,
        ``obs[f"{key_added}_confidence"]``, ``obsm[f"{key_added}_probabilities"]``,
        ``uns[key_added]``, and the novelty and uHAF keys when the model has them);
        ``.csv``, a table with one row per cell: ``cell`` (``obs_names``), the ``obs`` columns
        of :func:`~screformer.tl.annotate` and one probability column per class. The file is
        written beside ``out`` under a temporary name and renamed when
        complete: a failure leaves no output.
    chunk_size
        Cells read from disk and predicted at once.
    key_added
        Prefix of the keys (columns) written.
    unassigned_threshold
        Cells whose best probability is below this are called ``"Unassigned"``, as are cells
        with no panel gene expressed (default 0.1, as :func:`~screformer.tl.annotate` with a
        trained model).
    novelty_threshold
        Cells whose novelty score is above this are called ``"Unassigned"`` too (default: the
        score is written but not used, as by :func:`~screformer.tl.annotate` with a trained
        model).
    layer, gene_symbols
        Layer of ``path`` to read instead of ``X``; ``var`` column with gene symbols (default
        ``var_names``).

    Returns
    -------
    ``n_cells``, ``n_unassigned``, ``seconds`` (end to end, writing included), ``cells_per_s``
    and ``counts`` (cells per label).

    Examples
    --------
    >>> screformer.tl.predict_file("my_model", "atlas.h5ad", "atlas_labels.csv")  # doctest: +SKIP
    {'n_cells': 60000, 'n_unassigned': 812, 'seconds': 95.1, 'cells_per_s': 631.0, ...}
    """
    start_time = time.perf_counter()
    path, out = Path(path), Path(out)
    suffix = out.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"Cannot write {out}: the output must end in {' or '.join(SUFFIXES)} "
            "(a labelled copy of the input, or a table of labels)."
        )
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive number of cells, not {chunk_size}.")
    chunk_size = int(chunk_size)
    if not 0 <= unassigned_threshold <= 1:
        raise ValueError(f"unassigned_threshold must be in [0, 1], not {unassigned_threshold}.")
    if not key_added:
        raise ValueError("key_added must be a non-empty string.")
    if not isinstance(model, SCReformer):
        model = SCReformer.from_pretrained(model)
    if not model.is_trained_:
        raise ValueError("The model is not trained; fine-tune it first (screformer.tl.annotate).")

    (source,) = _streaming.open_sources(
        path,
        model.gene_panel,
        layer=layer,
        gene_symbols=gene_symbols,
        min_genes=None,  # as screformer.pp.prepare
        sample_rows=chunk_size,
    )
    if source.n_obs == 0:
        raise ValueError(f"{path} has no cells.")

    def results(handle: h5py.File):
        """The :class:`AnnotationResult` of each chunk of cells, in order."""
        matrix = _streaming._matrix_element(handle, layer)
        names = _obs_names(handle)
        with tqdm(total=source.n_obs, unit="cell", desc="screformer", disable=None) as bar:
            for start in range(0, source.n_obs, chunk_size):
                stop = min(start + chunk_size, source.n_obs)
                rows = _streaming.read_rows(matrix, start, stop)
                _check_values(rows, path, start, stop)
                X = to_panel(rows, source.input_kind, source.alignment)
                prepared = PreparedData(X, source.alignment, source.input_kind)
                yield label_cells(
                    model,
                    prepared,
                    names(start, stop),
                    unassigned_threshold,
                    novelty_threshold,
                    key_added,
                )
                bar.update(stop - start)

    counts = pd.Series(0, index=[*model.classes, UNASSIGNED])
    tables, probabilities, uhaf_probabilities = [], [], []
    with h5py.File(path, "r") as handle:
        if suffix == ".csv":
            with atomic_write(out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as table:
                for k, result in enumerate(results(handle)):
                    frame = pd.concat([result.predictions, result.probabilities], axis=1)
                    frame.to_csv(table, header=k == 0, index_label="cell")
                    counts += result.cells.prediction_counts()
        else:
            for result in results(handle):
                tables.append(result.predictions)
                probabilities.append(result.cells.probabilities.astype(np.float32, copy=False))
                if result.uhaf is not None:
                    uhaf_probabilities.append(result.uhaf.probabilities.astype(np.float32))
                counts += result.cells.prediction_counts()
    n_unassigned = int(counts[UNASSIGNED])
    warn_if_mostly_unassigned(n_unassigned, source.n_obs)

    if suffix == ".h5ad":
        result.record = run_record(
            model,
            {
                "unassigned_threshold": unassigned_threshold,
                "novelty_threshold": novelty_threshold,
                "layer": layer,
                "gene_symbols": gene_symbols,
                "chunk_size": chunk_size,
            },
            source.alignment,
            source.input_kind,
            n_unassigned,
        )
        with atomic_write(out) as tmp:
            shutil.copyfile(path, tmp)  # streamed: memory does not grow with the file
            with h5py.File(tmp, "r+") as handle:
                obs = read_elem(handle["obs"])
                for column, values in pd.concat(tables).items():
                    obs[column] = values.set_axis(obs.index)
                write_elem(handle, "obs", obs)
                for group in ("obsm", "uns"):
                    if group not in handle:
                        write_elem(handle, group, {})
                keys = result.keys
                write_elem(handle["obsm"], keys.probabilities, np.concatenate(probabilities))
                write_elem(handle["uns"], keys.uns, result.record)
                if uhaf_probabilities:
                    uhaf_keys = result.uhaf_keys
                    write_elem(
                        handle["obsm"], uhaf_keys.probabilities, np.concatenate(uhaf_probabilities)
                    )
                    write_elem(handle["uns"], uhaf_keys.uns, result.uhaf_record)

    seconds = time.perf_counter() - start_time
    logger.info("Labelled %d cells of %s in %.1f s.", source.n_obs, path, seconds)
    return {
        "n_cells": source.n_obs,
        "n_unassigned": n_unassigned,
        "seconds": seconds,
        "cells_per_s": source.n_obs / seconds,
        "counts": {str(k): int(v) for k, v in counts.items() if v},
    }


def _obs_names(handle: h5py.File):
    """``names(start, stop)``: the ``obs_names`` of cells ``start:stop``, read a slice at a time
    when the index is a plain string dataset (as anndata writes it), else read once."""
    obs = handle["obs"]
    index = obs[obs.attrs["_index"]]
    if isinstance(index, h5py.Dataset) and h5py.check_string_dtype(index.dtype) is not None:
        return lambda start, stop: index.asstr()[start:stop].astype(str)
    values = np.asarray(read_elem(index)).astype(str)
    return lambda start, stop: values[start:stop]


def _check_values(rows, path: Path, start: int, stop: int) -> None:
    """Fail on values that the first cells' check would have refused (NaN, infinite, negative),
    with the same check (:func:`~screformer.pp.detect_input`), naming the cells."""
    try:
        detect_input(rows)
    except ValueError as err:
        raise ValueError(f"{path}, cells {start}-{stop - 1}: {err}") from err
