"""Tools: thin functions that write results into AnnData (scanpy's ``tl`` style)."""

from ._annotate import UNASSIGNED, annotate
from ._evaluate import evaluate, stratified_folds
from ._shap import shap_markers

__all__ = ["UNASSIGNED", "annotate", "evaluate", "shap_markers", "stratified_folds"]
