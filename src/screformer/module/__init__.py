"""Pure torch modules (no AnnData): embeddings, Reformer encoder, heads."""

from ._config import ReformerConfig, TokenMode
from ._layers import ConvMLPClassifier, ReformerEncoder, TokenEmbedding, sinusoidal_table
from ._module import SCReformerModule

__all__ = [
    "ConvMLPClassifier",
    "ReformerConfig",
    "ReformerEncoder",
    "SCReformerModule",
    "TokenEmbedding",
    "TokenMode",
    "sinusoidal_table",
]
