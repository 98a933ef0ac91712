"""Preprocessing: AnnData in, arrays on the model's gene panel out (no torch here)."""

from ._expression import (
    bin_expression,
    bin_matrix,
    detect_input,
    relative_bins,
    to_log2_normalized,
)
from ._genes import GeneAlignment, align_genes, data_gene_names, looks_like_ensembl, unique_panel
from ._prepare import (
    PreparedData,
    expression_matrix,
    genes_by_dispersion,
    prepare,
    to_panel,
    variable_genes,
)

__all__ = [
    "GeneAlignment",
    "PreparedData",
    "align_genes",
    "bin_expression",
    "bin_matrix",
    "data_gene_names",
    "detect_input",
    "expression_matrix",
    "genes_by_dispersion",
    "looks_like_ensembl",
    "prepare",
    "relative_bins",
    "to_log2_normalized",
    "to_panel",
    "unique_panel",
    "variable_genes",
]
