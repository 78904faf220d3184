"""Determinism on CPU: the same random_state gives the same sigmas, members, votes and radii across processes and
across the loop and vmap paths; another random_state changes them; numpy's, torch's and Python's global generators
are neither used nor changed.

tests/test_estimator.py already checks one process (two fits) and one pair of loop/vmap members at 1e-4.
"""

from __future__ import annotations

import importlib.util
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_runs_identical

from art_certssbd import CertSSBDEstimator, RABEstimator

HERE = Path(__file__).resolve().parent


def _helper():
    spec = importlib.util.spec_from_file_location("resume_fit", HERE / "resume_fit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


helper = _helper()


@pytest.fixture(scope="module")
def reference():
    """One in-process run of the helper's fit + certify on digits (vmap path)."""
    return helper.run(None, vectorize=True)


def test_two_processes_give_bitwise_identical_results(reference, tmp_path):
    out = tmp_path / "out.pt"
    proc = subprocess.run(
        [sys.executable, str(HERE / "resume_fit.py"), str(tmp_path / "ck"), str(out), "--vectorize"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=HERE.parent,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_runs_identical(torch.load(out, weights_only=True), reference)
    assert reference["train_sigma"].max() > reference["train_sigma"].min()  # the sigma optimiser did move sigma


def test_another_random_state_changes_sigmas_members_votes_and_radii(reference):
    other = helper.run(None, vectorize=True, random_state=12)
    assert not torch.equal(other["train_sigma"], reference["train_sigma"])
    assert not torch.equal(other["sigma"], reference["sigma"])
    for ma, mb in zip(other["members"], reference["members"]):
        assert all(not torch.equal(ma[name], mb[name]) for name in ma)
    assert not torch.equal(other["votes"], reference["votes"])
    assert not torch.equal(other["radius"], reference["radius"])


# ------------------------------------------------------------------------------ loop vs vmap, well separated
class MLP(torch.nn.Module):
    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.hidden = torch.nn.Linear(16, 16)
        self.dropout = torch.nn.Dropout(dropout)
        self.out = torch.nn.Linear(16, 2)

    def forward(self, x):
        return self.out(self.dropout(torch.relu(self.hidden(x.flatten(1)))))


def separated(n: int, seed: int):
    """Two classes of 4x4 images far apart (pixels in [0, 0.3] vs [0.7, 1])."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.uniform(0.0, 0.3, size=(n, 1, 4, 4)) + 0.7 * y[:, None, None, None]
    return x.astype(np.float32), y.astype(np.int64)


def make_mlp(cls=CertSSBDEstimator, dropout: float = 0.0, net=None, **kwargs):
    if net is None:
        with torch.random.fork_rng(devices=[]):  # the test's own model construction stays off the global generator
            net = MLP(dropout)
    params = dict(nb_models=8, scale=0.3, alpha=0.05, random_state=2)
    if cls is CertSSBDEstimator:
        params.update(sigma_steps=5, sigma_samples=4, sigma_lr=0.05, warmup_epochs=2)
    return cls(
        net,
        torch.nn.CrossEntropyLoss(),
        (1, 4, 4),
        2,
        optimizer=torch.optim.Adam(net.parameters(), lr=1e-2),
        clip_values=(0.0, 1.0),
        device_type="cpu",
        **{**params, **kwargs},
    )


@pytest.mark.parametrize("cls", [CertSSBDEstimator, RABEstimator])
def test_loop_and_vmap_paths_agree(cls):
    x, y = separated(200, 0)
    x_test, y_test = separated(40, 1)
    loop, vmap = make_mlp(cls, vectorize=False), make_mlp(cls, vectorize=True)
    for est in (loop, vmap):
        est.fit(x, y, nb_epochs=10, batch_size=32)
    np.testing.assert_array_equal(loop.train_sigma_, vmap.train_sigma_)  # the sigma path does not depend on it
    for k in range(8):  # every member, to floating-point tolerance
        a, b = loop.ensemble_.state_dict(k), vmap.ensemble_.state_dict(k)
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-5)
    ra = loop.certify(x_test, return_details=True, update_memory=False)
    rb = vmap.certify(x_test, return_details=True, update_memory=False)
    assert np.all(ra.votes.max(axis=1) == 8) and np.all(ra.pred == y_test)  # well separated: unanimous and right
    np.testing.assert_array_equal(ra.votes, rb.votes)
    np.testing.assert_array_equal(ra.sigma, rb.sigma)
    np.testing.assert_array_equal(ra.radius, rb.radius)
    np.testing.assert_array_equal(ra.pred, rb.pred)


def test_dropout_models_are_deterministic_and_path_independent():
    # Under vmap one generator would draw the dropout masks of a whole chunk (member k would depend on the chunk),
    # so dropout models train on the loop path; voting runs the members in eval mode on both paths.
    x, y = separated(120, 2)
    x_test, _ = separated(20, 3)
    results = []
    for kwargs in ({"vectorize": True}, {"vectorize": True, "memory_budget": x.nbytes}, {"vectorize": False}):
        est = make_mlp(dropout=0.5, **kwargs)
        est.fit(x, y, nb_epochs=2, batch_size=32)
        results.append((est, est.certify(x_test, return_details=True, update_memory=False)))
    (first, ra), *others = results
    for est, rb in others:
        for k in range(8):
            a, b = first.ensemble_.state_dict(k), est.ensemble_.state_dict(k)
            assert all(torch.equal(a[name], b[name]) for name in a)
        np.testing.assert_array_equal(ra.votes, rb.votes)
    again = first.certify(x_test, return_details=True, update_memory=False)
    np.testing.assert_array_equal(again.votes, ra.votes)


# ----------------------------------------------------------------------------------------- global generators
def _global_state():
    return torch.random.get_rng_state().clone(), np.random.get_state(), random.getstate()


def _assert_same_state(a, b) -> None:
    assert torch.equal(a[0], b[0]), "torch's global generator changed"
    assert a[1][0] == b[1][0] and np.array_equal(a[1][1], b[1][1]) and a[1][2:] == b[1][2:], "numpy's changed"
    assert a[2] == b[2], "Python's random changed"


def test_no_global_generator_is_touched(tmp_path):
    x, y = separated(80, 4)
    x_test, y_test = separated(10, 5)
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    net, other = MLP(0.5), MLP(0.5)
    before = _global_state()
    est = make_mlp(net=net, random_state=None)  # random_state=None draws its seed from OS entropy
    _assert_same_state(before, _global_state())
    est.fit(x, y, nb_epochs=1, batch_size=32, checkpoint_dir=tmp_path / "ck")
    _assert_same_state(before, _global_state())
    est.certify(x_test)
    est.predict(x_test)
    est.loss_gradient(x_test, y_test)
    est.save_ensemble(tmp_path / "ens")
    make_mlp(net=other).load_ensemble(tmp_path / "ens")
    _assert_same_state(before, _global_state())


def test_global_seeds_do_not_change_the_results():
    x, y = separated(80, 6)
    x_test, _ = separated(10, 7)
    runs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        est = make_mlp(dropout=0.5)
        est.fit(x, y, nb_epochs=1, batch_size=32)
        runs.append((est, est.certify(x_test, return_details=True, update_memory=False)))
    (a, ra), (b, rb) = runs
    np.testing.assert_array_equal(a.train_sigma_, b.train_sigma_)
    for k in range(8):
        sa, sb = a.ensemble_.state_dict(k), b.ensemble_.state_dict(k)
        assert all(torch.equal(sa[name], sb[name]) for name in sa)
    np.testing.assert_array_equal(ra.votes, rb.votes)
    np.testing.assert_array_equal(ra.radius, rb.radius)
