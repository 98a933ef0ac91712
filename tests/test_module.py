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
    m = SCReformerModule(cfg, n_classes=2).eval()  # training drops some cells' values
    with torch.no_grad():
        m.classifier.absent_value.copy_(torch.arange(11.0) + 100)
    ids = torch.tensor([[2, 5, 10]])  # 10 is padding
    bins = torch.tensor([[1, 3, 7]])
    hidden = m.encode(ids, bins, torch.tensor([[True, True, False]]))
    values = m.classifier.gene_values(hidden, ids, levels=m.classifier.bin_levels(bins))[0]
    half = torch.tensor([0, 0, 0.2, 0, 0, 0.6, 0, 0, 0, 0])  # the head's bin half
    torch.testing.assert_close(values[10:], half)
    values = values[:10]
    untouched = [i for i in range(10) if i not in (2, 5)]
    assert values[untouched].tolist() == [float(i + 100) for i in untouched]
    assert values[2] < 100 and values[5] < 100  # came from the encoder, not the absent value


def test_unmeasured_genes_enter_the_mlp_as_dropped_out_genes():
    cfg = ReformerConfig(n_genes=10, **TINY)
    m = SCReformerModule(cfg, n_classes=2).eval()
    with torch.no_grad():
        m.classifier.absent_value.copy_(torch.arange(11.0) + 100)
    ids, bins, mask = torch.tensor([[2, 5]]), torch.tensor([[1, 3]]), torch.ones(1, 2, dtype=bool)
    unmeasured = torch.zeros(10, dtype=torch.bool)
    unmeasured[[2, 7]] = True  # 2 is a token here: the query's 0 there was not measured either
    with torch.no_grad():
        hidden, levels = m.encode(ids, bins, mask), m.classifier.bin_levels(bins)
        plain = m.classifier.gene_values(hidden, ids, levels=levels)[0]
        values = m.classifier.gene_values(hidden, ids, unmeasured, levels)[0]
        both_halves = torch.cat([unmeasured, unmeasured])
        assert values[[2, 7, 12, 17]].tolist() == [0.0, 0.0, 0.0, 0.0]
        torch.testing.assert_close(values[~both_halves], plain[~both_halves], rtol=0, atol=0)
        logits = {}
        for name, extra in (
            ("plain", {}),
            ("again", {}),
            ("unmeasured", {"unmeasured": unmeasured}),
        ):
            torch.manual_seed(0)  # the same LSH rotations
            logits[name] = m(ids, bins, mask, **extra)
        assert torch.equal(logits["plain"], logits["again"])
        assert not torch.equal(logits["plain"], logits["unmeasured"])


def test_encoder_dropout_leaves_some_training_cells_their_levels_alone():
    cfg = ReformerConfig(n_genes=10, encoder_dropout=0.5, **TINY)
    m = SCReformerModule(cfg, n_classes=2)
    ids, bins, mask = _batch(10, "expressed", n_cells=64, length=5)
    with torch.no_grad():
        hidden, levels = m.encode(ids, bins, mask), m.classifier.bin_levels(bins)
        full = m.eval().classifier.gene_values(hidden, ids, levels=levels)
        torch.manual_seed(0)
        dropped = m.train().classifier.gene_values(hidden, ids, levels=levels)
    encoder, level = dropped[:, :10], dropped[:, 10:]
    torch.testing.assert_close(level, full[:, 10:], rtol=0, atol=0)  # the levels always
    alone = (encoder == 0).all(1)
    assert 16 < alone.sum() < 48  # about half of the cells read their levels alone
    torch.testing.assert_close(encoder[~alone], 2 * full[~alone, :10])  # the rest scaled up
    # Prediction (eval) reads both halves as a model without the option does.
    plain = SCReformerModule(ReformerConfig(n_genes=10, encoder_dropout=0, **TINY), 2).eval()
    plain.load_state_dict(m.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(plain.classifier.gene_values(hidden, ids, levels=levels), full)
    with pytest.raises(ValueError, match="needs head_bins"):
        ReformerConfig(n_genes=10, encoder_dropout=0.5, head_bins=False)
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        ReformerConfig(n_genes=10, encoder_dropout=1.0)
    # Unset: 0.5 with head_bins (the default), 0 without; a saved config without the key
    # (written before the option, or with 0) reads as 0.
    assert ReformerConfig(n_genes=10).encoder_dropout == 0.5
    assert ReformerConfig(n_genes=10, head_bins=False).encoder_dropout == 0.0
    saved = ReformerConfig(n_genes=10, encoder_dropout=0).to_dict()
    assert "encoder_dropout" not in saved
    assert ReformerConfig.from_dict(saved).encoder_dropout == 0.0
    assert ReformerConfig.from_dict(cfg.to_dict()).encoder_dropout == 0.5


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


def test_read_gene2vec_formats_and_missing_genes(tmp_path):
    from screformer.gene2vec import read_gene2vec

    plain = tmp_path / "plain.txt"
    plain.write_text("CD3E 0.5 -1 2\nLYZ 1\t2\t3\nMS4A1 4 5 6\n")
    vectors, n_found = read_gene2vec(plain, ["lyz", "NOTHERE", "CD3E"])
    assert vectors.shape == (3, 3) and vectors.dtype == np.float32 and n_found == 2
    assert vectors[0].tolist() == [1, 2, 3] and vectors[2].tolist() == [0.5, -1, 2]
    assert np.isfinite(vectors[1]).all() and vectors[1].tolist() != [0, 0, 0]
    header = tmp_path / "w2v.txt"
    header.write_text("3 3\n" + plain.read_text())
    np.testing.assert_array_equal(
        read_gene2vec(header, ["lyz", "CD3E"])[0][[0, 1]], vectors[[0, 2]]
    )
    ragged = tmp_path / "ragged.txt"
    ragged.write_text("A 1 2\nB 1 2 3\n")
    with pytest.raises(ValueError, match="line 2"):
        read_gene2vec(ragged, ["A"])


def test_model_takes_gene2vec_file(tmp_path, counts_adata):
    from screformer import SCReformer

    lines = [f"GENE{j} " + " ".join(str(j + k / 10) for k in range(8)) for j in range(0, 40, 2)]
    (tmp_path / "g2v.txt").write_text("\n".join(lines))
    SCReformer.setup_anndata(counts_adata, labels_key="cell_type")
    model = SCReformer(counts_adata, gene_vectors=tmp_path / "g2v.txt", **TINY)
    weights = model.module.embedding.gene.weight.detach().numpy()
    np.testing.assert_allclose(weights[4], [4 + k / 10 for k in range(8)], rtol=1e-6)


def test_read_gene2vec_from_a_url_is_cached_and_checked(server, tmp_path, monkeypatch):
    import hashlib

    from screformer.gene2vec import read_gene2vec

    monkeypatch.setenv("SCREFORMER_CACHE", str(tmp_path / "cache"))
    base, served, hits = server
    text = b"CD3E 0.1 0.2\nLYZ 1 2\n"
    (served / "g2v.txt").write_bytes(text)
    sha = hashlib.sha256(text).hexdigest()
    vectors, n_found = read_gene2vec(f"{base}/g2v.txt", ["LYZ"], sha256=sha)
    assert n_found == 1 and vectors[0].tolist() == [1.0, 2.0]
    (served / "g2v.txt").unlink()  # read from the cache now
    assert read_gene2vec(f"{base}/g2v.txt", ["LYZ"], sha256=sha)[1] == 1
    assert hits == ["/g2v.txt"]
    (served / "other.txt").write_bytes(text + b"MS4A1 3 4\n")
    with pytest.raises(ValueError, match="does not match"):
        read_gene2vec(f"{base}/other.txt", ["LYZ"], sha256=sha)


def test_published_gene2vec_is_fetched_from_its_public_address(server, tmp_path, monkeypatch):
    from screformer import gene2vec

    monkeypatch.setenv("SCREFORMER_CACHE", str(tmp_path / "cache"))
    base, served, hits = server
    (served / "gene2vec_dim_200_iter_9.txt").write_bytes(b"LYZ 1 2\n")
    # The real address is unreachable here: point the constant at the local server's copy.
    monkeypatch.setattr(gene2vec, "PUBLISHED_URL", f"{base}/gene2vec_dim_200_iter_9.txt")
    vectors, n_found = gene2vec.read_gene2vec("published", ["LYZ", "CD3E"])
    assert n_found == 1 and vectors[0].tolist() == [1.0, 2.0]
    assert hits == ["/gene2vec_dim_200_iter_9.txt"]
