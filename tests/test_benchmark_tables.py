"""The benchmark scripts' table logic, without training: how results files combine."""

import json
import sys
from pathlib import Path

import numpy as np

from screformer.pp import prepare

from .conftest import require

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import transfer  # noqa: E402
import transfer_seeds  # noqa: E402


def _rows(n, method, f1):
    return [
        {"task": f"t{i}", method: {"macro_f1": f1}, "logistic_regression": {"macro_f1": 0.7}}
        for i in range(n)
    ]


def test_seeds_add_to_keeps_earlier_runs_and_names_a_merged_stage_by_its_command(tmp_path):
    run = {
        "command": "first command",
        "variants": {"v": {"train": {"seed": 1}}},
        "results": {"pancreas": _rows(9, "v", 0.5), "cv": _rows(5, "v", 0.6)},
        "rerun": [{"stages": ["cv"], "command": "cv command", "wall_s": 1.0}],
    }
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run))
    earlier = {
        "runs": {"pancreas": {"v": [{"command": "old", "seed": 0, "scores": {"t0": 0.4}}]}},
        "logistic_regression": {"pancreas": {"t0": 0.9}},
    }
    s = transfer_seeds.collect([f"{path}:v"], earlier)
    pancreas = s["runs"]["pancreas"]["v"]
    assert [(r["seed"], r["command"]) for r in pancreas] == [(0, "old"), (1, "first command")]
    assert s["runs"]["cv"]["v"][0]["command"] == "cv command"
    assert s["logistic_regression"]["pancreas"]["t0"] == 0.9  # the earlier LR stays
    assert s["logistic_regression"]["pancreas"]["t1"] == 0.7
    assert s["logistic_regression"]["cv"]["t0"] == 0.7


def test_transfer_markdown_shows_the_saved_lr_column_only_when_measured():
    cell = {"macro_f1": 0.8, "accuracy": 0.9, "unassigned": 0.0}
    row = {"task": "pbmc3k: (d)", "n_genes": 500, transfer.DEFAULT: cell}
    row["logistic_regression"] = cell
    summary = {
        "command": "c",
        "machine": {},
        "wall_s": 60.0,
        "peak_rss_gb": 1.0,
        "methods": [transfer.DEFAULT, "logistic_regression"],
        "variants": {transfer.DEFAULT: transfer.VARIANTS[transfer.DEFAULT]},
        "results": {"processed": [row]},
    }
    without = transfer.markdown(summary)
    assert transfer.SAVED_LR not in without
    summary["results"]["processed"] = [row | {transfer.SAVED_LR: cell}]
    with_saved = transfer.markdown(summary)
    header = next(line for line in with_saved.splitlines() if line.startswith("| task |"))
    assert header.endswith(f"| {transfer.SAVED_LR} |")
    assert transfer.PROCESSED_NOTE in with_saved


def test_transfer_markdown_prints_a_runs_note_and_names_the_default_of_its_time():
    former = "relative+headbins+augment"  # the default before the weight average
    cell = {"macro_f1": 0.8, "accuracy": 0.9, "unassigned": 0.0}
    summary = {
        "command": "c",
        "machine": {},
        "wall_s": 60.0,
        "peak_rss_gb": 1.0,
        "note": "Renamed from an earlier file.",
        "methods": [former, "logistic_regression"],
        "variants": {former: transfer.VARIANTS[former]},
        "results": {"cv": [{"task": "heart fold 0", former: cell, "logistic_regression": cell}]},
    }
    lines = transfer.markdown(summary).splitlines()
    assert "Renamed from an earlier file.  " in lines
    assert any(line.startswith(f"`{former}` (the default when run) reaches") for line in lines)
    del summary["note"]
    assert not any(line.startswith("Renamed") for line in transfer.markdown(summary).splitlines())


def test_on_genes_hands_a_study_on_to_be_read_once_as_its_own_file():
    require(transfer.DATA_DIR / "labelled" / transfer.PANCREAS["wang"][0])
    wang = transfer.load_pancreas("wang")  # log values only
    genes = list(wang.var_names[:100])
    own_file = prepare(wang, genes).X  # what annotate makes of the study's own file
    stacked = prepare(transfer.on_genes([wang], genes), genes).X
    # The same un-logged values up to a factor per cell (each is scaled to 1e4 once more).
    np.testing.assert_array_equal(own_file.indptr, stacked.indptr)
    ratio = (np.exp2(stacked.data.astype(float)) - 1) / (np.exp2(own_file.data.astype(float)) - 1)
    rows = np.repeat(np.arange(own_file.shape[0]), np.diff(own_file.indptr))
    per_cell = np.bincount(rows, ratio) / np.bincount(rows)
    np.testing.assert_allclose(ratio, per_cell[rows], rtol=1e-3)
