"""Tools: thin functions that write results into AnnData (scanpy's ``tl`` style)."""

from ._annotate import UNASSIGNED, annotate

__all__ = ["UNASSIGNED", "annotate"]
