"""Shared docstring texts, filled into ``{placeholders}`` (as Scanpy's ``_doc_params``).

A docstring decorated with :func:`doc_params` is formatted with :meth:`str.format_map`: write
``{name}`` on its own line, at the indentation of the surrounding parameters, where a shared text
goes, and double every other brace (``{{`` and ``}}``).

Examples
--------
>>> import inspect
>>> @doc_params(extra="extra\\n    A parameter of this function only.")
... def f(adata, truth_key, extra):
...     '''Do something.
...
...     Parameters
...     ----------
...     {truth_key}
...     {extra}
...     '''
>>> print(inspect.cleandoc(f.__doc__))
Do something.
<BLANKLINE>
Parameters
----------
truth_key
    ``obs`` column with the known cell types; cells where it is missing are left out.
extra
    A parameter of this function only.
"""

from __future__ import annotations

from collections.abc import Callable
from textwrap import indent
from typing import TypeVar

_F = TypeVar("_F", bound=Callable)

#: Reusable parameter and return descriptions, numpy style, without indentation.
DOC_PARAMS: dict[str, str] = {
    "adata": """\
adata
    Annotated data with the results of :func:`screformer.tl.annotate`:
    ``obs[f"{key_added}_prediction"]``, ``obsm[f"{key_added}_probabilities"]`` and
    ``uns[key_added]["classes"]``.""",
    "truth_key": """\
truth_key
    ``obs`` column with the known cell types; cells where it is missing are left out.""",
    "key_added": """\
key_added
    Prefix of the keys that :func:`screformer.tl.annotate` wrote (its ``key_added``).""",
    "show_save_ax": """\
ax
    Axes to draw into; by default a new figure is made.
show
    Show the figure with :func:`matplotlib.pyplot.show` (the default, ``None``, shows it).
save
    Save the figure (``bbox_inches="tight"``): a file name, whose extension sets the format, or
    ``True`` for ``screformer_<name>.png`` in the working directory, ``<name>`` being the
    function's name (``screformer_roc.png`` for :func:`screformer.pl.roc`).
return_fig
    Return the :class:`~matplotlib.figure.Figure` instead of the axes.""",
    "returns_plot": """\
matplotlib.figure.Figure, matplotlib.axes.Axes or None
    The :class:`~matplotlib.figure.Figure` with ``return_fig=True``; otherwise the
    :class:`~matplotlib.axes.Axes` drawn into when ``show=False``, ``None`` when the figure is
    shown. Nothing is written into ``adata``.""",
}


def _indent_width(doc: str) -> int:
    """Indentation of a docstring's lines after the first (0 when Python already removed it)."""
    widths = [len(line) - len(line.lstrip(" ")) for line in doc.splitlines()[1:] if line.strip()]
    return min(widths, default=0)


def doc_params(**replacements: str) -> Callable[[_F], _F]:
    """Fill ``{placeholders}`` in the decorated object's docstring.

    Parameters
    ----------
    **replacements
        Texts by placeholder name, in addition to (or replacing) those of :data:`DOC_PARAMS`.
        Lines after the first are indented to the docstring's indentation; braces in the texts
        are kept as they are.

    Returns
    -------
    Callable
        The decorator, which returns the same object with its docstring filled in.
    """
    texts = DOC_PARAMS | replacements

    def decorate(obj: _F) -> _F:
        doc = obj.__doc__
        if not doc:
            raise ValueError(f"{obj.__qualname__} has no docstring to fill in.")
        pad = " " * _indent_width(doc)
        filled = {k: indent(v, pad)[len(pad) :] for k, v in texts.items()}
        obj.__doc__ = doc.format_map(filled)
        return obj

    return decorate
