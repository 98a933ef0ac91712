import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch

from screformer import SCReformer

from .conftest import TINY, TINY_TRAIN, make_counts


def _trained(adata, **train):
    SCReformer.setup_anndata(adata, labels_key="cell_type")
    model = SCReformer(adata, **TINY)
    model.train(**(TINY_TRAIN | train))
    return model


def test_train_predict_shapes_and_latent(counts_adata):
    model = _trained(counts_adata)
    assert model.is_trained_ and model.classes == ["alpha", "beta", "gamma"]
    soft = model.predict(soft=True)
    assert isinstance(soft, pd.DataFrame)
    assert list(soft.columns) == model.classes and soft.index.equals(counts_adata.obs_names)
    np.testing.assert_allclose(soft.sum(1), 1, rtol=1e-5)
    hard = model.predict()
    assert set(hard) <= set(model.classes) and len(hard) == counts_adata.n_obs
    assert model.get_latent_representation().shape == (counts_adata.n_obs, 8)
    assert "validation_loss" in model.history


def test_same_seed_same_predictions():
    a, b = make_counts(), make_counts()
    pa = _trained(a).predict(soft=True)
    pb = _trained(b).predict(soft=True)
    np.testing.assert_array_equal(pa.to_numpy(), pb.to_numpy())
    pc = _trained(make_counts(), seed=1).predict(soft=True)
    assert not np.array_equal(pa.to_numpy(), pc.to_numpy())


def test_learns_marker_genes():
    adata = make_counts(n_per_class=30)
    model = _trained(adata, max_epochs=15)
    accuracy = (model.predict() == adata.obs["cell_type"].to_numpy()).mean()
    assert accuracy > 0.9


def test_save_load_round_trip(tmp_path, counts_adata):
    model = _trained(counts_adata)
    before = model.predict(soft=True)
    model.save(tmp_path / "m")
    with pytest.raises(FileExistsError):
        model.save(tmp_path / "m")
    # A query with genes in another order and no labels column.
    query = counts_adata[:, ::-1].copy()
    del query.obs["cell_type"]
    loaded = SCReformer.load(tmp_path / "m", adata=query)
    assert loaded.gene_panel == model.gene_panel and loaded.classes == model.classes
    after = loaded.predict(soft=True)
    np.testing.assert_array_equal(after.to_numpy(), before.to_numpy())
    assert not list((tmp_path / "m").glob("*.tmp"))


def test_load_rejects_truncated_and_corrupted(tmp_path, counts_adata):
    model = _trained(counts_adata, max_epochs=1)
    model.save(tmp_path / "m")
    path = tmp_path / "m" / "model.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        SCReformer.load(tmp_path / "m")
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="truncated or corrupted"):
        SCReformer.load(tmp_path / "m")
    with pytest.raises(FileNotFoundError):
        SCReformer.load(tmp_path / "nothing")


def test_load_with_too_few_panel_genes_is_clear(tmp_path, counts_adata):
    model = _trained(counts_adata, max_epochs=1)
    model.save(tmp_path / "m")
    other = counts_adata.copy()
    other.var_names = [f"OTHER{i}" for i in range(other.n_vars)]
    loaded = SCReformer.load(tmp_path / "m")
    with pytest.raises(ValueError, match="panel genes were found"):
        loaded.predict(other)


def test_setup_errors(counts_adata):
    with pytest.raises(KeyError, match="labels_key"):
        SCReformer.setup_anndata(counts_adata, labels_key="nope")
    one_class = counts_adata.copy()
    one_class.obs["cell_type"] = "alpha"
    SCReformer.setup_anndata(one_class, labels_key="cell_type")
    with pytest.raises(ValueError, match="at least two"):
        SCReformer(one_class, **TINY)
    missing = counts_adata.copy()
    missing.obs["cell_type"] = missing.obs["cell_type"].astype(object)
    missing.obs.iloc[0, 0] = None
    with pytest.raises(ValueError, match="missing labels"):
        SCReformer.setup_anndata(missing, labels_key="cell_type")


def test_accumulation_and_class_weights_run(counts_adata):
    model = _trained(counts_adata, max_epochs=1, accumulate_grad_batches=2, class_weight="balanced")
    assert model.train_params_["accumulate_grad_batches"] == 2
    with pytest.raises(ValueError, match="class_weight"):
        _trained(make_counts(), max_epochs=1, class_weight="weird")


def test_rare_types_are_repeated_in_training_and_counted_once(counts_adata):
    counts_adata.obs["cell_type"] = counts_adata.obs["cell_type"].cat.add_categories("rare")
    counts_adata.obs.iloc[:2, 0] = "rare"
    seen = []
    model = _trained(counts_adata, max_epochs=1, min_class_cells=20, callbacks=[_RowCounter(seen)])
    n_rare = int(np.sum(np.asarray(seen) == model.classes.index("rare")))
    assert n_rare == 20  # two cells, drawn again to 20 rows in the one epoch
    assert model.train_params_["n_train_cells"] < counts_adata.n_obs  # cells, not rows
    seen.clear()
    _trained(counts_adata.copy(), max_epochs=1, min_class_cells=None, callbacks=[_RowCounter(seen)])
    assert int(np.sum(np.asarray(seen) == model.classes.index("rare"))) == 2
    with pytest.raises(ValueError, match="min_class_cells"):
        _trained(counts_adata.copy(), max_epochs=1, min_class_cells=-1)


class _RowCounter(pl.Callback):
    """Collects the labels of every training batch."""

    def __init__(self, seen):
        self.seen = seen

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.seen.extend(batch["labels"].tolist())


def test_class_with_a_single_cell_trains(counts_adata):
    counts_adata.obs["cell_type"] = counts_adata.obs["cell_type"].cat.add_categories("rare")
    counts_adata.obs.iloc[0, 0] = "rare"
    model = _trained(counts_adata, max_epochs=1)
    assert "rare" in model.classes
    assert model.predict(soft=True).shape == (counts_adata.n_obs, 4)


def test_interrupted_save_leaves_no_checkpoint(tmp_path, counts_adata, monkeypatch):
    import torch

    model = _trained(counts_adata, max_epochs=1)

    def broken_save(obj, path):
        with open(path, "wb") as handle:
            handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        model.save(tmp_path / "m")
    assert list((tmp_path / "m").iterdir()) == []


def test_initial_weights_are_seeded_without_touching_the_global_rng(counts_adata):
    SCReformer.setup_anndata(counts_adata, labels_key="cell_type")
    torch.manual_seed(7)
    state = torch.get_rng_state()
    a, b = (SCReformer(counts_adata, **TINY) for _ in range(2))
    assert torch.equal(torch.get_rng_state(), state)
    c = SCReformer(counts_adata, seed=1, **TINY)
    weights = [m.module.embedding.gene.weight for m in (a, b, c)]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])


def test_calibration_fits_a_temperature_that_survives_save_and_load(tmp_path, counts_adata):
    model = _trained(counts_adata, calibrate=True, validation_size=0.3)
    assert model.temperature_ > 0 and model.temperature_ != 1.0
    prepared = model.prepare()
    raw = model.predict_proba(prepared, temperature=1.0)
    calibrated = model.predict_proba(prepared)
    assert not np.allclose(raw, calibrated)
    np.testing.assert_array_equal(raw.argmax(1), calibrated.argmax(1))  # labels unchanged
    model.save(tmp_path / "m")
    loaded = SCReformer.load(tmp_path / "m")
    assert loaded.temperature_ == model.temperature_
    np.testing.assert_allclose(loaded.predict_proba(prepared), calibrated, rtol=1e-5)
    with pytest.raises(ValueError, match="validation cells"):
        _trained(counts_adata, calibrate=True, validation_size=0)


def test_init_params_are_recorded(counts_adata):
    SCReformer.setup_anndata(counts_adata, labels_key="cell_type")
    model = SCReformer(counts_adata, seed=3, **TINY)
    params = model.init_params_
    assert params["non_kwargs"]["seed"] == 3 and params["kwargs"]["config_kwargs"] == TINY
    assert "adata" not in params["non_kwargs"] and "registry" not in params["non_kwargs"]


def test_loaded_model_with_labelled_adata_trains_and_predicts(tmp_path, counts_adata):
    _trained(counts_adata, max_epochs=1).save(tmp_path / "m")
    fresh = make_counts(seed=5)  # not registered: registered with the saved setup arguments
    loaded = SCReformer.load(tmp_path / "m", fresh)
    assert loaded.adata is fresh and loaded.adata_manager is not None
    loaded.train(max_epochs=1, batch_size=8, augment=False)
    assert loaded.train_params_["n_train_cells"] > 0
    assert len(loaded.predict()) == fresh.n_obs
    # Registered by the user first: that registration is used.
    other = make_counts(seed=6)
    SCReformer.setup_anndata(other, labels_key="cell_type")
    again = SCReformer.load(tmp_path / "m", other)
    again.train(max_epochs=1, batch_size=8, augment=False)
    # Cells without labels are attached for prediction; training them is a clear error.
    query = make_counts(seed=7)
    del query.obs["cell_type"]
    unlabelled = SCReformer.load(tmp_path / "m", query)
    assert len(unlabelled.predict()) == query.n_obs
    with pytest.raises(ValueError, match="labelled cells"):
        unlabelled.train(max_epochs=1)


def test_save_anndata_round_trip_and_unsupported_arguments(tmp_path, counts_adata):
    model = _trained(counts_adata, max_epochs=1)
    model.save(tmp_path / "m", save_anndata=True)
    assert (tmp_path / "m" / "adata.h5ad").exists()
    loaded = SCReformer.load(tmp_path / "m")
    assert loaded.adata is not None and loaded.adata.n_obs == counts_adata.n_obs
    np.testing.assert_array_equal(loaded.predict(), model.predict())
    loaded.train(max_epochs=1, batch_size=8, augment=False)  # its labels came along
    # Saving again without the data drops the old adata.h5ad: it belongs to the old model.
    model.save(tmp_path / "m", overwrite=True)
    assert not (tmp_path / "m" / "adata.h5ad").exists()
    assert SCReformer.load(tmp_path / "m").adata is None
    with pytest.raises(ValueError, match="holds no AnnData"):
        SCReformer.load(tmp_path / "m").save(tmp_path / "n", save_anndata=True)
    with pytest.raises(TypeError, match="prefix"):
        model.save(tmp_path / "p", prefix="x_")
    with pytest.raises(TypeError, match="prefix"):
        SCReformer.load(tmp_path / "m", prefix="x_")


def test_checkpoint_kind_is_explicit_and_old_files_still_load(tmp_path, counts_adata):
    import os

    from screformer.model._screformer import checkpoint_payload, read_checkpoint

    model = _trained(counts_adata, max_epochs=1)
    model.save(tmp_path / "m")
    path = tmp_path / "m" / "model.pt"
    old_umask = os.umask(0o022)
    os.umask(old_umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~old_umask  # atomic_write's mode
    payload = torch.load(path, weights_only=True)
    assert payload["kind"] == "classifier"
    del payload["kind"]  # a file written before the field existed
    torch.save(payload, path)
    assert read_checkpoint(path)[1]["kind"] == "classifier"
    assert SCReformer.load(tmp_path / "m").classes == model.classes
    with pytest.raises(ValueError, match="kind"):
        checkpoint_payload(kind="other", config={}, gene_panel=[], state_dict={})
    with pytest.raises(ValueError, match="needs its classes"):
        checkpoint_payload(kind="classifier", config={}, gene_panel=[], state_dict={})
    payload["kind"] = "mystery"
    torch.save(payload, path)
    with pytest.raises(ValueError, match="unknown checkpoint kind"):
        SCReformer.load(path)


def test_fit_is_free_of_third_party_noise(counts_adata, recwarn, capfd, caplog):
    import logging

    counts_adata.obs["cell_type"] = counts_adata.obs["cell_type"].cat.add_categories("rare")
    counts_adata.obs.iloc[0, 0] = "rare"
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    lightning_log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    lightning_log.addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="screformer"):
            _trained(counts_adata, max_epochs=1, validation_size=0)
    finally:
        lightning_log.removeHandler(handler)
    messages = [str(w.message) for w in recwarn]
    assert not [m for m in messages if "_scvi_labels" in m or "LeafSpec" in m]
    assert [m for m in messages if "'rare' (1)" in m]  # in our words, naming the class
    out, err = capfd.readouterr()
    assert "litlogger" not in out + err and "GPU available" not in out + err
    assert not [m for m in seen if "litlogger" in m or "GPU available" in m]
    assert (
        "Training on 60 cells (rare types drawn 20 more times), validating on 0, up to 1 epochs."
        in caplog.messages
    )


def test_average_weights_stands_in_for_validation_and_then_steps_aside():
    from types import SimpleNamespace

    from screformer.train import AverageWeights

    layer = torch.nn.Linear(2, 1)
    trainer = SimpleNamespace(sanity_checking=False)
    average = AverageWeights(0.75)
    start = layer.weight.detach().clone()
    average.on_fit_start(trainer, layer)
    with torch.no_grad():
        layer.weight.add_(4.0)  # a training step
    average.on_train_batch_end(trainer, layer, None, None, 0)
    expected = 0.75 * start + 0.25 * (start + 4)
    average.on_validation_start(trainer, layer)
    torch.testing.assert_close(layer.weight.detach(), expected)
    average.on_train_batch_start(trainer, layer, None, 1)  # training goes on from its weights
    torch.testing.assert_close(layer.weight.detach(), start + 4)
    average.on_fit_end(trainer, layer)
    torch.testing.assert_close(layer.weight.detach(), expected)
    with pytest.raises(ValueError, match="decay"):
        AverageWeights(1.0)


def test_ema_decay_trains_a_different_model_and_is_recorded(counts_adata):
    plain = _trained(make_counts(), max_epochs=2, ema_decay=None)
    assert plain.train_params_["ema_decay"] is None
    model = _trained(counts_adata, max_epochs=2, ema_decay=0.5)
    assert model.train_params_["ema_decay"] == 0.5
    averaged = model.predict(soft=True).to_numpy()
    assert np.isfinite(averaged).all()
    assert not np.allclose(plain.predict(soft=True).to_numpy(), averaged)
    # Without validation the average, not the last weights, is what training returns.
    last, mean = (
        _trained(make_counts(), max_epochs=2, validation_size=0, ema_decay=ema).predict(soft=True)
        for ema in (None, 0.5)
    )
    assert not np.allclose(last.to_numpy(), mean.to_numpy())


def test_training_averages_weights_by_default_unless_the_fit_is_short(counts_adata):
    # The transfer benchmark chose the average (docs/transfer.md): a fit long enough to forget
    # the initial weights uses it unless asked otherwise (54 training cells in batches of 2 for
    # 18 epochs: 486 batches, 0.995**486 < 0.1).
    long = _trained(counts_adata, max_epochs=18, batch_size=2)
    assert long.train_params_["ema_decay"] == 0.995
    # A short one would return weights close to the untrained ones: it keeps its own.
    with pytest.warns(UserWarning, match="too few for a moving average"):
        short = _trained(make_counts(), max_epochs=3, batch_size=2)
    assert short.train_params_["ema_decay"] is None
