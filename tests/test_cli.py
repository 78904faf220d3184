"""The ``certssbd`` command: the demo in a small setting, and wrong input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from art_certssbd.cli import main

SMALL = ["--nb-models", "4", "--epochs", "2", "--sigma-steps", "2", "--quiet", "--device", "cpu"]


def test_demo_runs_end_to_end_and_writes_its_files(tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path / "out"), *SMALL]) == 0
    out = capsys.readouterr().out
    assert "| undefended |" in out and "| rab clean |" in out and "| cert-ssbd triggered |" in out
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results["methods"]) == {"undefended", "rab", "cert-ssbd"}
    for name in ("rab", "cert-ssbd"):
        curves = results["methods"][name]["certified_accuracy"]
        assert len(curves["clean"]) == len(results["config"]["radii"])
        assert all(a >= b for a, b in zip(curves["clean"], curves["clean"][1:]))  # non-increasing in the radius
    assert results["nb_poisoned"] == round(0.02 * 1347)
    assert (tmp_path / "out" / "results.md").read_text().startswith("# Cert-SSBD demo")
    assert (tmp_path / "out" / "certified_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["demo", "--nb-models", "0"], "--nb-models: expected a positive integer, got '0'"),
        (["demo", "--scale", "-1"], "--scale: expected a finite number > 0, got '-1'"),
        (["demo", "--alpha", "1.5"], "--alpha: expected a number in (0, 1), got '1.5'"),
        (["demo", "--trigger", "seven-pixel"], "--trigger: invalid choice: 'seven-pixel'"),
        (["demo", "--radii", "0,a"], "--radii: expected comma-separated radii"),
        (["demo", "--poison-rate", "2"], "--poison-rate: expected a number in [0, 1], got '2'"),
        (["launch"], "invalid choice: 'launch'"),
    ],
)
def test_wrong_arguments_exit_2_naming_the_option(args, needle, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert needle in capsys.readouterr().err


def test_module_entry_point_reports_wrong_input_in_a_subprocess():
    proc = subprocess.run(
        [sys.executable, "-m", "art_certssbd", "demo", "--epochs", "zero"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "--epochs: expected a positive integer, got 'zero'" in proc.stderr
