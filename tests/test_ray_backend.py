"""The Ray executor (art_certssbd.ray_backend) on a local Ray instance with 2 CPUs: the same ensemble, sigmas and
certificates as the local path, bitwise, with retried tasks and a killed worker; and a clear error without Ray."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from helpers import FailOnce, digits_estimator

from art_certssbd import CertSSBDEstimator
from art_certssbd.datasets import load_digits
from art_certssbd.models import DigitsCNN
from art_certssbd.ray_backend import RayExecutor, import_ray, resolve_executor

ray = pytest.importorskip("ray", reason="the Ray tests need the ray extra (pip install 'art-certssbd[ray]')")

SMALL = dict(nb_models=4, scale=0.25, alpha=0.05, random_state=5, sigma_steps=2, sigma_samples=4, warmup_epochs=1)


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One local Ray instance for the module (2 CPUs, no dashboard); the tests' helpers travel by value."""
    import helpers

    if ray.is_initialized():  # e.g. started by an estimator with executor="ray" in another test module
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.cloudpickle.register_pickle_by_value(helpers)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def digits():
    x_train, y_train, x_test, _ = load_digits(random_state=0)
    return x_train[:200], y_train[:200], x_test[:24]


def _net(marker=None, mode="raise"):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = DigitsCNN(10)
    return net if marker is None else FailOnce(net, marker, mode)


def _fit(digits, executor, net, growth=None, **params):
    """A fitted estimator with torch on one thread (a task's thread count: CPU kernels round by thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        est = digits_estimator(net=net, executor=executor, **{**SMALL, **params})
        est.fit(digits[0], digits[1], nb_epochs=1, batch_size=50, growth=growth)
        return est, est.certify(digits[2], return_details=True)
    finally:
        torch.set_num_threads(threads)


def _assert_same(a, b):
    """Bitwise the same fitted ensemble, training sigmas and certificates."""
    ra, rb = a[1], b[1]
    a, b = a[0], b[0]
    np.testing.assert_array_equal(a.train_sigma_, b.train_sigma_)
    for k in range(a.nb_models):
        for name, tensor in a.ensemble_.state_dict(k).items():
            assert torch.equal(b.ensemble_.state_dict(k)[name], tensor), (k, name)
    for field in ("pred", "radius", "radius_conservative", "sigma", "votes"):
        np.testing.assert_array_equal(getattr(ra, field), getattr(rb, field), err_msg=field)


@pytest.fixture(scope="module")
def reference(digits):
    return _fit(digits, "local", _net())


def test_ray_fit_and_certify_equal_the_local_ones_bitwise(local_ray, digits, reference):
    """Members trained two per task, sigmas sharded by 16 samples, votes three members per task: the same ensemble,
    sigmas and certificates as the local path."""
    executor = RayExecutor(num_cpus=1, members_per_task=2, samples_per_task=16)
    on_ray = _fit(digits, executor, _net())
    _assert_same(reference, on_ray)
    voting = reference[0]
    voting.set_params(executor=RayExecutor(num_cpus=1, members_per_task=3))
    assert hasattr(voting, "ensemble_")  # a speed-only parameter: the fitted ensemble is kept
    again = voting.certify(digits[2], return_details=True, update_memory=False)
    np.testing.assert_array_equal(again.votes, reference[1].votes)
    voting.set_params(executor="local")


def test_early_stopped_sigmas_on_ray_equal_the_local_ones(local_ray, digits):
    """``sigma_tol``'s per-sample early stop, sharded over 4 tasks of 16 samples: each sample's ascent is its own (the
    refilled batches only change float rounding), so the sigmas equal the local ones."""
    from art_certssbd.sigma import optimize_sigma

    x = torch.from_numpy(digits[0][:64])
    options = dict(steps=8, lr=0.05, n_samples=4, sigma_max=0.3, random_state=3, early_stop=True, tol=2e-2, patience=2,
                   batch_size=8)  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = optimize_sigma(_net(), x, 0.25, **options)
        sharded = RayExecutor(num_cpus=1, samples_per_task=16).optimize_sigma(_net(), x, sigma0=0.25, **options)
    finally:
        torch.set_num_threads(threads)
    full = optimize_sigma(_net(), x, 0.25, **{**options, "early_stop": False})
    assert not torch.allclose(local, full)  # the early stop did stop some samples
    torch.testing.assert_close(sharded, local, rtol=1e-6, atol=1e-7)


def test_a_grown_fit_on_ray_stops_where_the_local_one_does(local_ray, digits):
    """fit(..., growth=...) on Ray (each wave one batch of member tasks): the same stopping size, history and members
    as the local grown fit."""
    from art_certssbd.growth import Growth

    growth = Growth(digits[0][150:], digits[1][150:], radius=0.1, wave_size=2, tol=1.0, patience=2)
    params = dict(growth=growth, nb_models=8, sigma_steps=0, bound="anytime")
    local, on_ray = (
        _fit(digits, executor, _net(), **params)[0]
        for executor in ("local", RayExecutor(num_cpus=1, members_per_task=1))
    )
    assert on_ray.nb_models_ == local.nb_models_ == 4 and on_ray.growth_history_ == local.growth_history_
    for k in range(4):
        for name, tensor in local.ensemble_.state_dict(k).items():
            assert torch.equal(on_ray.ensemble_.state_dict(k)[name], tensor), (k, name)


@pytest.mark.parametrize("mode", ["raise", "exit"])
def test_a_failed_task_or_a_killed_worker_is_retried_with_the_same_result(local_ray, digits, tmp_path, mode):
    """The first member task fails (an exception, or the worker process dies): Ray retries it and the ensemble is the
    one of an uninterrupted local run."""
    marker = tmp_path / "failed"
    local = _fit(digits, "local", _net(marker, mode), nb_models=2, sigma_steps=0)
    on_ray = _fit(digits, RayExecutor(num_cpus=1, max_retries=2), _net(marker, mode), nb_models=2, sigma_steps=0)
    assert marker.exists(), "the planned failure did not happen"
    _assert_same(local, on_ray)


def test_an_interrupted_ray_fit_resumes_with_only_the_missing_members(local_ray, digits, tmp_path, monkeypatch):
    """Ctrl-C after two members came back: they are checkpointed, and the restart trains only the other two, ending
    with the ensemble of an uninterrupted run."""
    from art_certssbd.checkpoint import EnsembleCheckpoint

    checkpoint, executor = tmp_path / "ck", RayExecutor(num_cpus=1, samples_per_task=64)
    calls, original = [], RayExecutor.train_members

    def interrupted_once(self, template, x, y, sigma, members, **kwargs):
        calls.append(list(members))
        for done, item in enumerate(original(self, template, x, y, sigma, members, **kwargs)):
            if len(calls) == 1 and done == 2:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(RayExecutor, "train_members", interrupted_once)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(KeyboardInterrupt):
            digits_estimator(net=_net(), executor=executor, **SMALL).fit(
                digits[0], digits[1], nb_epochs=1, batch_size=50, checkpoint_dir=checkpoint
            )
        saved = EnsembleCheckpoint.open(checkpoint, kind="training").finished_members()
        resumed = digits_estimator(net=_net(), executor=executor, **SMALL)
        resumed.fit(digits[0], digits[1], nb_epochs=1, batch_size=50, checkpoint_dir=checkpoint)
        uninterrupted = digits_estimator(net=_net(), executor="local", **SMALL)
        uninterrupted.fit(digits[0], digits[1], nb_epochs=1, batch_size=50)
    finally:
        torch.set_num_threads(threads)
    assert len(saved) == 2 and calls[0] == [0, 1, 2, 3]
    assert sorted(calls[1]) == sorted(set(range(4)) - set(saved))
    for k in range(SMALL["nb_models"]):
        for name, tensor in uninterrupted.ensemble_.state_dict(k).items():
            assert torch.equal(resumed.ensemble_.state_dict(k)[name], tensor)


def test_streamed_votes_under_a_small_budget_equal_the_in_memory_votes(local_ray, digits, reference, tmp_path):
    """A saved ensemble loaded with stream=True votes one or two members at a time, locally and on Ray, with the
    votes and certificates of the ensemble in memory."""
    est, result = reference
    est.save_ensemble(tmp_path / "saved")
    member_bytes = sum(t.numel() * t.element_size() for t in est.ensemble_.state_dict(0).values())
    for executor, budget in (("local", 3 * member_bytes), ("local", 6 * member_bytes), (RayExecutor(num_cpus=1), 1)):
        streamed = digits_estimator(net=_net(), executor=executor, memory_budget=budget, **SMALL)
        streamed.load_ensemble(tmp_path / "saved", stream=True)
        assert type(streamed.ensemble_).__name__ == "SavedEnsemble"
        assert streamed.ensemble_.members_per_block == max(1, budget // (3 * member_bytes))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            again = streamed.certify(digits[2], return_details=True)
        finally:
            torch.set_num_threads(threads)
        for field in ("pred", "radius", "radius_conservative", "votes"):
            np.testing.assert_array_equal(getattr(again, field), getattr(result, field), err_msg=field)


def test_the_cli_on_ray_at_the_default_threads_equals_the_local_cli_bitwise(local_ray, tmp_path):
    """``certssbd fit/certify --executor ray``: tasks use the driver's torch thread count (here 2, as a CLI run on this
    machine), so the Ray fit and certificates are bitwise the local ones (with one thread per task they were not)."""
    import json

    from art_certssbd.checkpoint import EnsembleCheckpoint
    from art_certssbd.cli import main

    common = ["--data", "digits", "--classes", "0,1", "--limit", "120", "--nb-models", "2", "--epochs", "1"]
    common += ["--sigma-steps", "1", "--sigma-samples", "2", "--warmup-epochs", "1", "--device", "cpu", "--quiet"]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for name, extra in (("local", []), ("ray", ["--executor", "ray"])):
            assert main(["fit", *common, *extra, "--output", str(tmp_path / name)]) == 0
            assert main(["certify", str(tmp_path / name), "--limit", "20", "--quiet", *extra]) == 0
    finally:
        torch.set_num_threads(threads)
    stores = [EnsembleCheckpoint.open(tmp_path / name / "ensemble") for name in ("local", "ray")]
    for k in range(2):
        a, b = (store.load_member(k) for store in stores)
        assert all(torch.equal(a[key], b[key]) for key in a), k
    assert torch.equal(stores[0].load("train_sigma"), stores[1].load("train_sigma"))
    local, on_ray = (np.load(tmp_path / name / "certify" / "results.npz") for name in ("local", "ray"))
    for key in ("clean_pred", "clean_radius", "clean_sigma", "votes"):
        if key in local.files:
            np.testing.assert_array_equal(local[key], on_ray[key], err_msg=key)
    config = (tmp_path / "ray" / "config.toml").read_text()
    assert 'executor = "ray"' in config
    assert json.loads((tmp_path / "ray" / "fit.json").read_text())["options"]["executor"] == "ray"


def test_without_ray_the_error_names_the_extra(monkeypatch, digits):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'art-certssbd\[ray\]'"):
        import_ray()
    est = digits_estimator(net=_net(), executor="ray", **SMALL)

    def no_work(*args, **kwargs):
        raise AssertionError("the warm-up ran before the missing Ray was reported")

    monkeypatch.setattr("art_certssbd.pipeline.fit_model", no_work)
    with pytest.raises(ImportError, match=r"art-certssbd\[ray\]"):
        est.fit(digits[0], digits[1], nb_epochs=1, batch_size=50)
    assert not hasattr(est, "ensemble_")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_cpus": -1}, "num_cpus must be a number >= 0"),
        ({"members_per_task": 0}, "members_per_task must be an integer >= 1"),
        ({"samples_per_task": 2.5}, "samples_per_task must be an integer >= 1 or None"),
        ({"max_retries": True}, "max_retries must be an integer >= 0"),
        ({"num_gpus": -0.5}, "num_gpus must be a number >= 0 or None"),
    ],
)
def test_bad_executor_settings_are_refused_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RayExecutor(**kwargs)


def test_executor_parameter_is_checked_at_construction():
    assert resolve_executor("local") is None and resolve_executor("ray") == RayExecutor()
    with pytest.raises(ValueError, match="executor must be 'local', 'ray' or a RayExecutor, got executor='dask'"):
        digits_estimator(CertSSBDEstimator, net=_net(), executor="dask")


def test_importing_the_package_does_not_import_ray():
    import subprocess

    code = "import sys, art_certssbd, art_certssbd.cli; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
