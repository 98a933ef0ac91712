"""Masked-expression pre-training: masking, streaming from disk, resume, DDP, fine-tuning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch

import screformer
from screformer.data import H5adCellStream, open_sources, tokenize
from screformer.module import ReformerConfig
from screformer.pp import prepare
from screformer.train import mask_bins

from .conftest import TINY, TINY_TRAIN, make_counts

TINY_PRETRAIN = dict(TINY, dropout=0.0)
FINE_TUNE = dict(TINY_TRAIN, max_epochs=15, lr=1e-2)


# ------------------------------------------------------------------ masking
@pytest.mark.parametrize("token_mode", ["all", "expressed"])
def test_mask_bins_picks_15_percent_of_expressed_genes(token_mode):
    torch.manual_seed(0)
    config = ReformerConfig(n_genes=200, token_mode=token_mode)
    bins = torch.randint(0, 6, (64, 200))
    mask = torch.ones_like(bins, dtype=torch.bool)
    mask[:, 180:] = False  # padding
    inputs, targets = mask_bins(bins, mask, config, 0.15, 0.9)
    picked = targets >= 0
    expressed = mask & (bins > 0) if token_mode == "all" else mask
    assert not (picked & ~expressed).any()  # never padding, never bin 0 in "all" mode
    expected = (expressed.sum(1) * 0.15).round()
    assert torch.equal(picked.sum(1), expected.long())
    assert torch.equal(targets[picked], bins[picked])
    assert torch.equal(inputs[~picked], bins[~picked])  # nothing else changes
    replaced = (inputs[picked] == config.mask_bin).float().mean().item()
    assert 0.85 < replaced < 0.95
    kept = inputs[picked] != config.mask_bin
    assert torch.equal(inputs[picked][kept], bins[picked][kept])


def test_mask_bins_masks_at_least_one_gene_per_cell():
    config = ReformerConfig(n_genes=4)
    bins = torch.tensor([[2, 0, 0, 0], [1, 3, 0, 0]])
    mask = torch.tensor([[True, False, False, False], [True, True, False, False]])
    _, targets = mask_bins(bins, mask, config)
    assert ((targets >= 0).sum(1) == 1).all()


# ---------------------------------------------------------------- streaming
def _write(adata, path, dense=False):
    adata = adata.copy()
    if dense:
        adata.X = adata.X.toarray()
    adata.write_h5ad(path)
    return path


@pytest.mark.parametrize("dense", [False, True])
def test_stream_reads_only_chunks_and_matches_prepare(tmp_path, recorded_reads, dense):
    adata = make_counts(n_per_class=30, n_genes=40, seed=1)  # 90 cells
    path = _write(adata, tmp_path / "corpus.h5ad", dense)
    panel = list(adata.var_names[::-1])  # another gene order than the file's
    config = ReformerConfig(n_genes=len(panel), token_mode="expressed")
    sources = open_sources([path], panel, sample_rows=16)  # values' kind from 16 rows
    stream = H5adCellStream(
        sources, config, batch_size=8, chunk_size=16, validation_size=0.2, shuffle=True
    )
    batches = list(stream)

    assert recorded_reads and all(stop - start <= 16 for start, stop in recorded_reads)
    assert len(batches) == len(stream) == stream.n_cells // 8
    cells = np.concatenate([b["cell"].numpy() for b in batches])
    assert len(set(cells)) == len(cells)  # each cell once
    validation = np.concatenate(
        [b["cell"].numpy() for b in H5adCellStream(sources, config, split="validation")]
    )
    assert not set(cells) & set(validation)
    # Each streamed cell has the tokens of the in-memory path.
    expected = tokenize(prepare(adata, panel).X[cells], config)
    rows = [(b["gene_ids"][i], b["bins"][i], b["mask"][i]) for b in batches for i in range(8)]
    for k, (ids, bins, mask) in enumerate(rows):
        want = expected["mask"][k]
        assert torch.equal(ids[mask], expected["gene_ids"][k][want])
        assert torch.equal(bins[mask], expected["bins"][k][want])


def test_stream_shards_are_disjoint_and_equal_in_length(tmp_path):
    paths = [
        _write(make_counts(n_per_class=n, seed=n), tmp_path / f"part{n}.h5ad") for n in (10, 17)
    ]
    panel = [f"GENE{j}" for j in range(40)]
    config = ReformerConfig(n_genes=40)
    sources = open_sources(paths, panel)
    seen = []
    for rank in (0, 1):
        stream = H5adCellStream(
            sources, config, batch_size=4, chunk_size=8, rank=rank, world_size=2, seed=3
        )
        batches = list(stream)
        assert len(batches) == len(stream) == stream.n_cells // 8
        seen.append({int(c) for b in batches for c in b["cell"]})
    assert not seen[0] & seen[1]


def test_open_sources_reports_a_file_without_panel_genes(tmp_path):
    path = _write(make_counts(), tmp_path / "x.h5ad")
    with pytest.raises(ValueError, match="x.h5ad.*panel genes"):
        open_sources([path], [f"OTHER{j}" for j in range(40)])
    with pytest.raises(FileNotFoundError):
        open_sources([tmp_path / "missing.h5ad"], ["GENE0"])


# ------------------------------------------------------------ pre-training
class _StopAt(pl.Callback):
    """Simulates an interruption at the start of an epoch."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("interrupted")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return [_write(make_counts(n_per_class=20, seed=s), folder / f"part{s}.h5ad") for s in (1, 2)]


def _pretrain(corpus, out, **kwargs):
    options = dict(max_epochs=3, batch_size=8, chunk_size=16, accelerator="cpu", seed=0)
    return screformer.pretrain(corpus, out, **{**options, **TINY_PRETRAIN, **kwargs})


def test_pretrain_resumes_to_the_same_weights(corpus, tmp_path):
    straight = _pretrain(corpus, tmp_path / "straight")
    with pytest.raises(RuntimeError, match="interrupted"):
        _pretrain(corpus, tmp_path / "resumed", callbacks=[_StopAt(2)])
    assert (tmp_path / "resumed/checkpoints/last.ckpt").exists()
    assert not (tmp_path / "resumed/model.pt").exists()
    resumed = _pretrain(corpus, tmp_path / "resumed", resume=True)

    a = torch.load(straight, weights_only=True)
    b = torch.load(resumed, weights_only=True)
    assert a["kind"] == "encoder" and a["classes"] == []
    assert a["gene_panel"] == [f"GENE{j}" for j in range(40)]
    assert a["pretraining"]["best_epoch"] == b["pretraining"]["best_epoch"]
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, msg=key)
    for run in ("straight", "resumed"):  # the interrupted run's epochs are kept
        history = pd.read_csv(tmp_path / run / "metrics.csv")
        assert history["epoch"].tolist() == [0, 1, 2]
        assert history[["train_loss", "validation_loss"]].notna().all().all()
    # Learning happened: the masked bins are predicted better than at the first epoch.
    losses = a["pretraining"]["history"]["validation_loss"]
    assert losses[-1] < losses[0]


def test_pretrained_encoder_is_fine_tuned_on_labels(corpus, tmp_path):
    path = _pretrain(corpus, tmp_path / "pre", max_epochs=1)
    with pytest.raises(ValueError, match="pretrained encoder without cell types"):
        screformer.SCReformer.from_pretrained(path)

    adata = make_counts(n_per_class=30)
    adata.var_names = [f"gene{j}" for j in range(40)]  # case differs: still aligned
    screformer.SCReformer.setup_anndata(adata, labels_key="cell_type")
    model = screformer.SCReformer.from_pretrained(path, adata)
    encoder = torch.load(path, weights_only=True)["state_dict"]
    torch.testing.assert_close(model.module.embedding.gene.weight, encoder["embedding.gene.weight"])
    assert model.classes == ["alpha", "beta", "gamma"] and not model.is_trained_
    assert model.pretrained_["n_cells"] == 120
    model.train(**FINE_TUNE)
    assert (model.predict() == adata.obs["cell_type"].to_numpy()).mean() > 0.9


def test_annotate_fine_tunes_a_pretrained_encoder(corpus, tmp_path):
    path = _pretrain(corpus, tmp_path / "pre", max_epochs=1)
    adata = make_counts(n_per_class=30)
    screformer.tl.annotate(adata, "cell_type", model=path, unassigned_threshold=0, **FINE_TUNE)
    assert adata.uns["screformer"]["params"]["pretrained"]["n_cells"] == 120
    predicted = adata.obs["screformer_prediction"].astype(str)
    accuracy = (predicted == adata.obs["cell_type"].astype(str)).mean()
    assert accuracy > 0.9


def test_pretrain_with_gene2vec_file_of_another_width(corpus, tmp_path):
    rng = np.random.default_rng(0)
    lines = [f"GENE{j} " + " ".join(map(str, rng.normal(size=20))) for j in range(30)]
    (tmp_path / "g2v.txt").write_text("\n".join(lines))
    path = _pretrain(corpus, tmp_path / "pre", max_epochs=1, gene_vectors=tmp_path / "g2v.txt")
    assert torch.load(path, weights_only=True)["state_dict"]["embedding.gene.weight"].shape == (
        41,
        TINY["dim"],
    )


def test_ddp_two_processes_see_disjoint_cells_and_end_equal(corpus, tmp_path):
    script = Path(__file__).with_name("ddp_pretrain.py")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path), *map(str, corpus)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    seen = [{tuple(pair) for pair in r["cells"].tolist()} for r in ranks]  # (epoch, cell)
    assert len(seen[0]) == len(seen[1]) > 0 and not seen[0] & seen[1]
    assert {epoch for epoch, _ in seen[0]} == {0, 1}
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    for key, value in ranks[0]["state_dict"].items():
        torch.testing.assert_close(ranks[1]["state_dict"][key], value, msg=key)
    assert (tmp_path / "out/model.pt").exists()


# ----------------------------------------------------------------- gene2vec
def test_train_gene2vec_puts_coexpressed_genes_together(tmp_path):
    pytest.importorskip("gensim")
    rng = np.random.default_rng(0)
    n_cells, n_modules, size = 300, 8, 10
    activity = rng.gamma(1.0, 2.0, size=(n_cells, n_modules))
    rate = np.repeat(activity, size, axis=1) + 0.05  # modules of co-expressed genes
    adata = ad.AnnData(rng.poisson(rate).astype(np.float32))
    adata.var_names = [f"M{k}G{g}" for k in range(n_modules) for g in range(size)]
    out = tmp_path / "g2v.txt"
    n = screformer.gene2vec.train_gene2vec([adata], out, dim=16, epochs=50, min_correlation=0.2)
    assert n == n_modules * size
    vectors, found = screformer.gene2vec.read_gene2vec(out, list(adata.var_names))
    assert found == n and vectors.shape == (n, 16)
    vectors -= vectors.mean(0)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = unit @ unit.T
    module = np.arange(n) // size
    same = np.equal.outer(module, module)
    within = similarity[same & ~np.eye(n, dtype=bool)].mean()
    assert within > similarity[~same].mean() + 0.5
