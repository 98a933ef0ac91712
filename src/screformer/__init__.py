"""screformer: cell-type annotation with scReformer-BERT, in the scverse style.

Submodules and the main classes are imported on first use, so that ``import screformer`` (and
the command line's ``--help``) does not pay for torch, Lightning and scvi-tools up front.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

try:
    __version__ = version("screformer")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

_SUBMODULES = frozenset(
    {"data", "datasets", "gene2vec", "model", "module", "pl", "pp", "pretrained", "tl", "uhaf"}
)
# Public names defined in a submodule: name -> submodule.
_ATTRIBUTES = {"SCReformer": "model", "pretrain": "model", "ReformerConfig": "module"}

if TYPE_CHECKING:
    from . import data, datasets, gene2vec, module, pl, pp, pretrained, tl, uhaf
    from .model import SCReformer, pretrain
    from .module import ReformerConfig


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _ATTRIBUTES:
        value = getattr(importlib.import_module(f".{_ATTRIBUTES[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SUBMODULES | set(_ATTRIBUTES))


__all__ = [
    "ReformerConfig",
    "SCReformer",
    "data",
    "datasets",
    "gene2vec",
    "module",
    "pl",
    "pp",
    "pretrain",
    "pretrained",
    "tl",
    "uhaf",
    "__version__",
]
