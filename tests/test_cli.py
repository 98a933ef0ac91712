import subprocess
import sys

import anndata as ad
import numpy as np
import pytest

from screformer import cli
from screformer.cli import main

from .conftest import make_counts


def _annotate(tmp_path, *options: str) -> int:
    make_counts().write_h5ad(tmp_path / "in.h5ad")
    return main(["annotate", str(tmp_path / "in.h5ad"), *options])


def test_annotate_writes_output_and_model(tmp_path, capsys):
    out, model = str(tmp_path / "out.h5ad"), str(tmp_path / "model")
    code = _annotate(
        tmp_path,
        "--labels-key",
        "cell_type",
        "--out",
        out,
        "--max-epochs",
        "2",
        "--save-model",
        model,
        "--majority-voting",
        "--novelty-threshold",
        "none",
        "--n-top-genes",
        "12",
    )
    assert code == 0
    annotated = ad.read_h5ad(out)
    assert annotated.uns["screformer"]["params"]["n_top_genes"] == 12
    assert annotated.uns["screformer"]["gene_overlap"]["n_panel_genes"] == 12
    assert {
        "screformer_prediction",
        "screformer_confidence",
        "screformer_novelty",
        "screformer_majority_voting",
        "screformer_over_clustering",
    } <= set(annotated.obs)
    assert "novelty_threshold" not in annotated.uns["screformer"]["params"]
    assert (tmp_path / "model" / "model.pt").exists()
    assert "cells labelled" in capsys.readouterr().out
    # Reuse the saved model: at the threshold annotate used, the same calls.
    again = str(tmp_path / "again.h5ad")
    args = ["predict", str(tmp_path / "in.h5ad"), "--model", model, "--out", again]
    assert main([*args, "--threshold", "0.5"]) == 0
    predicted = ad.read_h5ad(again).obs["screformer_prediction"]
    assert (predicted == annotated.obs["screformer_prediction"]).all()
    # By default a trained model's threshold is 0.1: the cells at 0.1-0.5 get their best call.
    assert main(args) == 0
    relaxed = ad.read_h5ad(again)
    assert relaxed.uns["screformer"]["params"]["unassigned_threshold"] == 0.1
    confidence = relaxed.obs["screformer_confidence"].to_numpy()
    np.testing.assert_array_equal(
        relaxed.obs["screformer_prediction"] == "Unassigned", confidence < 0.1
    )


def test_annotate_use_raw_trains_and_labels_on_the_genes_in_raw(tmp_path):
    full = make_counts()
    cut = full.copy()
    cut.raw = full
    cut[:, :8].copy().write_h5ad(tmp_path / "cut.h5ad")  # X: 8 genes; raw: all 40
    out = str(tmp_path / "out.h5ad")
    args = ["annotate", str(tmp_path / "cut.h5ad"), "--labels-key", "cell_type", "--out", out]
    assert main([*args, "--max-epochs", "1", "--use-raw"]) == 0
    annotated = ad.read_h5ad(out)
    assert annotated.n_vars == 8
    assert annotated.uns["screformer"]["params"]["use_raw"]
    assert annotated.uns["screformer"]["gene_overlap"]["n_panel_genes"] == 40


def test_pretrain_command_writes_an_encoder_that_annotate_fine_tunes(tmp_path, capsys):
    make_counts(seed=3).write_h5ad(tmp_path / "corpus.h5ad")
    tiny = ["--dim", "8", "--depth", "1", "--heads", "2", "--dim-head", "4", "--bucket-size", "4"]
    args = ["pretrain", str(tmp_path / "corpus.h5ad"), "--out", str(tmp_path / "pre")]
    assert main([*args, "--max-epochs", "1", "--batch-size", "8", *tiny]) == 0
    encoder = tmp_path / "pre" / "model.pt"
    assert f"Wrote the pretrained encoder to {encoder}" in capsys.readouterr().out
    out = str(tmp_path / "out.h5ad")
    code = _annotate(
        tmp_path,
        "--labels-key",
        "cell_type",
        "--model",
        str(encoder),
        "--out",
        out,
        "--max-epochs",
        "1",
    )
    assert code == 0
    assert ad.read_h5ad(out).uns["screformer"]["params"]["pretrained"]["n_cells"] == 60
    # A pretrained encoder cannot predict without fine-tuning.
    code = main(["predict", str(tmp_path / "in.h5ad"), "--model", str(encoder), "--out", out])
    assert code == 1 and "labelled cells" in capsys.readouterr().err


def test_annotate_error_is_one_line_and_writes_nothing(tmp_path, capsys):
    code = _annotate(tmp_path, "--labels-key", "nope", "--out", str(tmp_path / "out.h5ad"))
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.startswith("screformer: error:") and "nope" in err and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.h5ad"]


def test_interrupted_write_leaves_no_output(tmp_path, monkeypatch):
    from screformer import cli

    adata = make_counts()

    def broken_write(self, path, *args, **kwargs):
        open(path, "wb").write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(ad.AnnData, "write_h5ad", broken_write)
    with pytest.raises(KeyboardInterrupt):
        cli.write_h5ad_atomic(adata, tmp_path / "out.h5ad")
    assert list(tmp_path.iterdir()) == []


def test_missing_input_file_is_a_one_line_error(tmp_path, capsys):
    code = main(["annotate", str(tmp_path / "absent.h5ad"), "--labels-key", "x", "--out", "o.h5ad"])
    assert code == 1
    assert (
        capsys.readouterr().err.strip()
        == f"screformer: error: {tmp_path / 'absent.h5ad'} does not exist."
    )


def test_info_lists_cache_and_registry(tmp_path, capsys, monkeypatch):
    from screformer import pretrained

    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(pretrained, "_REGISTRY", {"default": pretrained._REGISTRY["default"]})
    pretrained.register("tiny", "http://127.0.0.1:9/tiny.pt", "a" * 64, "a test entry")
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "cache") in out
    assert "tiny: http://127.0.0.1:9/tiny.pt (not cached): a test entry" in out
    assert "default_model.pt (bundled)" in out


@pytest.mark.slow
def test_demo_fine_tunes_the_bundled_model_offline(tmp_path, capsys, monkeypatch):
    import pooch

    def no_network(*args, **kwargs):
        raise AssertionError("the demo must not download anything")

    monkeypatch.setattr(pooch, "retrieve", no_network)
    out = tmp_path / "demo.h5ad"
    assert main(["demo", "--out", str(out), "--max-epochs", "1", "--model", "default"]) == 0
    printed = capsys.readouterr().out
    assert "the pretrained model 'default'" in printed
    annotated = ad.read_h5ad(out)
    assert annotated.uns["screformer"]["params"]["pretrained"]
    assert annotated.uns["screformer"]["gene_overlap"]["n_panel_genes"] == 14737
    # After one epoch many cells are still under the threshold, but those assigned are mostly
    # right (0.886 when written).
    accuracy = float(printed.split("accuracy of assigned cells ")[1].split(".\n")[0])
    assert accuracy > 0.7


@pytest.mark.slow
def test_demo_trains_a_new_model_on_variable_genes_by_default(tmp_path, capsys):
    out = tmp_path / "demo.h5ad"
    assert main(["demo", "--out", str(out), "--max-epochs", "1"]) == 0
    assert "Training a new model" in capsys.readouterr().out
    annotated = ad.read_h5ad(out)
    assert not annotated.uns["screformer"]["params"].get("pretrained")
    assert annotated.uns["screformer"]["gene_overlap"]["n_panel_genes"] == 2000


def test_version_and_verbose_after_the_command(tmp_path, capsys):
    import screformer

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"screformer {screformer.__version__}"
    args = cli.build_parser().parse_args(["predict", "x.h5ad", "--model", "m", "--out", "o.csv"])
    assert args.verbose is False
    for argv in (["predict", "x.h5ad", "--model", "m", "--out", "o.csv", "-v"], ["-v", "info"]):
        assert cli.build_parser().parse_args(argv).verbose is True
    assert main(["info", "--verbose"]) == 0


def test_options_not_given_leave_the_functions_defaults(monkeypatch, tmp_path):
    from screformer import tl

    seen = {}

    def fake_predict_file(model, source, out, **kwargs):
        seen.update(kwargs)
        return dict(counts={}, n_cells=0, n_unassigned=0, seconds=1.0, cells_per_s=0.0)

    monkeypatch.setattr(tl, "predict_file", fake_predict_file)
    (tmp_path / "x.h5ad").write_bytes(b"")
    argv = ["predict", str(tmp_path / "x.h5ad"), "--model", "m", "--out", "o.csv"]
    assert main(argv) == 0 and seen == {}
    assert main([*argv, "--threshold", "0.2", "--chunk-size", "10"]) == 0
    assert seen == {"unassigned_threshold": 0.2, "chunk_size": 10}


def test_importing_the_cli_does_not_import_torch():
    code = "import screformer.cli, sys; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
