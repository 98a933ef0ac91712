"""screformer: cell-type annotation with scReformer-BERT, in the scverse style."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("screformer")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

from . import data, datasets, gene2vec, module, pl, pp, pretrained, tl, uhaf  # noqa: E402
from .model import SCReformer, pretrain  # noqa: E402
from .module import ReformerConfig  # noqa: E402

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
