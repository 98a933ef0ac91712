"""One configuration object for the Reformer-BERT module."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Literal

TokenMode = Literal["all", "expressed"]
ValueEncoding = Literal["absolute", "relative"]


@dataclass
class ReformerConfig:
    """Architecture of a screformer model.

    The defaults are the measured CPU choice (see ``benchmarks/``): the ``expressed`` token mode
    and a small encoder, which fine-tunes on a few thousand cells in minutes on 2 CPU cores.
    :meth:`paper` gives the published scReformer-BERT size.

    Parameters
    ----------
    n_genes
        Size of the gene panel (one token per panel gene in ``all`` mode).
    token_mode
        ``"all"``: every panel gene is a token (the paper). ``"expressed"``: only the cell's
        non-zero genes are tokens, padded per batch; genes at zero reach the classifier through a
        learned per-gene value, so the head still sees the whole panel.
    dim, depth, heads, dim_head
        Encoder width, number of reversible layers, attention heads and width per head.
    bucket_size, n_hashes
        LSH attention: bucket size (sequences are padded to a multiple of twice this) and hashing
        rounds.
    ff_mult
        Width of the feed-forward layers as a multiple of ``dim``.
    ff_chunks
        reformer-pytorch cuts each feed-forward pass into this many pieces along the sequence to
        save memory; 1 (no cutting) is fastest and fits in memory even for the paper's 16k tokens.
    dropout
        Dropout in the encoder's feed-forward layers.
    attention_dropout
        Dropout on the LSH attention weights and on the vectors hashed. 0 by default: drawing the
        mask for every attention weight was a quarter of a CPU training step.
    value_encoding
        How a gene's value becomes a bin. ``"absolute"`` (scBERT, the paper):
        ``floor(log2(1 + 1e4 * x / total))`` capped at ``top_bin``, which moves with sequencing
        depth and with how a query was normalised. ``"relative"`` (as scGPT): the quantile of the
        value among the cell's own non-zero values, in ``top_bin`` equal bins (1 .. ``top_bin``;
        0 is not expressed), the same for a cell's counts and any per-cell monotone transform
        of them (log-normalised values of any scale).
    top_bin
        Expression bins are ``0 .. top_bin`` (scBERT: 5); ``top_bin + 1`` is the mask token and
        ``top_bin + 2`` padding.
    value_embedding
        Also embed each token's log2-normalised value itself, beside its bin, as xTrimoGene's
        auto-discretisation does (a soft mix of learned vectors): gives the relative bins back
        the magnitude they drop (``benchmarks/encoding_ceiling.py``), at the cost of the
        invariance to how the values were scaled that the relative bins alone have.
    head_bins
        The classifier's MLP also reads each panel gene's bin as a number (``bin / top_bin``;
        0 for a gene that is not expressed or that the query lacks), beside the value the
        encoder gives it: the expression level reaches the head directly, as in scBERT's
        head alone (``benchmarks/encoding_ceiling.py``), and the encoder adds context. On by
        default: ahead of ``False`` on the PBMC transfers and level elsewhere
        (``benchmarks/transfer.py``, docs/transfer.md). Checkpoints saved before the option
        existed read as ``False``.
    mlp_hidden, head_dropout
        Hidden sizes and dropout of the classifier's 3-layer MLP (scBERT: 512, 100).
    gene_dropout
        Dropout on the per-gene values that enter the MLP (regularises the wide first layer).
    encoder_dropout
        With ``head_bins``: the share of training cells whose MLP reads the genes' levels alone
        (the encoder's per-gene values zeroed, those of the other cells scaled up to keep
        their mean, as dropout does), so that the head learns to label a cell from its
        levels as well as with the encoder's values. ``None`` (the default): 0.5 with
        ``head_bins``, 0 without; a pretrained encoder brings its own (0 for those saved
        before the option). 0.5 against 0 on the transfer benchmark (2026-12-05, two seeds;
        docs/transfer.md): pancreas 0.935 against 0.927 (LR 0.937), the processed views
        0.852 against 0.837 (LR 0.858), heart's folds 0.860 against 0.852 (LR 0.862), PBMC
        0.839 against 0.841 (LR 0.850). Prediction is unchanged by it.
    """

    n_genes: int
    token_mode: TokenMode = "expressed"
    dim: int = 32
    depth: int = 2
    heads: int = 2
    dim_head: int = 16
    bucket_size: int = 32
    n_hashes: int = 1
    ff_mult: int = 2
    ff_chunks: int = 1
    dropout: float = 0.1
    attention_dropout: float = 0.0
    value_encoding: ValueEncoding = "relative"
    top_bin: int = 5
    value_embedding: bool = False
    head_bins: bool = True
    mlp_hidden: tuple[int, int] = (512, 100)
    head_dropout: float = 0.5
    gene_dropout: float = 0.5
    encoder_dropout: float | None = None

    def __post_init__(self):
        if self.token_mode not in ("all", "expressed"):
            raise ValueError(f"token_mode must be 'all' or 'expressed', not {self.token_mode!r}.")
        if self.value_encoding not in ("absolute", "relative"):
            raise ValueError(
                f"value_encoding must be 'absolute' or 'relative', not {self.value_encoding!r}."
            )
        if self.n_genes < 1:
            raise ValueError("n_genes must be positive.")
        if self.encoder_dropout is None:
            self.encoder_dropout = 0.5 if self.head_bins else 0.0
        if not 0 <= self.encoder_dropout < 1:
            raise ValueError(f"encoder_dropout must be in [0, 1), not {self.encoder_dropout}.")
        if self.encoder_dropout and not self.head_bins:
            raise ValueError(
                "encoder_dropout needs head_bins: without it the MLP reads nothing else."
            )
        self.mlp_hidden = tuple(int(h) for h in self.mlp_hidden)

    @property
    def mask_bin(self) -> int:
        return self.top_bin + 1

    @property
    def pad_bin(self) -> int:
        return self.top_bin + 2

    @property
    def n_bin_tokens(self) -> int:
        return self.top_bin + 3

    @property
    def pad_gene(self) -> int:
        """Gene id of padding tokens (one past the panel)."""
        return self.n_genes

    @classmethod
    def paper(cls, n_genes: int, **overrides) -> ReformerConfig:
        """scReformer-BERT as published: every gene a token, dim 200, depth 6, 10 heads, buckets
        of 64 (dim_head 64, one hashing round, as measured in ``benchmarks/``)."""
        values = dict(
            token_mode="all",
            value_encoding="absolute",
            dim=200,
            depth=6,
            heads=10,
            dim_head=64,
            bucket_size=64,
            ff_mult=4,
            head_dropout=0.1,
            gene_dropout=0.0,
        )
        values.update(overrides)
        return cls(n_genes=n_genes, **values)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mlp_hidden"] = list(self.mlp_hidden)
        if not d["encoder_dropout"]:  # training only: left out, older releases load the model
            del d["encoder_dropout"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ReformerConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"Unknown configuration keys: {sorted(unknown)}.")
        # Checkpoints written before value encodings existed used scBERT's absolute bins, and
        # those written before value embeddings, head bins or encoder dropout existed had none.
        old = {
            "value_encoding": "absolute",
            "value_embedding": False,
            "head_bins": False,
            "encoder_dropout": 0.0,
        }
        return cls(**(old | d))
