"""What every benchmark script shares: the data folder, the baseline, machine facts, tables."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import resource
import shlex
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.preprocessing import StandardScaler

from screformer.pp import prepare

DATA_DIR = Path(
    os.environ.get("SCREFORMER_DATA", Path(__file__).resolve().parents[2] / "shared/data")
)


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "tcmalloc": "tcmalloc" in os.environ.get("LD_PRELOAD", ""),
        # A fresh install's logistic regression gave Baron -> Xin 0.884 against the committed
        # run's 0.891 (same code and cells): the versions that made a result travel with it.
        "packages": {p: _version(p) for p in PACKAGES},
    }


PACKAGES = ("numpy", "scipy", "scikit-learn", "anndata", "scanpy", "lightning", "reformer-pytorch")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def command() -> str:
    """The command line as typed (arguments with spaces quoted, so it can be pasted back)."""
    return f"{Path(sys.executable).name} {shlex.join(sys.argv)}"


class LogisticBaseline:
    """Logistic regression on the same genes and the same log-normalised values as screformer
    (counts per 1e4, log2; screformer's own preprocessing, so any input kind works).

    The default is CellTypist's classifier: features scaled and clipped at 10, multinomial
    logistic regression (C=1, max_iter=1000). ``C=0.1, scale=False`` is the plain linear model
    of the transfer issues (sc-foundation-eval's baseline)."""

    def __init__(self, train, labels, genes: list[str], C: float = 1.0, scale: bool = True):
        self.genes = list(genes)
        self.scaler = StandardScaler() if scale else None
        self.clf = LogisticRegression(C=C, max_iter=1000)
        self.clf.fit(self._features(train, fit=True), np.asarray(labels, dtype=str))
        self.classes = list(self.clf.classes_)

    def _features(self, adata, fit=False):
        X = prepare(adata, self.genes, min_genes=1).X.toarray()
        if self.scaler is None:
            return X
        X = self.scaler.fit_transform(X) if fit else self.scaler.transform(X)
        return np.clip(X, None, 10)

    def predict_proba(self, adata) -> np.ndarray:
        return self.clf.predict_proba(self._features(adata))

    def predict(self, adata) -> np.ndarray:
        return np.asarray(self.classes)[self.predict_proba(adata).argmax(1)]


def score(truth, predicted) -> dict:
    """The project's scoring convention: macro F1 over the cell types present in ``truth`` (a
    stray predicted class or an Unassigned call costs its true type's recall, counted once),
    accuracy, and the share of cells called Unassigned."""
    truth, predicted = np.asarray(truth, dtype=str), np.asarray(predicted, dtype=str)
    return {
        "macro_f1": float(
            f1_score(truth, predicted, average="macro", labels=np.unique(truth), zero_division=0)
        ),
        "accuracy": float(np.mean(truth == predicted)),
        "unassigned": float(np.mean(predicted == "Unassigned")),
        "n_cells": int(len(truth)),
    }


def mean_sd(values) -> str:
    """``mean ± sd``; one value alone has no spread to show."""
    if len(values) == 1:
        return f"{values[0]:.3f} (one run)"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def write_results(out: str | Path, name: str, summary: dict, markdown) -> None:
    """Add the command, machine and peak memory to ``summary``; write ``name``.json and .md to
    ``out``; print the Markdown."""
    summary = {"command": command(), "machine": machine(), **summary, "peak_rss_gb": peak_rss_gb()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / f"{name}.md").write_text(markdown(summary))
    print(markdown(summary))
