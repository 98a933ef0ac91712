"""Plots (scanpy's ``pl`` style: ``ax``, ``show``, ``return_fig``)."""

from ._evaluation import confusion_matrix, roc

__all__ = ["confusion_matrix", "roc"]
