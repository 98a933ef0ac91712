"""gene2vec gene embeddings (Du et al. 2019): read the published text format onto a panel."""

from __future__ import annotations

import logging
import os

import numpy as np

from .pp._genes import normalize_gene_name
from .pretrained import cache_dir, download

logger = logging.getLogger("screformer")


def read_gene2vec(
    path: str | os.PathLike, panel, *, seed: int = 0, sha256: str | None = None
) -> tuple[np.ndarray, int]:
    """Gene vectors for ``panel`` from a gene2vec text file, local or at a URL.

    ``path`` may be an ``http(s)://`` or ``ftp://`` URL: the file is downloaded once with pooch
    into screformer's cache folder (:func:`screformer.pretrained.cache_dir`) and read from there
    afterwards; with ``sha256`` a file whose checksum differs is refused.

    The file holds one gene a line, ``SYMBOL v1 v2 ... vN`` separated by spaces or tabs (the
    published ``gene2vec_dim_200_iter_9.txt``); a word2vec header line (``n_genes dim``) is
    skipped. Names match the panel case-insensitively. Panel genes the file lacks get random
    vectors with the same spread as the found ones (their count is logged and returned).

    Returns
    -------
    ``(vectors, n_found)``: float32 array, panel genes x N, and how many panel genes the file had.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "g2v.txt"
    >>> _ = f.write_text("2 3\\nCD3E 0.1 0.2 0.3\\nLYZ 1 2 3\\n")
    >>> vectors, n_found = read_gene2vec(f, ["lyz", "MS4A1"])
    >>> vectors.shape, n_found, vectors[0].tolist()
    ((2, 3), 1, [1.0, 2.0, 3.0])
    """
    if str(path).startswith(("http://", "https://", "ftp://")):
        path = download(str(path), sha256, cache_dir() / "gene2vec", "gene2vec vectors")
    index = {normalize_gene_name(g): i for i, g in reversed(list(enumerate(panel)))}
    found: dict[int, np.ndarray] = {}
    dim = None
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            if line_number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec header
            if dim is None:
                dim = len(parts) - 1
            if len(parts) - 1 != dim:
                raise ValueError(
                    f"{path}, line {line_number}: {len(parts) - 1} values where the file's "
                    f"first vector has {dim}."
                )
            i = index.get(normalize_gene_name(parts[0]))
            if i is not None and i not in found:
                found[i] = np.asarray(parts[1:], dtype=np.float32)
    if dim is None:
        raise ValueError(f"{path} holds no gene vectors.")
    rng = np.random.default_rng(seed)
    spread = np.std(np.stack(list(found.values()))) if found else 1.0
    vectors = rng.normal(0, spread, size=(len(panel), dim)).astype(np.float32)
    for i, vector in found.items():
        vectors[i] = vector
    logger.info(
        "gene2vec: %d of %d panel genes found; %d initialised at random.",
        len(found),
        len(panel),
        len(panel) - len(found),
    )
    return vectors, len(found)
