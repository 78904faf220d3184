"""Shared fixtures. ART's own test fixtures are not shipped in its wheel, so the project keeps its own."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REFERENCE_DIR = SHARED / "reference" / "cert-ssb-mnist-onepixel-sigma0.12"


@pytest.fixture
def reference_dir() -> Path:
    """The official Cert-SSB checkpoints beside the clone (``../shared/reference``); skip when absent."""
    if not REFERENCE_DIR.is_dir():
        pytest.skip(
            f"official reference artefacts not found at {REFERENCE_DIR} (they live beside the clone, in ../shared)"
        )
    return REFERENCE_DIR
