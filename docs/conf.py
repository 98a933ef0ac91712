"""Sphinx configuration for screformer's documentation."""

import importlib.metadata
import shutil
from pathlib import Path

project = "screformer"
author = "screformer developers"
release = importlib.metadata.version("screformer")

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
autosummary_generate = True
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_typehints = "description"
autodoc_inherit_docstrings = False  # Lightning's hook docstrings are not valid reST
napoleon_numpy_docstring = True
napoleon_google_docstring = False
# The tutorials live in tutorials/ (run by CI with nbmake) and are committed with their outputs;
# the docs show those outputs rather than running hours of training on Read the Docs.
nb_execution_mode = "off"
_tutorials = Path(__file__).parent / "tutorials"
shutil.rmtree(_tutorials, ignore_errors=True)
shutil.copytree(Path(__file__).parents[1] / "tutorials", _tutorials)
myst_enable_extensions = ["colon_fence"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
html_theme = "furo"
html_title = "screformer"
