"""Pretrained-weight registry: download once over real HTTP, cache, verify, refuse bad files."""

import dataclasses
import hashlib

import numpy as np
import pooch
import pytest
import torch

import screformer
from screformer import SCReformer, pretrained
from screformer.cli import main

from .conftest import TINY, TINY_TRAIN

BUNDLED = dict(pretrained._REGISTRY)  # before the fixture below empties the registry


@pytest.fixture
def checkpoint(tmp_path, counts_adata):
    SCReformer.setup_anndata(counts_adata, labels_key="cell_type")
    model = SCReformer(counts_adata, **TINY)
    model.train(**TINY_TRAIN)
    model.save(tmp_path / "saved")
    return tmp_path / "saved" / "model.pt", model


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path / "cache"))
    for name in (pretrained.MIRROR_ENV, pretrained.OFFLINE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(pretrained, "_REGISTRY", {})


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_then_cache_hit_offline(server, checkpoint, counts_adata, monkeypatch, tmp_path):
    base, served, hits = server
    file, model = checkpoint
    (served / "tiny.pt").write_bytes(file.read_bytes())
    pretrained.register("tiny", f"{base}/tiny.pt", _sha256(file))

    loaded = SCReformer.from_pretrained("tiny")
    assert hits == ["/tiny.pt"]
    assert (pretrained.cache_dir() / "tiny.pt").exists()
    assert loaded.predict(counts_adata).tolist() == model.predict(counts_adata).tolist()

    (served / "tiny.pt").unlink()  # the server no longer has it: the cache answers
    monkeypatch.setenv(pretrained.OFFLINE_ENV, "1")
    again, _ = screformer.tl.annotate(counts_adata, model="tiny", copy=True)
    assert hits == ["/tiny.pt"]
    assert "screformer_prediction" in again.obs
    counts_adata.write_h5ad(tmp_path / "cells.h5ad")
    argv = ["predict", str(tmp_path / "cells.h5ad"), "--model", "tiny", "--out"]
    assert main([*argv, str(tmp_path / "labelled.h5ad")]) == 0


def test_corrupted_download_is_refused_and_not_cached(server, checkpoint):
    base, served, _ = server
    file, _ = checkpoint
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (served / "tiny.pt").write_bytes(bytes(data))
    pretrained.register("tiny", f"{base}/tiny.pt", _sha256(file))
    with pytest.raises(ValueError, match="does not match the SHA-256"):
        SCReformer.from_pretrained("tiny")
    assert not (pretrained.cache_dir() / "tiny.pt").exists()


def test_unreachable_offline_mirror_and_unknown(server, checkpoint, monkeypatch):
    base, served, hits = server
    file, _ = checkpoint
    pretrained.register("tiny", "http://127.0.0.1:9/nowhere/tiny.pt", _sha256(file))
    with pytest.raises(OSError, match="Could not download 'tiny'"):
        pretrained.fetch("tiny")
    monkeypatch.setenv(pretrained.OFFLINE_ENV, "1")
    with pytest.raises(OSError, match="not in the cache"):
        pretrained.fetch("tiny")
    monkeypatch.delenv(pretrained.OFFLINE_ENV)
    (served / "tiny.pt").write_bytes(file.read_bytes())
    monkeypatch.setenv(pretrained.MIRROR_ENV, base)  # the mirror has the file under its name
    assert pretrained.fetch("tiny").exists() and hits == ["/tiny.pt"]
    with pytest.raises(FileNotFoundError, match="neither a saved model"):
        SCReformer.from_pretrained("no-such-model")
    with pytest.raises(ValueError, match="64 hexadecimal"):
        pretrained.register("bad", "http://x/y.pt", "abc")


def test_bundled_default_fine_tunes_offline_without_download(monkeypatch):
    monkeypatch.setattr(pretrained, "_REGISTRY", dict(BUNDLED))
    monkeypatch.setenv(pretrained.OFFLINE_ENV, "1")

    def no_download(*args, **kwargs):
        raise AssertionError("the bundled model was downloaded")

    monkeypatch.setattr(pooch, "retrieve", no_download)
    adata = screformer.datasets.pbmc3k()
    keep = adata.obs["classified"].isin(["B", "CD14+ Mono", "NK"]).to_numpy()
    adata = adata[np.flatnonzero(keep)[::8]].copy()  # 122 cells of 3 types
    SCReformer.setup_anndata(adata, labels_key="classified")
    model = SCReformer.from_pretrained("default", adata)
    encoder = torch.load(pretrained.fetch("default"), weights_only=True)
    assert model.gene_panel == encoder["gene_panel"] and len(model.gene_panel) > 14_000
    torch.testing.assert_close(
        model.module.encoder.state_dict(),
        {
            k[len("encoder.") :]: v
            for k, v in encoder["state_dict"].items()
            if k.startswith("encoder.")
        },
    )
    assert model.pretrained_["n_cells"] == encoder["pretraining"]["n_cells"]
    # The encoder predates head_bins; its new head still takes today's default.
    assert "head_bins" not in encoder["config"] and model.config.head_bins
    model.train(max_epochs=1, batch_size=16, enable_progress_bar=False)
    assert set(model.predict()) <= {"B", "CD14+ Mono", "NK"}


def test_damaged_bundled_model_is_refused(tmp_path, monkeypatch):
    entry = BUNDLED["default"]
    damaged = bytearray(entry.bundled.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    (tmp_path / "default_model.pt").write_bytes(bytes(damaged))
    monkeypatch.setattr(
        pretrained,
        "_REGISTRY",
        {"default": dataclasses.replace(entry, bundled=tmp_path / "default_model.pt")},
    )
    with pytest.raises(ValueError, match="missing or damaged"):
        pretrained.fetch("default")


def test_bundled_default_without_a_kind_field_reads_as_an_encoder():
    from screformer.model._screformer import read_checkpoint

    path = BUNDLED["default"].bundled
    assert "kind" not in torch.load(path, weights_only=True)  # written before the field existed
    assert read_checkpoint(path)[1]["kind"] == "encoder"
    with pytest.raises(ValueError, match="pretrained encoder without cell types"):
        SCReformer.load(path)


@pytest.mark.parametrize("name", ["pbmc", "heart"])
def test_bundled_classifiers_label_unlabelled_cells_offline(name, monkeypatch, capsys):
    monkeypatch.setattr(pretrained, "_REGISTRY", dict(BUNDLED))
    monkeypatch.setenv(pretrained.OFFLINE_ENV, "1")
    monkeypatch.setattr(pooch, "retrieve", lambda *a, **k: pytest.fail("downloaded"))
    card = pretrained.card(name)
    for field in ("training_data", "classes", "genes", "value_encoding", "cross_validation"):
        assert card[field], field
    assert card["value_encoding"] == "relative" and card["built"]
    model = SCReformer.from_pretrained(name)
    assert model.is_trained_ and model.classes == card["classes"]
    assert model.uhaf_["organ"] == card["uhaf"]["organ"] and model.novelty_ is not None

    adata = screformer.datasets.pbmc3k()[::20].copy()  # unlabelled as far as the model knows
    del adata.obs["classified"]
    screformer.tl.annotate(adata, model=name, unassigned_threshold=0)
    assert set(adata.obs["screformer_prediction"]) <= set(card["classes"])
    assert {"screformer_uhaf_tier1_prediction", "screformer_novelty"} <= set(adata.obs)
    if name == "pbmc":  # its own training cells: labelled as in the tutorial
        truth = screformer.datasets.pbmc3k()[::20].obs["classified"].astype(str)
        assert (adata.obs["screformer_prediction"].astype(str) == truth).mean() > 0.8

    assert main(["models"]) == 0
    listed = capsys.readouterr().out
    assert f"{name}: " in listed and "5-fold cross-validation: macro F1" in listed
