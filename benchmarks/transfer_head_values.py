"""An experiment, not a package option: the classifier head reads each gene's log2 value beside
the encoder's per-gene value, so that magnitude reaches the classes without passing through
the relative bins (the token embedding stays bins only). Its sibling that reads each gene's
relative bin as a number instead became a package option, ``ReformerConfig(head_bins=True)``
(``transfer.py``'s ``relative+headbins+augment`` variants).

It patches screformer's head and module for this process only and runs ``transfer.py`` with
the variant ``relative+headvalues+augment`` (all of ``transfer.py``'s arguments apply), e.g.

    python benchmarks/transfer_head_values.py --variants relative+headvalues+augment \\
        --only pancreas --model-seed 1 --name pan_hv_s1 --out /tmp/exp

Measured on the pancreas stage, three training seeds (``results/transfer_seeds.md``). SHAP and
saving are not adapted: it is a measurement of the idea, not a model to keep.
"""

import torch
import torch.nn as nn
import transfer

from screformer.module import SCReformerModule, _layers

_head_init = _layers.ConvMLPClassifier.__init__


def head_init(self, config, n_classes):
    _head_init(self, config, n_classes)
    # The MLP's first layer reads both halves: encoder values, then log2 values.
    self.mlp[1] = nn.Linear(2 * config.n_genes, config.mlp_hidden[0])
    self.token_values = None


def gene_values(self, hidden, gene_ids, unmeasured=None, levels=None):
    encoded = self.conv(hidden.transpose(1, 2)).squeeze(1)
    panel = self.absent_value.expand(hidden.shape[0], -1).clone()
    panel = panel.scatter(1, gene_ids, encoded.to(panel.dtype))[:, : self.n_genes]
    # Padding tokens carry gene id n_genes and value 0: they land in the dropped last column.
    values = torch.zeros(hidden.shape[0], self.n_genes + 1, dtype=panel.dtype, device=panel.device)
    values = values.scatter(1, gene_ids, self.token_values.to(panel.dtype))[:, : self.n_genes]
    if unmeasured is not None:  # genes a query lacks: 0 in both halves
        panel, values = panel.masked_fill(unmeasured, 0.0), values.masked_fill(unmeasured, 0.0)
    return torch.cat([panel, values], 1)


def passing_values(method):
    def wrapped(self, gene_ids, bins, mask, values=None, **kwargs):
        self.classifier.token_values = values
        return method(self, gene_ids, bins, mask, values, **kwargs)

    return wrapped


_layers.ConvMLPClassifier.__init__ = head_init
_layers.ConvMLPClassifier.gene_values = gene_values
_layers.TokenEmbedding.expression = lambda self, bins, values=None: self.bin(bins)
SCReformerModule.forward = passing_values(SCReformerModule.forward)
SCReformerModule.logits_and_features = passing_values(SCReformerModule.logits_and_features)
# value_embedding=True makes the tokens carry their log2 values; the patched embedding ignores them.
transfer.VARIANTS["relative+headvalues+augment"] = dict(
    config={"value_encoding": "relative", "value_embedding": True}, train={"augment": True}
)

if __name__ == "__main__":
    transfer.main()
