"""Tools: thin functions that write results into AnnData (scanpy's ``tl`` style)."""

from ._annotate import UNASSIGNED, annotate
from ._evaluate import evaluate, stratified_folds

__all__ = ["UNASSIGNED", "annotate", "evaluate", "stratified_folds"]
