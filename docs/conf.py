"""Sphinx configuration for screformer's documentation."""

import importlib.metadata

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
napoleon_numpy_docstring = True
napoleon_google_docstring = False
nb_execution_mode = "off"  # tutorials are executed by CI with nbmake, not at docs build time
myst_enable_extensions = ["colon_fence"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
html_theme = "furo"
html_title = "screformer"
