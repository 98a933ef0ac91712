"""What every plot does at its end: save, show, and return (Scanpy's rule)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

_Axes = TypeVar("_Axes")


def save_show_or_return(
    fig: Figure,
    axes: _Axes,
    name: str,
    *,
    show: bool | None,
    save: str | os.PathLike | bool | None,
    return_fig: bool,
) -> Figure | _Axes | None:
    """Save ``fig`` if asked, then return it, show it, or return ``axes``.

    Scanpy's rule (``savefig_or_show`` and ``_fig_show_save_or_axes`` in ``scanpy.plotting``),
    except that ``show=None`` always shows (Scanpy reads ``settings.autoshow``).

    Parameters
    ----------
    fig
        The figure drawn.
    axes
        What the plot returns with ``show=False``: its :class:`~matplotlib.axes.Axes`, or a
        dict of them for several panels.
    name
        The plot's name: ``save=True`` writes ``screformer_{name}.png``.
    show, save, return_fig
        The plot's arguments, as documented there.

    Returns
    -------
    Figure, axes or None
        ``fig`` with ``return_fig``; otherwise ``axes`` when ``show`` is ``False``, else ``None``.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> fig, ax = plt.subplots()
    >>> save_show_or_return(fig, ax, "demo", show=False, save=None, return_fig=False) is ax
    True
    >>> save_show_or_return(fig, ax, "demo", show=False, save=None, return_fig=True) is fig
    True
    >>> plt.close(fig)
    """
    if save:
        path = Path(f"screformer_{name}.png") if save is True else Path(save)
        fig.savefig(path, bbox_inches="tight")
    if return_fig:
        return fig
    if show is None or show:
        plt.show()
        return None
    return axes
