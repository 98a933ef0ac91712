"""gene2vec gene embeddings (Du et al. 2019): read the published text format onto a panel, or
train such vectors on co-expression in your own data."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from .pp._genes import normalize_gene_name
from .pretrained import cache_dir, download

logger = logging.getLogger("screformer")

#: Public address of the published 200-d vectors (Du et al. 2019, MIT; ``path="published"``).
#: No checksum is pinned: the file could not be reached to compute one; pass ``sha256=`` to pin it.
PUBLISHED_URL = (
    "https://github.com/jingcheng-du/Gene2vec/raw/master/pre_trained_emb/"
    "gene2vec_dim_200_iter_9.txt"
)


def read_gene2vec(
    path: str | os.PathLike,
    panel,
    *,
    dim: int | None = None,
    seed: int = 0,
    sha256: str | None = None,
) -> tuple[np.ndarray, int]:
    """Gene vectors for ``panel`` from a gene2vec text file, local or at a URL.

    ``path`` may be ``"published"`` (the authors' file at :data:`PUBLISHED_URL`) or an
    ``http(s)://`` or ``ftp://`` URL: the file is downloaded once with pooch
    into screformer's cache folder (:func:`screformer.pretrained.cache_dir`) and read from there
    afterwards; with ``sha256`` a file whose checksum differs is refused.

    The file holds one gene a line, ``SYMBOL v1 v2 ... vN`` separated by spaces or tabs (the
    published ``gene2vec_dim_200_iter_9.txt``); a word2vec header line (``n_genes dim``) is
    skipped. Names match the panel case-insensitively. Panel genes the file lacks get random
    vectors with the same spread as the found ones (their count is logged and returned).

    With ``dim`` smaller than the file's width (a 32-wide model from the 200-d published
    vectors), the found vectors are projected on their first ``dim`` principal components, which
    keeps as much of their co-expression geometry as ``dim`` dimensions can.

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
    if str(path) == "published":
        path = PUBLISHED_URL
    if str(path).startswith(("http://", "https://", "ftp://")):
        path = download(str(path), sha256, cache_dir() / "gene2vec", "gene2vec vectors")
    index = {normalize_gene_name(g): i for i, g in reversed(list(enumerate(panel)))}
    found: dict[int, np.ndarray] = {}
    file_dim = None
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            if line_number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec header
            if file_dim is None:
                file_dim = len(parts) - 1
            if len(parts) - 1 != file_dim:
                raise ValueError(
                    f"{path}, line {line_number}: {len(parts) - 1} values where the file's "
                    f"first vector has {file_dim}."
                )
            i = index.get(normalize_gene_name(parts[0]))
            if i is not None and i not in found:
                found[i] = np.asarray(parts[1:], dtype=np.float32)
    if file_dim is None:
        raise ValueError(f"{path} holds no gene vectors.")
    if dim is not None and dim != file_dim and found:
        if dim > min(file_dim, len(found)):
            raise ValueError(
                f"{path} has {len(found)} panel genes with {file_dim}-d vectors: too few to "
                f"give {dim}-d vectors."
            )
        projected = _principal_components(np.stack(list(found.values())), dim)
        found = dict(zip(found, projected, strict=True))
    dim = file_dim if dim is None else dim
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


def _principal_components(vectors: np.ndarray, dim: int) -> np.ndarray:
    """Rows of ``vectors`` on their first ``dim`` principal axes (centred, scale kept)."""
    centred = vectors - vectors.mean(0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    return (centred @ axes[:dim].T).astype(np.float32)


def coexpressed_pairs(
    X, genes, *, min_cells: int = 20, min_correlation: float = 0.3, max_partners: int = 20
) -> list[tuple[str, str]]:
    """Pairs of co-expressed genes in one data set (Du et al.'s "sentences").

    ``X`` holds log-normalised values (cells x genes). Among genes detected in at least
    ``min_cells`` cells, a pair is kept when its Pearson correlation across cells is at least
    ``min_correlation``; each gene keeps its ``max_partners`` best partners, so that a few
    hub genes do not dominate. (Du et al. used a threshold of 0.9 on bulk expression; single
    cells are sparser and noisier, so their correlations are lower.)
    """
    from scipy import sparse

    X = sparse.csc_matrix(X, dtype=np.float32)
    keep = np.flatnonzero(np.diff(X.indptr) >= min_cells)
    if len(keep) < 2:
        return []
    dense = X[:, keep].toarray()
    dense -= dense.mean(0)
    norms = np.linalg.norm(dense, axis=0)
    dense /= np.where(norms > 0, norms, 1)
    correlation = dense.T @ dense
    np.fill_diagonal(correlation, -1)
    partners = min(max_partners, len(keep) - 1)
    best = np.argpartition(-correlation, partners - 1, axis=1)[:, :partners]
    pairs = set()
    for i, row in enumerate(best):
        for j in row[correlation[i, row] >= min_correlation]:
            pairs.add((min(i, j), max(i, j)))
    genes = np.asarray(genes)[keep]
    return [(str(genes[i]), str(genes[j])) for i, j in sorted(pairs)]


def train_gene2vec(
    datasets,
    out_path: str | os.PathLike,
    *,
    dim: int = 200,
    epochs: int = 10,
    min_cells: int = 20,
    min_correlation: float = 0.3,
    max_partners: int = 20,
    layer: str | None = None,
    seed: int = 0,
) -> int:
    """Gene embeddings from co-expression, by Du et al.'s gene2vec method, written as text.

    For each data set the co-expressed gene pairs are found (:func:`coexpressed_pairs`; values
    normalised as :func:`screformer.pp.prepare` does); all pairs are the sentences of a
    skip-gram word2vec (gensim; window 1, one pair a sentence, as Du et al.), so genes that are
    often co-expressed get close vectors. The vectors are written one gene a line,
    ``SYMBOL v1 ... v_dim``: the published format that :func:`read_gene2vec` reads.

    Needs ``gensim`` (``pip install gensim``). Each data set is read into memory; subsample a
    very large one first.

    Parameters
    ----------
    datasets
        AnnData objects or ``.h5ad`` paths (raw counts or log-normalised values).
    out_path
        Text file to write (atomically).
    dim, epochs
        Vector width (gene2vec: 200) and passes over the pairs (gene2vec: 10).
    min_cells, min_correlation, max_partners
        See :func:`coexpressed_pairs`.
    layer
        Layer with the expression values (default ``X``).
    seed
        Seed of word2vec (which runs on one thread, so the result is reproducible).

    Returns
    -------
    The number of genes written.

    Examples
    --------
    >>> train_gene2vec(["pbmc.h5ad", "heart.h5ad"], "gene2vec_200.txt")  # doctest: +SKIP
    """
    try:
        from gensim.models import Word2Vec
    except ImportError as err:
        raise ImportError("train_gene2vec needs gensim: pip install gensim") from err
    import anndata as ad

    from .pp import detect_input, expression_matrix, to_log2_normalized

    pairs: list[tuple[str, str]] = []
    for data in datasets:
        adata = ad.read_h5ad(data) if isinstance(data, str | os.PathLike) else data
        X = expression_matrix(adata, layer)
        X = to_log2_normalized(X, detect_input(X))
        found = coexpressed_pairs(
            X,
            adata.var_names,
            min_cells=min_cells,
            min_correlation=min_correlation,
            max_partners=max_partners,
        )
        logger.info("gene2vec: %d co-expressed pairs in %s.", len(found), _name(data))
        pairs += found
    if not pairs:
        raise ValueError(
            "No co-expressed gene pairs found: lower min_correlation or min_cells, or add data."
        )
    # sample=0: no down-sampling of frequent genes; max_partners already caps hub genes, and
    # with a small vocabulary down-sampling would drop most pairs.
    model = Word2Vec(
        pairs,
        vector_size=dim,
        window=1,
        min_count=1,
        sg=1,
        sample=0,
        epochs=epochs,
        seed=seed,
        workers=1,
    )
    lines = [
        f"{gene} " + " ".join(f"{v:.6g}" for v in model.wv[gene]) for gene in model.wv.index_to_key
    ]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, out_path)
    logger.info("gene2vec: %d genes from %d pairs written to %s.", len(lines), len(pairs), out_path)
    return len(lines)


def _name(data) -> str:
    return Path(data).name if isinstance(data, str | os.PathLike) else "an AnnData"
