"""The user-facing model class and pre-training."""

from ._novelty import NoveltyReference
from ._pretrain import pretrain
from ._screformer import SCReformer

__all__ = ["NoveltyReference", "SCReformer", "pretrain"]
