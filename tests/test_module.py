import numpy as np
import pytest
import torch

from screformer.module import ReformerConfig, SCReformerModule, sinusoidal_table

from .conftest import TINY


def _batch(n_genes, token_mode, n_cells=3, length=7):
    if token_mode == "all":
        ids = torch.arange(n_genes).expand(n_cells, -1)
    else:
        ids = torch.stack([torch.randperm(n_genes)[:length] for _ in range(n_cells)])
    bins = torch.randint(0, 6, ids.shape)
    return ids, bins, torch.ones(ids.shape, dtype=torch.bool)


@pytest.mark.parametrize("token_mode", ["all", "expressed"])
def test_forward_shapes_both_modes(token_mode):
    cfg = ReformerConfig(n_genes=21, token_mode=token_mode, **TINY)  # 21: not a bucket multiple
    m = SCReformerModule(cfg, n_classes=4)
    ids, bins, mask = _batch(21, token_mode)
    assert m(ids, bins, mask).shape == (3, 4)
    assert m.mlm_logits(ids, bins, mask).shape == (*ids.shape, 6)
    assert m.cell_embedding(ids, bins, mask).shape == (3, 8)


def test_absent_genes_take_learned_value():
    cfg = ReformerConfig(n_genes=10, **TINY)
    m = SCReformerModule(cfg, n_classes=2)
    with torch.no_grad():
        m.classifier.absent_value.copy_(torch.arange(11.0) + 100)
    ids = torch.tensor([[2, 5, 10]])  # 10 is padding
    hidden = m.encode(ids, torch.tensor([[1, 3, 7]]), torch.tensor([[True, True, False]]))
    values = m.classifier.gene_values(hidden, ids)[0]
    untouched = [i for i in range(10) if i not in (2, 5)]
    assert values[untouched].tolist() == [float(i + 100) for i in untouched]
    assert values[2] < 100 and values[5] < 100  # came from the encoder, not the absent value


def test_gene_vectors_initialise_embedding_and_shape_checked():
    cfg = ReformerConfig(n_genes=5, **TINY)
    vectors = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    m = SCReformerModule(cfg, 2, gene_vectors=vectors)
    np.testing.assert_array_equal(m.embedding.gene.weight[:5].detach().numpy(), vectors)
    with pytest.raises(ValueError, match=r"\(5, 8\)"):
        SCReformerModule(cfg, 2, gene_vectors=vectors[:, :4])


def test_sinusoidal_table_is_the_transformer_code():
    t = sinusoidal_table(4, 6)
    assert t[0].tolist() == [0, 1, 0, 1, 0, 1]
    assert t[3, 0] == pytest.approx(np.sin(3.0))


def test_paper_config():
    cfg = ReformerConfig.paper(16906)
    assert (cfg.token_mode, cfg.dim, cfg.depth, cfg.heads, cfg.bucket_size) == (
        "all",
        200,
        6,
        10,
        64,
    )
    assert ReformerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="token_mode"):
        ReformerConfig(n_genes=3, token_mode="some")
