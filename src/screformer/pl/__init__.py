"""Plots (scanpy's ``pl`` style: ``ax``, ``show``, ``return_fig``)."""

from ._evaluation import confusion_matrix, roc
from ._shap import shap_markers

__all__ = ["confusion_matrix", "roc", "shap_markers"]
