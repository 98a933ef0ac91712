"""The user-facing model class and pre-training."""

from ._pretrain import pretrain
from ._screformer import SCReformer

__all__ = ["SCReformer", "pretrain"]
