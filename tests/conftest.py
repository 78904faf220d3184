"""Shared fixtures. ART's own test fixtures are not shipped in its wheel, so the project keeps its own."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from art_certssbd.accelerators import NATIVE_BF16_ENV

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
# the benchmark harness (certssbd_bench) lives in the source tree, not in the installed package
sys.path.insert(0, str(ROOT / "benchmarks"))
REFERENCE_DIR = SHARED / "reference" / "cert-ssb-mnist-onepixel-sigma0.12"


# ------------------------------------------------------------------------------------------------ the hardware
# The suite assumes one machine, whatever it runs on: a CPU *without* native bfloat16 and no CUDA device (CUDA tests
# are marked ``gpu`` and skip without it). A test that needs the other CPU kind asks for ``native_bf16``. The pin is
# an environment variable, so subprocesses (the CLI, Ray workers started by a test) see the same CPU.
@pytest.fixture(autouse=True)
def _cpu_without_native_bf16(monkeypatch):
    monkeypatch.setenv(NATIVE_BF16_ENV, "0")


@pytest.fixture
def native_bf16(monkeypatch):
    """Run the test as on a CPU with native bfloat16 (AVX512-BF16 / AMX), whatever this CPU has."""
    monkeypatch.setenv(NATIVE_BF16_ENV, "1")


@pytest.fixture
def no_native_bf16(monkeypatch):
    """Run the test as on a CPU without native bfloat16 (the suite's default, stated where a test depends on it)."""
    monkeypatch.setenv(NATIVE_BF16_ENV, "0")


@pytest.fixture
def reference_dir() -> Path:
    """The official Cert-SSB checkpoints beside the clone (``../shared/reference``); skip when absent."""
    if not REFERENCE_DIR.is_dir():
        pytest.skip(
            f"official reference artefacts not found at {REFERENCE_DIR} (they live beside the clone, in ../shared)"
        )
    return REFERENCE_DIR


@pytest.fixture
def expected(reference_dir) -> dict:
    """``expected.json`` of the reference checkpoints (logits on the probe inputs, sigmas, ...)."""
    return json.loads((reference_dir / "expected.json").read_text())


@pytest.fixture
def probe_inputs(reference_dir) -> np.ndarray:
    """The reference probe images, float32 ``(N, 1, 28, 28)``."""
    return np.load(reference_dir / "probe_inputs.npy").astype(np.float32)


@pytest.fixture
def one_thread():
    """torch on one intra-op thread for the test: tiny kernels run fastest on one, the simulations' thousands of small
    passes do not spin on a loaded machine, and no result depends on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
