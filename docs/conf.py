"""Sphinx configuration of the art-certssbd documentation."""

import art_certssbd

project = "art-certssbd"
author = "art-certssbd developers"
release = art_certssbd.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
html_theme = "sphinx_rtd_theme"
suppress_warnings = ["myst.header"]
nitpicky = False
