import anndata as ad

from screformer.cli import main

from .conftest import make_counts


def test_annotate_writes_output_and_model(tmp_path, capsys):
    make_counts().write_h5ad(tmp_path / "in.h5ad")
    code = main(
        [
            "annotate",
            str(tmp_path / "in.h5ad"),
            "--labels-key",
            "cell_type",
            "--out",
            str(tmp_path / "out.h5ad"),
            "--max-epochs",
            "2",
            "--save-model",
            str(tmp_path / "model"),
        ]
    )
    assert code == 0
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    assert {"screformer_prediction", "screformer_confidence"} <= set(out.obs)
    assert (tmp_path / "model" / "model.pt").exists()
    assert "cells labelled" in capsys.readouterr().out
    # Reuse the saved model on new data.
    code = main(
        [
            "annotate",
            str(tmp_path / "in.h5ad"),
            "--model",
            str(tmp_path / "model"),
            "--out",
            str(tmp_path / "again.h5ad"),
        ]
    )
    assert code == 0 and (tmp_path / "again.h5ad").exists()


def test_annotate_error_is_one_line_and_writes_nothing(tmp_path, capsys):
    make_counts().write_h5ad(tmp_path / "in.h5ad")
    code = main(
        [
            "annotate",
            str(tmp_path / "in.h5ad"),
            "--labels-key",
            "nope",
            "--out",
            str(tmp_path / "out.h5ad"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.startswith("screformer: error:") and "nope" in err and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.h5ad"]
