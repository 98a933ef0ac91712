"""Plots in Scanpy's style (``ax``, ``show``, ``save``, ``return_fig``); they never write to adata.

With ``return_fig=True`` a plot returns its :class:`~matplotlib.figure.Figure`; otherwise with
``show=False`` its :class:`~matplotlib.axes.Axes`, and ``None`` when it shows the figure (the
default). ``save`` takes a file name, or ``True`` for ``screformer_<plot>.png``.
"""

from ._dotplot import dotplot
from ._evaluation import confusion_matrix, roc
from ._shap import shap_markers

__all__ = ["confusion_matrix", "dotplot", "roc", "shap_markers"]
