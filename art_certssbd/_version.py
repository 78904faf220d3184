"""The package version, in a module of its own so that any module can read it without importing the package root
(which imports the estimators, which import most modules: reading ``__version__`` from there made a loop)."""

__version__ = "0.2.0.dev0"
