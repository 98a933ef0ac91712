"""Align a data set's genes to a model's gene panel."""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

logger = logging.getLogger("screformer")

_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$", re.IGNORECASE)


def symbol_case(names) -> str | None:
    """``"human"`` when most gene symbols are upper case (``CD3E``), ``"mouse"`` when most are
    capitalised (``Cd3e``, the MGI convention), else None (Ensembl IDs, mixed names).

    Examples
    --------
    >>> symbol_case(["CD3E", "MS4A1", "LYZ"]), symbol_case(["Cd3e", "Ms4a1", "Lyz2"])
    ('human', 'mouse')
    """
    names = pd.Index(names).astype(str)
    names = [n for n in names[:: max(1, len(names) // 500)] if any(c.isalpha() for c in n)]
    if not names or looks_like_ensembl(names):
        return None
    upper = np.mean([n == n.upper() for n in names])
    capitalised = np.mean([n[0].isupper() and n[1:] != n[1:].upper() for n in names])
    return "human" if upper > 0.8 else "mouse" if capitalised > 0.8 else None


@dataclass(frozen=True)
class GeneAlignment:
    """Where each panel gene sits in the data.

    Attributes
    ----------
    data_index
        For each panel gene, the data column it is read from, or ``-1`` when the data lacks it
        (those genes are 0 in the prepared matrix, and the model reads them as unmeasured:
        see :attr:`unmeasured`).
    n_panel
        Number of genes in the model's panel.
    n_found
        Number of panel genes found in the data.
    n_duplicated
        Data columns ignored because an earlier column has the same gene name.
    """

    data_index: np.ndarray
    n_panel: int
    n_found: int
    n_duplicated: int

    @property
    def unmeasured(self) -> np.ndarray:
        """Boolean mask over the panel: True for the genes the data lacks.

        A gene the data lacks says nothing about the cell, unlike a gene measured at zero: the
        classifier reads it as a dropped-out gene and the novelty score leaves it out.
        """
        return np.asarray(self.data_index) < 0

    @property
    def fraction_found(self) -> float:
        return self.n_found / self.n_panel if self.n_panel else 0.0

    def report(self) -> dict:
        """The overlap as plain numbers (what is stored in ``uns``)."""
        return {
            "n_panel_genes": int(self.n_panel),
            "n_found": int(self.n_found),
            "fraction_found": round(float(self.fraction_found), 4),
            "n_duplicated_ignored": int(self.n_duplicated),
        }


def normalize_gene_name(name: str) -> str:
    """Key used to match genes: upper case; Ensembl IDs without their version suffix."""
    name = str(name).strip().upper()
    if _ENSEMBL.match(name):
        name = name.split(".")[0]
    return name


def looks_like_ensembl(names) -> bool:
    """True when most of ``names`` are Ensembl gene IDs (``ENSG00000141510``, ``ENSMUSG...``)."""
    names = pd.Index(names).astype(str)
    if len(names) == 0:
        return False
    sample = names[:: max(1, len(names) // 500)]
    return np.mean([bool(_ENSEMBL.match(n)) for n in sample]) > 0.5


def data_gene_names(adata: AnnData, gene_symbols: str | None = None) -> pd.Index:
    """The gene names of ``adata``: ``var_names``, or the ``var`` column ``gene_symbols``."""
    if gene_symbols is None:
        return pd.Index(adata.var_names.astype(str))
    if gene_symbols not in adata.var.columns:
        raise KeyError(
            f"gene_symbols={gene_symbols!r} is not a column of adata.var "
            f"(columns: {list(adata.var.columns)}). Pass the column that holds gene symbols, "
            "or gene_symbols=None to use adata.var_names."
        )
    return pd.Index(adata.var[gene_symbols].astype(str))


def unique_panel(names) -> list[str]:
    """A gene panel from a list of names: first occurrence kept (case-insensitive), order kept."""
    keys = pd.Index([normalize_gene_name(n) for n in names])
    keep = ~keys.duplicated(keep="first")
    return [str(n) for n, k in zip(names, keep, strict=True) if k]


def align_genes(
    names,
    panel,
    *,
    min_genes: int | None = None,
) -> GeneAlignment:
    """Map the data's gene names onto the model's panel.

    Matching is case-insensitive and ignores Ensembl version suffixes (``ENSG...1.5`` matches
    ``ENSG...1``). When several data columns match one panel gene (duplicated symbols), the
    **first** column in ``var`` order is used and the others are ignored (counted in
    ``n_duplicated``); this needs no data read and matches ``var_names_make_unique``, which renames
    later duplicates. Panel genes the data lacks are read as unmeasured downstream.

    Parameters
    ----------
    names
        Gene names of the data, in column order.
    panel
        Gene names of the model, in token order.
    min_genes
        Fewest panel genes that must be found; default ``min(100, len(panel) // 2)``.

    Raises
    ------
    ValueError
        When fewer than ``min_genes`` panel genes are found, with a hint when the data uses
        Ensembl IDs and the panel symbols (or the reverse).

    Examples
    --------
    >>> al = align_genes(["CD3E", "ms4a1", "XIST"], ["MS4A1", "CD3E", "LYZ"], min_genes=1)
    >>> al.data_index.tolist(), al.n_found
    ([1, 0, -1], 2)
    """
    names = pd.Index(names).astype(str)
    panel = pd.Index(panel).astype(str)
    keys = pd.Index([normalize_gene_name(n) for n in names])
    first = ~keys.duplicated(keep="first")
    lookup = pd.Series(np.flatnonzero(first), index=keys[first])
    panel_keys = pd.Index([normalize_gene_name(g) for g in panel])
    data_index = lookup.reindex(panel_keys).fillna(-1).to_numpy(dtype=np.int64)
    n_found = int((data_index >= 0).sum())
    n_duplicated = int((~first).sum())

    if min_genes is None:
        min_genes = min(100, len(panel) // 2)
    if n_found < max(min_genes, 1):
        hint = ""
        if looks_like_ensembl(names) and not looks_like_ensembl(panel):
            hint = (
                " The data's gene names look like Ensembl IDs but the model's panel holds gene "
                "symbols: pass gene_symbols='<var column with symbols>' (e.g. 'feature_name')."
            )
        elif looks_like_ensembl(panel) and not looks_like_ensembl(names):
            hint = (
                " The model's panel holds Ensembl IDs: pass gene_symbols='<var column with IDs>'."
            )
        raise ValueError(
            f"Only {n_found} of the model's {len(panel)} panel genes were found in the data "
            f"(at least {min_genes} needed). Examples of data genes: {list(names[:5])}; "
            f"of panel genes: {list(panel[:5])}.{hint}"
        )
    alignment = GeneAlignment(data_index, len(panel), n_found, n_duplicated)
    logger.info(
        "Gene panel: %d of %d genes found (%.1f%%); the rest are read as unmeasured.",
        n_found,
        len(panel),
        100 * alignment.fraction_found,
    )
    species = {"data": symbol_case(names), "panel": symbol_case(panel)}
    if {species["data"], species["panel"]} == {"mouse", "human"}:
        warnings.warn(
            f"The data's gene symbols look {species['data']} ({list(names[:3])}) and the "
            f"model's {species['panel']} ({list(panel[:3])}). Matching ignores case, so genes "
            "are found, but a model trained on one species does not label the other: use a "
            "model trained on the same species (or map orthologues first).",
            stacklevel=3,
        )
    if alignment.fraction_found < 0.5:
        warnings.warn(
            f"Only {n_found} of the model's {len(panel)} panel genes "
            f"({100 * alignment.fraction_found:.1f}%) are in the data; the model reads the "
            "others as unmeasured, and predictions may be poor. Train on the genes both data "
            "sets share (tl.annotate(query, labels_key, reference=reference)).",
            stacklevel=3,
        )
    return alignment
