"""Resume after a real kill: ``fit`` with a checkpoint directory in a subprocess, SIGKILL once some but not all
members are stored, run the same command again, and compare with an uninterrupted run.

The in-process variant (members dropped from the manifest) is tests/test_estimator.py
``test_checkpoint_resume_gives_the_same_ensemble``; crashes inside single writes are in tests/test_checkpoint.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import assert_runs_identical

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "resume_fit.py"


def _helper():
    spec = importlib.util.spec_from_file_location("resume_fit", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _members_in(directory: Path) -> int:
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
    return sum(key.startswith("member_") for key in manifest["entries"])


def _command(checkpoint_dir: Path, output: Path, options: list[str]) -> list[str]:
    return [sys.executable, str(SCRIPT), str(checkpoint_dir), str(output), "--pause", "0.2", *options]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(HERE.parent)}


@pytest.mark.parametrize(
    "options, kill_at",
    [
        pytest.param([], 3, id="loop"),
        # vmap, 3 members per chunk, killed after the first save of the second chunk: the rerun trains other chunks
        # ([4, 5, 6], ...) than the uninterrupted run ([3, 4, 5], ...)
        pytest.param(["--vectorize", "--chunk", "3"], 4, id="vmap-chunks", marks=pytest.mark.slow),
    ],
)
def test_sigkill_mid_training_then_rerun_gives_the_uninterrupted_ensemble(tmp_path, options, kill_at):
    helper = _helper()
    total = helper.NB_MODELS
    checkpoint_dir, output = tmp_path / "ck", tmp_path / "out.pt"

    # Step 1: start the fit and kill it (SIGKILL: no clean-up code runs) once kill_at or more members are stored.
    proc = subprocess.Popen(
        _command(checkpoint_dir, output, options),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
        cwd=HERE.parent,
    )
    deadline = time.monotonic() + 120
    try:
        while _members_in(checkpoint_dir) < kill_at:
            if proc.poll() is not None:
                pytest.fail(f"the fit ended before it could be killed:\n{proc.stderr.read().decode()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no member was stored within 120 s")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not output.exists()
    finished = _members_in(checkpoint_dir)
    assert kill_at <= finished < total, f"{finished} members stored at the kill"
    if "--chunk" in options:
        assert finished % int(options[options.index("--chunk") + 1]) != 0, "the kill did not fall inside a chunk"

    # Step 2: the same command again runs to completion and trains only the missing members.
    rerun = subprocess.run(
        _command(checkpoint_dir, output, options),
        capture_output=True,
        text=True,
        env=_env(),
        cwd=HERE.parent,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert re.search(rf"Training {total - finished} of {total} members", rerun.stderr), rerun.stderr[-3000:]
    assert _members_in(checkpoint_dir) == total
    listed = {e["file"] for e in json.loads((checkpoint_dir / "manifest.json").read_text())["entries"].values()}
    assert {p.name for p in checkpoint_dir.iterdir()} == listed | {"manifest.json"}  # no debris of the killed run

    # Step 3: identical to an uninterrupted run (in this process, no checkpoint): members, base model, sigmas, votes.
    chunk = int(options[options.index("--chunk") + 1]) if "--chunk" in options else None
    resumed = torch.load(output, weights_only=True)
    reference = helper.run(None, **helper.options("--vectorize" in options, chunk))
    assert len(reference["members"]) == total
    assert_runs_identical(resumed, reference)


def test_random_state_none_resumes_with_the_seed_of_the_checkpoint(tmp_path, caplog):
    # random_state=None draws a seed; "the same command again" must continue that run, not refuse a new seed
    helper = _helper()
    x, y, _ = helper.data()
    first = helper.make_estimator(random_state=None, nb_models=3, sigma_steps=0, warmup_epochs=0)
    first.fit(x[:80], y[:80], nb_epochs=1, batch_size=40, checkpoint_dir=tmp_path / "ck")
    manifest_path = tmp_path / "ck" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["entries"]["member_00002"]  # as if killed before the last member
    manifest_path.write_text(json.dumps(manifest))
    again = helper.make_estimator(random_state=None, nb_models=3, sigma_steps=0, warmup_epochs=0)
    with caplog.at_level("INFO", logger="art_certssbd"):
        again.fit(x[:80], y[:80], nb_epochs=1, batch_size=40, checkpoint_dir=tmp_path / "ck")
    assert "Training 1 of 3 members" in caplog.text
    assert again.random_state_ == first.random_state_ == manifest["config"]["random_state"]
    for k in range(3):
        a, b = first.ensemble_.state_dict(k), again.ensemble_.state_dict(k)
        assert all(torch.equal(a[name], b[name]) for name in a)
