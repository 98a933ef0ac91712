"""The user-facing model class."""

from ._screformer import SCReformer

__all__ = ["SCReformer"]
