"""The one-command GPU check (``benchmarks/gpu_check.py``): without CUDA it says so in one line and exits 0; its CPU
dry run exercises every step at tiny sizes, so that the script cannot rot between GPU loans."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the script would run the real check")
def test_without_cuda_it_says_so_in_one_line_and_exits_0(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines() == [
        "gpu_check: no CUDA device here, nothing to check (--dry-run runs the script on the CPU at tiny sizes)"
    ]
    assert not any(tmp_path.iterdir())


def test_dry_run_needs_an_output_folder(capsys):
    with pytest.raises(SystemExit) as exc:
        _module().main(["--dry-run"])
    assert exc.value.code == 2 and "--dry-run needs --out" in capsys.readouterr().err


def test_dry_run_exercises_every_step_and_writes_the_results(tmp_path, one_thread):
    assert _module().main(["--dry-run", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert report["dry_run"] and report["ok"]
    assert "collected" in report["gpu_tests"]["summary"] and report["gpu_tests"]["ok"]
    # the same inputs and noise on the same device: the agreement check must find nothing at all
    agreement = report["agreement"]
    assert agreement["votes_moved_fraction"] == 0 and agreement["sigma_max_relative_difference"] == 0
    assert report["certify"]["vs_official_loop"] > 0 and report["certify"]["vs_raw_forward"] > 0
    assert report["training"]["vmap_vs_loop"] > 0
    fit = report["paper_fit"]
    assert fit["extrapolated_total_s"] > fit["measured"]["train_s"] and "extrapolated" in fit["label"]
    md = (tmp_path / "gpu-check.md").read_text()
    assert "dry run" in md and "| votes moved, device vs CPU" in md and "**extrapolated" in md


def test_a_failed_agreement_fails_the_check(tmp_path, monkeypatch, one_thread):
    module = _module()
    real = module.check_agreement

    def off(*args):  # a device whose votes moved beyond the tolerance
        return {**real(*args), "votes_moved_fraction": 0.5, "ok": False}

    monkeypatch.setattr(module, "check_agreement", off)
    monkeypatch.setattr(module, "run_gpu_tests", lambda dry_run: {"summary": "-", "counts": {}, "ok": True})
    assert module.main(["--dry-run", "--out", str(tmp_path)]) == 1
    assert (
        "| votes moved, device vs CPU (3 members, 8 inputs) | 0.5000 | <= 0.01 | **no** |"
        in (tmp_path / "gpu-check.md").read_text()
    )
