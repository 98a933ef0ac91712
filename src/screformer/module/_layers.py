"""Pure torch building blocks: token embedding, encoder, heads. No AnnData here."""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import torch
from reformer_pytorch import Reformer
from reformer_pytorch.autopadder import Autopadder
from torch import nn

from ._config import ReformerConfig


def sinusoidal_table(n_positions: int, dim: int) -> torch.Tensor:
    """Transformer sine/cosine position codes, ``(n_positions, dim)``."""
    position = torch.arange(n_positions, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n_positions, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)[:, : dim // 2]
    return table


class TokenEmbedding(nn.Module):
    """Gene identity + expression bin + sinusoidal position of the gene in the panel.

    The position is the gene's panel index in both token modes, so a position code means the
    same gene whether or not the zeros are tokens. Padding tokens get zero vectors.
    """

    def __init__(self, config: ReformerConfig, gene_vectors: np.ndarray | None = None):
        super().__init__()
        n, dim = config.n_genes, config.dim
        self.gene = nn.Embedding(n + 1, dim, padding_idx=config.pad_gene)
        self.bin = nn.Embedding(config.n_bin_tokens, dim, padding_idx=config.pad_bin)
        if gene_vectors is not None:
            gene_vectors = np.asarray(gene_vectors, dtype=np.float32)
            if gene_vectors.shape != (n, dim):
                raise ValueError(
                    f"Gene vectors have shape {gene_vectors.shape}; the model needs "
                    f"({n}, {dim}) (panel genes x dim)."
                )
            with torch.no_grad():
                self.gene.weight[:n] = torch.from_numpy(gene_vectors)
        self.value = AutoDiscretisation(dim) if config.value_embedding else None
        self.mask_bin = config.mask_bin
        table = sinusoidal_table(n + 1, dim)
        table[n] = 0
        # Derived from the config: not saved in checkpoints.
        self.register_buffer("position", table, persistent=False)

    def identity(self, gene_ids: torch.Tensor) -> torch.Tensor:
        """The part that says which gene a token is: gene embedding + position."""
        return self.gene(gene_ids) + self.position[gene_ids]

    def expression(self, bins: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        """The part that says how much: the bin's embedding, plus the value's when the model
        embeds values (``values``: the tokens' log2 values, required then)."""
        out = self.bin(bins)
        if self.value is not None:
            if values is None:
                raise ValueError("This model embeds expression values: pass the tokens' values.")
            # Masked (pre-training) and padding tokens carry no value.
            values = values.masked_fill(bins >= self.mask_bin, 0)
            out = out + self.value(values) * (values > 0).unsqueeze(-1)
        return out

    def forward(self, gene_ids: torch.Tensor, bins: torch.Tensor, values=None) -> torch.Tensor:
        return self.identity(gene_ids) + self.expression(bins, values)


class AutoDiscretisation(nn.Module):
    """xTrimoGene's continuous value embedding (auto-discretisation): a scalar value becomes a
    soft mix of ``k`` learned vectors, weighted by a small network of the value."""

    def __init__(self, dim: int, k: int = 16):
        super().__init__()
        self.first = nn.Linear(1, k)
        self.second = nn.Linear(k, k)
        self.alpha = nn.Parameter(torch.tensor(0.1))
        self.table = nn.Parameter(torch.randn(k, dim) * 0.02)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        h = nn.functional.leaky_relu(self.first(values.unsqueeze(-1).float()), 0.1)
        weights = torch.softmax(self.second(h) + self.alpha * h, dim=-1)
        return weights @ self.table


class ReformerEncoder(nn.Module):
    """reformer-pytorch's reversible LSH-attention encoder, padded to its bucket multiple."""

    def __init__(self, config: ReformerConfig):
        super().__init__()
        reformer = Reformer(
            dim=config.dim,
            depth=config.depth,
            heads=config.heads,
            dim_head=config.dim_head,
            bucket_size=config.bucket_size,
            n_hashes=config.n_hashes,
            ff_mult=config.ff_mult,
            ff_chunks=config.ff_chunks,
            ff_dropout=config.dropout,
            lsh_dropout=config.attention_dropout,
            causal=False,
        )
        self.net = Autopadder(reformer)
        self.norm = nn.LayerNorm(config.dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.norm(self.net(x, input_mask=mask))

    @contextmanager
    def irreversible(self):
        """Run the same layers with ordinary autograd (activations kept) inside the block.

        reformer-pytorch's reversible backward pass reuses LSH buckets that it caches only in
        training mode, so gradients of an eval-mode model (attributions) need this path.
        """
        layers = self.net.net.layers  # Autopadder -> Reformer -> ReversibleSequence
        threshold = layers.reverse_thres
        layers.reverse_thres = float("inf")
        try:
            yield
        finally:
            layers.reverse_thres = threshold


class ConvMLPClassifier(nn.Module):
    """scBERT's head: a 1-D convolution maps each gene's vector to one value, then a 3-layer MLP
    reads the whole panel.

    In ``expressed`` mode the genes that are not tokens take a learned per-gene value. Genes
    the query did not measure (``unmeasured``, a boolean mask over the panel) take 0 instead:
    what the MLP reads for a gene that its input dropout removed in training, so they count as
    no evidence rather than as genes at zero. With ``config.head_bins`` the MLP also reads each
    gene's level (``levels``: the tokens' bins as numbers, see :meth:`bin_levels`), 0 for genes
    that are not tokens or not measured.
    """

    def __init__(self, config: ReformerConfig, n_classes: int):
        super().__init__()
        self.n_genes, self.top_bin = config.n_genes, config.top_bin
        self.head_bins = config.head_bins
        self.encoder_dropout = config.encoder_dropout
        self.conv = nn.Conv1d(config.dim, 1, kernel_size=1)
        self.absent_value = nn.Parameter(torch.zeros(config.n_genes + 1))
        h1, h2 = config.mlp_hidden
        # No activation between the convolution and the MLP (scBERT has a ReLU there): with it,
        # the per-gene values of absent genes start at 0 and never receive a gradient.
        self.mlp = nn.Sequential(
            nn.Dropout(config.gene_dropout),
            nn.Linear(config.n_genes * (2 if config.head_bins else 1), h1),
            nn.ReLU(),
            nn.Dropout(config.head_dropout),
            nn.Linear(h1, h2),
            nn.ReLU(),
            nn.Dropout(config.head_dropout),
            nn.Linear(h2, n_classes),
        )

    def bin_levels(self, bins: torch.Tensor) -> torch.Tensor:
        """The tokens' bins as numbers in [0, 1] (``bin / top_bin``), what the MLP reads with
        ``head_bins``; padding and mask tokens 0."""
        return (bins.float() / self.top_bin).masked_fill(bins > self.top_bin, 0.0)

    def gene_values(self, hidden, gene_ids, unmeasured=None, levels=None) -> torch.Tensor:
        """What the MLP reads: one value per panel gene, ``(batch, n_genes)``, then with
        ``head_bins`` each gene's level, ``(batch, 2 * n_genes)``."""
        values = self.conv(hidden.transpose(1, 2)).squeeze(1)
        panel = self.absent_value.expand(hidden.shape[0], -1).clone()
        # Padding tokens carry gene id n_genes: they land in the extra last column, dropped here.
        panel = panel.scatter(1, gene_ids, values.to(panel.dtype))[:, : self.n_genes]
        if self.training and self.encoder_dropout:  # some cells: the levels alone
            keep = torch.rand(panel.shape[0], 1, device=panel.device) >= self.encoder_dropout
            panel = panel * keep.to(panel.dtype) / (1 - self.encoder_dropout)
        if self.head_bins:
            if levels is None:
                raise ValueError("This head reads the genes' bins: pass the tokens' levels.")
            on_panel = panel.new_zeros(panel.shape[0], self.n_genes + 1)
            on_panel = on_panel.scatter(1, gene_ids, levels.to(panel.dtype))[:, : self.n_genes]
            panel = torch.cat([panel, on_panel], 1)
            if unmeasured is not None:  # a gene the query lacks: 0 in both halves
                unmeasured = torch.cat([unmeasured, unmeasured], -1)
        return panel if unmeasured is None else panel.masked_fill(unmeasured, 0.0)

    def logits_and_features(self, hidden, gene_ids, unmeasured=None, levels=None):
        """Class logits and the MLP's last hidden layer side by side, ``(batch, n_classes +
        mlp_hidden[-1])``: what novelty reads."""
        features = self.mlp[:-1](self.gene_values(hidden, gene_ids, unmeasured, levels))
        return torch.cat([self.mlp[-1](features), features], dim=1)

    def forward(self, hidden, gene_ids, unmeasured=None, levels=None) -> torch.Tensor:
        return self.mlp(self.gene_values(hidden, gene_ids, unmeasured, levels))
