"""Shared fixtures: small AnnData built here, tiny model settings, the real data folder."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import screformer.data._streaming

# Real data beside the checkout (../shared/data, see its README), or $SCREFORMER_DATA.
DATA_DIR = Path(
    os.environ.get("SCREFORMER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)

# A model small enough to train in seconds on 2 CPU cores.
TINY = dict(dim=8, depth=1, heads=2, dim_head=4, bucket_size=4, ff_mult=1, mlp_hidden=(16, 8))
# Augmentation (on by default) makes the task harder on purpose; unit tests of learning train
# without it, and tests/test_transfer.py tests it.
TINY_TRAIN = dict(max_epochs=3, batch_size=8, lr=3e-3, early_stopping=False, seed=0, augment=False)


def make_counts(n_per_class: int = 20, n_genes: int = 40, seed: int = 0) -> ad.AnnData:
    """Three cell types, each with 5 marker genes at high counts over Poisson background."""
    rng = np.random.default_rng(seed)
    types = np.repeat(["alpha", "beta", "gamma"], n_per_class)
    rate = np.full((len(types), n_genes), 0.3)
    for k, t in enumerate(["alpha", "beta", "gamma"]):
        rate[types == t, 5 * k : 5 * k + 5] = 8.0
    X = rng.poisson(rate).astype(np.float32)
    adata = ad.AnnData(
        sparse.csr_matrix(X),
        obs=pd.DataFrame(
            {"cell_type": pd.Categorical(types)}, index=[f"c{i}" for i in range(len(types))]
        ),
        var=pd.DataFrame(index=[f"GENE{j}" for j in range(n_genes)]),
    )
    return adata


@pytest.fixture
def counts_adata() -> ad.AnnData:
    return make_counts()


def require(path: Path) -> Path:
    """The path of a real data file; skipped where it is absent, but a failure in CI."""
    if not path.exists():
        message = f"real data not found at {path} (../shared/data beside the checkout)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/served; yields (base URL, folder, hits)."""
    served = tmp_path / "served"
    served.mkdir()
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            hits.append(self.path)

    handler = functools.partial(Handler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", served, hits
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def recorded_reads(monkeypatch):
    """Every (start, stop) read of a backed matrix (``data._streaming.read_rows``, the only
    reader of streamed files); any whole-file ``read_h5ad`` fails."""
    reads = []
    real = screformer.data._streaming.read_rows

    def recording(matrix, start, stop):
        reads.append((start, stop))
        return real(matrix, start, stop)

    def no_full_read(*args, **kwargs):
        raise AssertionError("the input was read whole")

    monkeypatch.setattr(screformer.data._streaming, "read_rows", recording)
    monkeypatch.setattr(ad, "read_h5ad", no_full_read)
    return reads
