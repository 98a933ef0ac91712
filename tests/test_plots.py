"""The plots' contract: Scanpy's ax/show/save/return_fig rule; nothing written to the AnnData."""

import copy
import inspect
import re

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

import screformer

from .test_evaluate import _annotated

matplotlib.use("Agg")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GENES = [f"GENE{j}" for j in range(6)]


def _with_shap():
    """The annotated AnnData plus SHAP results shaped as tl.shap_markers stores them."""
    adata, *_ = _annotated()
    rng = np.random.default_rng(0)
    values = rng.normal(size=(4, len(GENES)))
    adata.uns["screformer_shap"] = {
        "params": {"groupby": "truth", "nsamples": 4},
        "groups": {
            "B": {
                "genes": np.asarray(GENES, dtype=str),
                "mean_abs_shap": np.abs(values).mean(0),
                "mean_shap": values.mean(0),
                "shap": values,
                "expression": rng.random(size=values.shape).astype(np.float32),
                "cells": np.asarray(["0", "1", "2", "3"], dtype=str),
            }
        },
    }
    return adata


# Each plot with arguments that need nothing else; name as in its default file name.
PLOTS = {
    "confusion_matrix": lambda adata, **kw: screformer.pl.confusion_matrix(adata, "truth", **kw),
    "roc": lambda adata, **kw: screformer.pl.roc(adata, "truth", **kw),
    "shap_markers": lambda adata, **kw: screformer.pl.shap_markers(
        adata, "B", n_genes=4, kind="bar", **kw
    ),
}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def shows(monkeypatch):
    """Calls of plt.show, counted instead of made."""
    calls = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: calls.append(1))
    return calls


def _assert_same(a, b, where="adata"):
    """Equal keys and contents, recursively (dicts, arrays, frames, scalars)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, obj=where)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert a == b, where


def _contents(adata):
    return {
        "obs": adata.obs.copy(),
        "uns": copy.deepcopy(dict(adata.uns)),
        "obsm": {k: np.array(v) for k, v in adata.obsm.items()},
        "var": adata.var.copy(),
        "varm": dict(adata.varm),
        "layers": dict(adata.layers),
    }


@pytest.mark.parametrize("name", PLOTS)
def test_show_false_returns_axes_and_writes_nothing(name, shows):
    adata = _with_shap()
    before = _contents(adata)
    ax = PLOTS[name](adata, show=False)
    assert isinstance(ax, Axes)
    assert ax in plt.gcf().axes
    assert ax.has_data()
    assert not shows
    _assert_same(before, _contents(adata))
    assert "evaluation" not in adata.uns["screformer"]


@pytest.mark.parametrize("name", PLOTS)
def test_return_fig_and_default_show(name, shows):
    adata = _with_shap()
    fig = PLOTS[name](adata, return_fig=True)
    assert isinstance(fig, Figure)
    assert not shows  # return_fig leaves the showing to the caller
    assert PLOTS[name](adata) is None  # show=None shows, and then returns nothing
    assert len(shows) == 1


@pytest.mark.parametrize("name", PLOTS)
def test_save_writes_png(name, shows, tmp_path, monkeypatch):
    adata = _with_shap()
    path = tmp_path / "figure.png"
    assert isinstance(PLOTS[name](adata, show=False, save=path), Axes)
    assert path.read_bytes()[:8] == PNG_MAGIC
    monkeypatch.chdir(tmp_path)
    PLOTS[name](adata, show=False, save=True)
    assert (tmp_path / f"screformer_{name}.png").read_bytes()[:8] == PNG_MAGIC
    PLOTS[name](adata, show=False, save=str(tmp_path / "figure.pdf"))
    assert (tmp_path / "figure.pdf").read_bytes()[:5] == b"%PDF-"
    assert not shows


def test_given_axes_are_drawn_into_and_returned():
    adata = _with_shap()
    fig, (left, right) = plt.subplots(1, 2)
    assert screformer.pl.confusion_matrix(adata, "truth", ax=left, show=False) is left
    assert screformer.pl.roc(adata, "truth", ax=right, show=False) is right
    assert screformer.pl.roc(adata, "truth", ax=right, return_fig=True) is fig


def test_shap_both_returns_both_axes():
    adata = _with_shap()
    axes = screformer.pl.shap_markers(adata, "B", n_genes=4, show=False)
    assert list(axes) == ["beeswarm", "bar"]
    assert all(isinstance(ax, Axes) for ax in axes.values())
    assert axes["bar"].get_title() == "B: mean |SHAP|"


def test_evaluate_still_stores_its_scores():
    adata, *_ = _annotated()
    screformer.pl.roc(adata, "truth", show=False)
    assert "evaluation" not in adata.uns["screformer"]
    result = screformer.tl.evaluate(adata, "truth")
    assert adata.uns["screformer"]["evaluation"]["macro_auc"] == pytest.approx(result["macro_auc"])


@pytest.mark.parametrize(
    "function",
    [*(getattr(screformer.pl, n) for n in screformer.pl.__all__), screformer.tl.evaluate],
    ids=lambda f: f.__name__,
)
def test_docstrings_document_parameters_and_returns(function):
    doc = inspect.getdoc(function)
    assert "\nParameters\n----------\n" in doc and "\nReturns\n-------\n" in doc
    assert not re.search(r"^\s*\{\w+\}\s*$", doc, re.MULTILINE), "unfilled placeholder"
    parameters = doc.split("\nParameters\n----------\n")[1].split("\nReturns\n")[0]
    documented = {
        name.strip()
        for line in parameters.splitlines()
        if line and not line[0].isspace()
        for name in line.split(",")
    }
    assert set(inspect.signature(function).parameters) <= documented


def _with_genes():
    """The SHAP-annotated AnnData with expression of the SHAP genes."""
    annotated = _with_shap()
    X = np.random.default_rng(1).poisson(1.0, size=(annotated.n_obs, len(GENES)))
    adata = annotated[:, []].copy()
    adata = adata.__class__(
        X.astype(np.float32), obs=adata.obs, obsm=dict(adata.obsm), uns=dict(adata.uns)
    )
    adata.var_names = GENES
    return adata


def test_dotplot_of_shap_or_given_markers_writes_nothing(shows, tmp_path):
    adata = _with_genes()
    before = _contents(adata)
    axes = screformer.pl.dotplot(adata, n_genes=2, show=False)
    assert isinstance(axes, dict) and isinstance(axes["mainplot_ax"], Axes)
    labels = [t.get_text() for t in axes["mainplot_ax"].get_xticklabels()]
    assert labels == list(adata.uns["screformer_shap"]["groups"]["B"]["genes"][:2])
    fig = screformer.pl.dotplot(adata, {"B": ["GENE0"], "T": ["GENE5"]}, return_fig=True)
    assert isinstance(fig, Figure)
    screformer.pl.dotplot(adata, {"B": ["GENE0"]}, show=False, save=tmp_path / "dot.png")
    assert (tmp_path / "dot.png").read_bytes()[:8] == PNG_MAGIC
    assert not shows
    _assert_same(before, _contents(adata))
    with pytest.raises(KeyError, match="not in adata.var_names.*CD3E"):
        screformer.pl.dotplot(adata, {"T": ["CD3E"]})
    with pytest.raises(KeyError, match="tl.shap_markers"):
        screformer.pl.dotplot(adata, "nothing_here")


def test_dotplot_skips_groups_without_cells(shows):
    adata = _with_genes()
    key = "screformer_prediction"
    calls = adata.obs[key].astype(str)
    # As "Unassigned" is when every cell was assigned: a category without cells.
    adata.obs[key] = pd.Categorical(calls, categories=[*sorted(set(calls)), "no cells"])
    adata.uns[f"{key}_colors"] = ["#111111"] * (len(set(calls)) + 1)
    axes = screformer.pl.dotplot(adata, {"B": ["GENE0"]}, show=False)
    rows = [t.get_text() for t in axes["mainplot_ax"].get_yticklabels()]
    assert rows == sorted(set(calls))  # no row for the empty category
    assert list(adata.obs[key].cat.categories)[-1] == "no cells"  # adata untouched
