"""Tools: thin functions that write results into AnnData (scanpy's ``tl`` style)."""

from ._annotate import UNASSIGNED, annotate, shared_genes
from ._evaluate import evaluate, stratified_folds
from ._predict_file import predict_file
from ._result import AnnotationResult
from ._shap import shap_markers

__all__ = [
    "AnnotationResult",
    "UNASSIGNED",
    "annotate",
    "evaluate",
    "predict_file",
    "shap_markers",
    "shared_genes",
    "stratified_folds",
]
