"""The scReformer-BERT network: embeddings, Reformer encoder, classifier and MLM heads."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ._config import ReformerConfig
from ._layers import ConvMLPClassifier, ReformerEncoder, TokenEmbedding


class SCReformerModule(nn.Module):
    """Pure torch module; inputs are token tensors from :mod:`screformer.data` (``values``, the
    tokens' log2 values, only needed by a model with ``config.value_embedding``).

    Parameters
    ----------
    config
        Architecture.
    n_classes
        Number of cell types; 0 builds no classifier (pre-training only).
    gene_vectors
        Optional ``(n_genes, dim)`` initial gene embeddings (gene2vec).

    Examples
    --------
    >>> cfg = ReformerConfig(n_genes=100, dim=16, depth=1, heads=2, dim_head=8, bucket_size=8)
    >>> m = SCReformerModule(cfg, n_classes=3)
    >>> ids = torch.arange(100)[None]
    >>> bins = torch.zeros(1, 100, dtype=torch.long)
    >>> m(ids, bins, torch.ones(1, 100, dtype=torch.bool)).shape
    torch.Size([1, 3])
    """

    def __init__(
        self, config: ReformerConfig, n_classes: int = 0, gene_vectors: np.ndarray | None = None
    ):
        super().__init__()
        self.config = config
        self.embedding = TokenEmbedding(config, gene_vectors)
        self.encoder = ReformerEncoder(config)
        # Masked-expression modelling head: logits over the real bins 0 .. top_bin.
        self.mlm_head = nn.Linear(config.dim, config.top_bin + 1)
        self.classifier = ConvMLPClassifier(config, n_classes) if n_classes > 0 else None

    def encode(self, gene_ids, bins, mask, values=None) -> torch.Tensor:
        """Encoder output, ``(batch, tokens, dim)``."""
        return self.encoder(self.embedding(gene_ids, bins, values), mask)

    def forward(self, gene_ids, bins, mask, values=None, unmeasured=None) -> torch.Tensor:
        """Class logits, ``(batch, n_classes)``; ``unmeasured``: optional boolean mask over the
        panel, True for the genes the query lacks."""
        embedded = self.embedding(gene_ids, bins, values)
        return self.classify_embedded(embedded, gene_ids, mask, unmeasured, self._levels(bins))

    def classify_embedded(
        self, embedded, gene_ids, mask, unmeasured=None, levels=None
    ) -> torch.Tensor:
        """Class logits from input embeddings ``(batch, tokens, dim)`` (and, with
        ``config.head_bins``, the tokens' levels, ``(batch, tokens)``): the entry point for
        gradient attributions (SHAP), which need continuous inputs."""
        if self.classifier is None:
            raise RuntimeError("This module has no classifier (n_classes=0).")
        return self.classifier(self.encoder(embedded, mask), gene_ids, unmeasured, levels)

    def logits_and_features(self, gene_ids, bins, mask, values=None, unmeasured=None):
        """Class logits and the classifier's last hidden layer side by side, ``(batch,
        n_classes + mlp_hidden[-1])``, from one pass: the inputs of novelty scores."""
        return self.classifier.logits_and_features(
            self.encode(gene_ids, bins, mask, values), gene_ids, unmeasured, self._levels(bins)
        )

    def _levels(self, bins):
        """What a ``head_bins`` classifier reads beside the encoder; None for the others."""
        if self.classifier is None or not self.config.head_bins:
            return None
        return self.classifier.bin_levels(bins)

    def mlm_logits(self, gene_ids, bins, mask, values=None) -> torch.Tensor:
        """Bin logits for every token, ``(batch, tokens, top_bin + 1)``."""
        return self.mlm_head(self.encode(gene_ids, bins, mask, values))

    def cell_embedding(self, gene_ids, bins, mask, values=None) -> torch.Tensor:
        """Mean of the encoder output over a cell's tokens, ``(batch, dim)``."""
        hidden = self.encode(gene_ids, bins, mask, values)
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
