"""Bad input across the public API and the CLI: each case asserts the exception type, that the message names the
parameter and the offending value, and that the estimator (parameters, weights, fitted state, memory) and the files
on disk are unchanged after the failure.

Cases already covered elsewhere (not repeated here): tests/test_estimator.py (nb_models=0, scale 0 / -1, alpha 1.5 /
0, unknown bound / sigma_update / noise, sigma_bounds not around scale, non-identity preprocessing, x of the wrong
rank, NaN in x, x above clip_values, labels out of range, mismatched lengths, fractional labels, a one-class training
set, empty x, a model with the wrong output size, certify before fit, n above nb_models, set_params(alpha=1.5)),
tests/test_conformance.py (labels: every ART format accepted, unknown / NaN / fractional ones refused),
tests/test_cli.py (--nb-models 0 / --scale -1 / --alpha 1.5 / --trigger / --radii / --poison-rate in process,
--epochs zero in a subprocess), tests/test_stats.py and tests/test_memory.py (the pure functions' arguments),
tests/test_datasets.py (missing dataset directories, broken IDX / CIFAR / image files), tests/test_benchmark.py
(malformed benchmark config files: bad JSON, unknown keys, wrong types), tests/test_official_files.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import digits_estimator

from art_certssbd import CertificationMemory, CertSSBDEstimator
from art_certssbd._validation import NotFittedError
from art_certssbd.checkpoint import MANIFEST, CheckpointError
from art_certssbd.cli import main
from art_certssbd.datasets import load_digits, load_task
from art_certssbd.experiment import ExperimentConfig
from art_certssbd.models import DigitsCNN

SMALL = dict(nb_models=4, scale=0.25, alpha=0.2, random_state=3, sigma_steps=2, sigma_samples=2, warmup_epochs=1)
REPO = Path(__file__).resolve().parents[1]


class Flat(torch.nn.Module):
    """A model sized for 8x8 inputs only (a linear layer on 64 features)."""

    def __init__(self, nb_classes: int = 10):
        super().__init__()
        self.linear = torch.nn.Linear(64, nb_classes)

    def forward(self, x):
        return self.linear(x.flatten(1))


class TupleOut(Flat):
    def forward(self, x):
        return self.linear(x.flatten(1)), x


def make(net=None, *, input_shape=(1, 8, 8), nb_classes=10, **kwargs):
    return digits_estimator(net=net, input_shape=input_shape, nb_classes=nb_classes, **{**SMALL, **kwargs})


@pytest.fixture(scope="module")
def data():
    x_train, y_train, x_test, _ = load_digits(random_state=0)
    return x_train[:300], y_train[:300], x_test[:8]


@pytest.fixture(scope="module")
def fitted(data):
    est = make()
    est.fit(data[0], data[1], nb_epochs=4, batch_size=32)
    est.certify(data[2][:4])  # something in the memory
    assert len(est.memory_) > 0
    return est


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    directory = tmp_path_factory.mktemp("saved") / "ens"
    fitted.save_ensemble(directory)
    return directory


# ------------------------------------------------------------------------------------------------------ helpers
def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    try:
        return bool(a == b) or a is b
    except Exception:  # objects without a usable ==
        return a is b


def snapshot(est) -> dict:
    """Everything a failed call must leave alone: parameters, weights, mode, fitted state, memory."""
    snap = {
        "params": dict(est.get_params()),
        "weights": {k: v.clone() for k, v in est.base_model.state_dict().items()},
        "training": est.base_model.training,
        "attributes": sorted(vars(est)),
    }
    if hasattr(est, "ensemble_"):
        snap["members"] = [est.ensemble_.state_dict(k) for k in range(est.ensemble_.nb_models)]
        snap["fitted"] = (est.train_sigma_.copy(), list(est.test_noise_seeds_), est.random_state_)
    if getattr(est, "memory_", None) is not None:
        snap["memory"] = (est.memory_.centers, est.memory_.labels, est.memory_.radii, est.memory_.sigmas)
    return snap


def assert_unchanged(est, snap: dict) -> None:
    after = snapshot(est)
    assert after.keys() == snap.keys()
    assert after["attributes"] == snap["attributes"]
    assert after["params"].keys() == snap["params"].keys()
    for key, value in snap["params"].items():
        assert _same(after["params"][key], value), key
    assert after["training"] == snap["training"]
    for key, value in snap["weights"].items():
        assert torch.equal(after["weights"][key], value), key
    for before_k, after_k in zip(snap.get("members", []), after.get("members", [])):
        for key, value in before_k.items():
            assert torch.equal(after_k[key], value), key
    if "fitted" in snap:
        np.testing.assert_array_equal(after["fitted"][0], snap["fitted"][0])
        assert after["fitted"][1:] == snap["fitted"][1:]
    for a, b in zip(snap.get("memory", ()), after.get("memory", ())):
        np.testing.assert_array_equal(a, b)


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones too) and its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------ constructor parameters
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"nb_models": 2.5}, r"nb_models must be an integer >= 1, got 2.5"),
        ({"nb_models": True}, r"nb_models must be an integer >= 1, got True"),
        ({"draws_per_model": 0}, r"draws_per_model must be an integer >= 1, got 0"),
        ({"random_state": -1}, r"random_state must be an integer >= 0, got -1"),
        ({"random_state": "seven"}, r"random_state must be an integer >= 0, got 'seven'"),
        ({"sigma_steps": -1}, r"sigma_steps must be an integer >= 0, got -1"),
        ({"sigma_lr": 0.0}, r"sigma_lr must be a finite number > 0, got 0.0"),
        ({"sigma_samples": 0}, r"sigma_samples must be an integer >= 1, got 0"),
        ({"sigma_tol": -0.01}, r"sigma_tol must be a finite number >= 0, got -0.01"),
        ({"sigma_tol": float("nan")}, r"sigma_tol must be a finite number >= 0, got nan"),
        ({"sigma_tol": "1e-2"}, r"sigma_tol must be a finite number >= 0, got '1e-2'"),
        ({"sigma_patience": 0}, r"sigma_patience must be an integer >= 1, got 0"),
        ({"memory_budget": 0}, r"memory_budget must be an integer >= 1, got 0"),
        ({"warmup_epochs": -1}, r"warmup_epochs must be an integer >= 0, got -1"),
        ({"scale": float("nan")}, r"scale must be a finite number > 0, got nan"),
        ({"scale": float("inf")}, r"scale must be a finite number > 0, got inf"),
        ({"scale": "0.25"}, r"scale must be a finite number > 0, got '0.25'"),
        ({"alpha": float("nan")}, r"alpha must be in \(0, 1\), got nan"),
        ({"bound": None}, r"bound must be one of .*, got None"),
        ({"sigma_bounds": (0.1, 0.5, 1.0)}, r"sigma_bounds must be a pair \(low, high\), got \(0.1, 0.5, 1.0\)"),
        ({"sigma_bounds": 0.5}, r"sigma_bounds must be a pair \(low, high\), got 0.5"),
        ({"sigma_bounds": (-0.1, 1.0)}, r"sigma_bounds\[0\] must be a finite number > 0, got -0.1"),
        ({"vectorize": "no"}, r"vectorize must be True or False, got 'no'"),
        ({"use_memory": "yes"}, r"use_memory must be True or False, got 'yes'"),
        ({"nb_classes": "10"}, r"nb_classes must be an integer >= 2, got '10'"),
        ({"nb_classes": 10.0}, r"nb_classes must be an integer >= 2, got 10.0"),
        ({"input_shape": (1, -8, 8)}, r"input_shape must be a non-empty tuple of positive integers, got \(1, -8, 8\)"),
        ({"input_shape": "1,8,8"}, r"input_shape must be a non-empty tuple of positive integers, got '1,8,8'"),
        ({"device_type": "tpu"}, r"device_type must be one of \('cpu', 'gpu'\), got 'tpu'"),
        ({"amp": "bf16", "device_type": "cpu"}, r"amp='bf16' is only supported on CUDA"),
        ({"amp": "fp8"}, r"amp must be None or one of \('bf16', 'fp16'\), got 'fp8'"),
        ({"compile": "yes"}, r"compile must be True or False, got 'yes'"),
    ],
    ids=lambda v: str(v) if isinstance(v, dict) else "",
)
def test_nonsense_hyper_parameters_are_refused_at_construction(kwargs, match, no_native_bf16):
    net = DigitsCNN(10)
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        make(net, **kwargs)
    for k, v in net.state_dict().items():
        assert torch.equal(v, weights[k])


def test_set_params_with_a_nonsense_value_keeps_the_fitted_estimator(fitted):
    snap = snapshot(fitted)
    with pytest.raises(ValueError, match=r"vectorize must be True or False, got 'no'"):
        fitted.set_params(nb_models=4, vectorize="no")
    assert_unchanged(fitted, snap)


# --------------------------------------------------------------------------------------------- training data
@pytest.mark.parametrize(
    "x_fn, y_fn, match",
    [
        (lambda x: x.astype(str), None, r"x must hold real numbers, got array of shape \(300, 1, 8, 8\) and dtype <U"),
        (lambda x: x.astype(np.complex64), None, r"x must hold real numbers, .* dtype complex64"),
        (lambda x: x > 0.5, None, r"x must hold real numbers, .* dtype bool"),
        (lambda x: x.astype(object), None, r"x must hold real numbers, .* dtype object"),
        (lambda x: np.where(x > 0.9, -np.inf, x), None, r"x contains \d+ NaN or infinite value\(s\)"),
        (lambda x: x - 0.5, None, r"x has values outside clip_values=\(0.0, 1.0\): min -0.5, max 0.5"),
        (lambda x: x[:, None], None, r"x must have shape \(N, 1, 8, 8\), got array of shape \(300, 1, 1, 8, 8\)"),
        (None, lambda y: np.where(y[:, None] == 3, np.nan, np.eye(10)[y]), r"y contains NaN or infinite values: .*"),
        (None, lambda y: np.eye(10, dtype=object)[y], r"y must hold numbers, got .* dtype object"),
        (None, lambda y: np.eye(5)[y % 5], r"y must have shape \(300,\) or \(300, 10\), got .* shape \(300, 5\)"),
        (None, lambda y: y - 1, r"y has labels outside \[0, 9\] \(nb_classes=10\): \[-1"),
        (None, lambda y: y.astype(str), r"y must hold integer class indices, got .* dtype <U"),
        (None, lambda y: y > 4, r"y must hold integer class indices, got .* dtype bool"),
        (None, lambda y: y[:, None, None], r"y must have shape \(300,\) or \(300, 10\), got .* shape \(300, 1, 1\)"),
        (None, lambda y: y + 0.5, r"y must hold integer class indices, got the values \[\d\.5"),
        (None, lambda y: np.where(y == 3, np.nan, y), r"y must hold integer class indices, got the values \[nan"),
        (None, lambda y: np.int64(3), r"y must have shape \(300,\) or \(300, 10\), got array of shape \(\)"),
    ],
)
def test_bad_training_data_leaves_a_fitted_estimator_as_it_was(fitted, data, x_fn, y_fn, match):
    x = data[0] if x_fn is None else x_fn(data[0])
    y = data[1] if y_fn is None else y_fn(data[1])
    snap = snapshot(fitted)
    with pytest.raises(ValueError, match=match):
        fitted.fit(x, y, nb_epochs=1)
    assert_unchanged(fitted, snap)


def test_x_beyond_the_float32_range_is_refused():
    est = CertSSBDEstimator(Flat(), torch.nn.CrossEntropyLoss(), (1, 8, 8), 10, device_type="cpu", **SMALL)
    x = np.zeros((4, 1, 8, 8))
    x[0, 0, 0, 0] = 1e300  # finite in float64, inf in float32
    with pytest.raises(ValueError, match=r"x has values beyond the float32 range: max \|x\| 1e\+300"):
        est.fit(x, np.arange(4) % 2)
    assert not hasattr(est, "ensemble_")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 0}, r"batch_size must be an integer >= 1, got 0"),
        ({"batch_size": 2.0}, r"batch_size must be an integer >= 1, got 2.0"),
        ({"nb_epochs": 0}, r"nb_epochs must be an integer >= 1, got 0"),
    ],
)
def test_bad_fit_arguments(fitted, data, kwargs, match):
    snap = snapshot(fitted)
    with pytest.raises(ValueError, match=match):
        fitted.fit(data[0], data[1], **{"nb_epochs": 1, **kwargs})
    assert_unchanged(fitted, snap)


def test_fit_without_optimizer(data):
    est = CertSSBDEstimator(DigitsCNN(10), torch.nn.CrossEntropyLoss(), (1, 8, 8), 10, device_type="cpu", **SMALL)
    snap = snapshot(est)
    with pytest.raises(ValueError, match=r"optimizer is None"):
        est.fit(data[0], data[1])
    assert_unchanged(est, snap)


def test_fit_checks_a_draws_per_model_set_directly_against_the_bound(fitted, data):
    """``_check_params`` runs in the constructor and ``set_params``; an attribute set directly is checked by ``fit``
    before any work (a grown ensemble's rule would otherwise bound dependent draws as independent votes)."""
    est = make(bound="anytime")
    est.draws_per_model = 2
    snap = snapshot(est)
    with pytest.raises(ValueError, match=r"draws_per_model=2 needs bound='hoeffding' .*, got bound='anytime'"):
        est.fit(data[0], data[1], nb_epochs=1)
    assert_unchanged(est, snap)


def test_input_shape_the_model_cannot_process(data):
    net = Flat()
    est = make(net, input_shape=(1, 9, 9))
    net.train()
    snap = snapshot(est)
    x = np.zeros((4, 1, 9, 9), dtype=np.float32)
    with pytest.raises(ValueError, match=r"model cannot process inputs of input_shape=\(1, 9, 9\)"):
        est.fit(x, np.arange(4) % 2, nb_epochs=1)
    assert_unchanged(est, snap)  # the model is back in train mode
    assert net.training


def test_model_returning_a_tuple(data):
    est = make(TupleOut())
    snap = snapshot(est)
    with pytest.raises(ValueError, match=r"model returns outputs of shape tuple, expected \(N, nb_classes=10\)"):
        est.fit(data[0], data[1], nb_epochs=1)
    assert_unchanged(est, snap)


# --------------------------------------------------------------------------------------------- checkpoint_dir
def test_checkpoint_dir_that_is_a_file(fitted, data, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("keep me\n")
    snap = snapshot(fitted)
    with pytest.raises(CheckpointError, match=rf"checkpoint path '{path}' exists and is not a directory"):
        fitted.fit(data[0], data[1], nb_epochs=1, checkpoint_dir=path)
    assert_unchanged(fitted, snap)
    assert path.read_text() == "keep me\n"


def test_checkpoint_dir_holding_a_saved_ensemble(fitted, data, saved):
    before = tree_bytes(saved)
    snap = snapshot(fitted)
    with pytest.raises(CheckpointError, match=rf"'{saved}' holds a saved ensemble .*not a training checkpoint"):
        fitted.fit(data[0], data[1], nb_epochs=1, checkpoint_dir=saved)
    assert_unchanged(fitted, snap)
    assert tree_bytes(saved) == before


def test_checkpoint_dir_of_other_training_data(data, tmp_path):
    est = make()
    est.fit(data[0][:60], data[1][:60], nb_epochs=1, checkpoint_dir=tmp_path / "ck")
    before, snap = tree_bytes(tmp_path / "ck"), snapshot(est)
    with pytest.raises(CheckpointError, match=r"written with data_sha256='[0-9a-f]{64}', but this run has"):
        est.fit(data[0][60:], data[1][60:], nb_epochs=1, checkpoint_dir=tmp_path / "ck")
    assert_unchanged(est, snap)
    assert tree_bytes(tmp_path / "ck") == before


def test_numpy_integers_in_the_config_are_stored_as_json(data, tmp_path):
    # random_state=np.int64(3) used to fail with "Object of type int64 is not JSON serializable"
    est = make(random_state=np.int64(3), nb_models=np.int64(2))
    est.fit(data[0][:60], data[1][:60], nb_epochs=1, checkpoint_dir=tmp_path / "ck")
    config = json.loads((tmp_path / "ck" / MANIFEST).read_text())["config"]
    assert config["random_state"] == 3 and config["nb_models"] == 2


# ----------------------------------------------------------------------------------- prediction and gradients
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda e, x: e.certify(x, n=0), r"n must be an integer >= 1, got 0"),
        (lambda e, x: e.certify(x, n=2.0), r"n must be an integer >= 1, got 2.0"),
        (lambda e, x: e.certify(x, n=True), r"n must be an integer >= 1, got True"),
        (lambda e, x: e.certify(x, batch_size=0), r"batch_size must be an integer >= 1, got 0"),
        (lambda e, x: e.certify(x[:0], n=0), r"n must be an integer >= 1, got 0"),  # checked on an empty batch too
        (lambda e, x: e.predict(x, is_abstain="no"), r"is_abstain must be True or False, got 'no'"),
        (lambda e, x: e.predict(x[:0], is_abstain=1), r"is_abstain must be True or False, got 1"),
        (lambda e, x: e.certify(np.where(x > 0.5, np.nan, x)), r"x contains \d+ NaN or infinite value\(s\)"),
        (lambda e, x: e.certify(np.repeat(x, 3, axis=1)), r"x must have shape \(N, 1, 8, 8\), got .*\(8, 3, 8, 8\)"),
        (lambda e, x: e.predict(x.astype(np.complex128)), r"x must hold real numbers, .* dtype complex128"),
        (lambda e, x: e.loss_gradient(x, np.arange(7)), r"y has 7 labels but x has 8 samples"),
        (lambda e, x: e.loss_gradient(x, np.full(8, 1.5)), r"y must hold integer class indices, .* dtype float64"),
    ],
)
def test_bad_certify_predict_and_gradient_input_leaves_state_and_memory(fitted, data, call, match):
    snap = snapshot(fitted)
    with pytest.raises(ValueError, match=match):
        call(fitted, data[2])
    assert_unchanged(fitted, snap)


def test_an_empty_batch_gives_empty_results_as_in_art(fitted, data):
    # ART's predict and certify return empty arrays for an empty batch (they raised here); the memory is unchanged
    empty, snap = data[2][:0], snapshot(fitted)
    proba = fitted.predict(empty)
    assert proba.shape == (0, 10) and proba.dtype == np.float32
    assert fitted.predict(empty, is_abstain=False).shape == (0, 10)
    pred, radius = fitted.certify(empty)
    assert pred.shape == radius.shape == (0,) and pred.dtype == np.int64 and radius.dtype == np.float64
    details = fitted.certify(empty, return_details=True)
    assert len(details) == 0 and details.votes.shape == (0, 10)
    for name in ("radius", "radius_conservative", "sigma", "p_a_lower"):
        assert getattr(details, name).shape == (0,) and getattr(details, name).dtype == np.float64, name
    adaptive = fitted.certify_adaptive(empty, 0.1)
    assert len(adaptive) == 0 and adaptive.certified.dtype == bool and adaptive.counts.shape == (0, 10)
    assert adaptive.total_votes == 0
    assert_unchanged(fitted, snap)


def test_negative_strides_and_foreign_byte_order_are_accepted(fitted, data):
    # torch.from_numpy refuses both; the validation hands torch a contiguous native copy
    reference = fitted.certify(data[2], update_memory=False)
    flipped = fitted.certify(data[2][::-1], update_memory=False)
    np.testing.assert_array_equal(flipped[0], reference[0][::-1])
    swapped = fitted.certify(data[2].astype(">f4"), update_memory=False)
    np.testing.assert_array_equal(swapped[0], reference[0])


@pytest.mark.parametrize(
    "call",
    [lambda e, x: e.predict(x), lambda e, x: e.loss_gradient(x, np.zeros(len(x), dtype=int))],
    ids=["predict", "loss_gradient"],
)
def test_prediction_before_fit(data, call):
    est = make()
    snap = snapshot(est)
    with pytest.raises(NotFittedError, match=r"This CertSSBDEstimator instance is not fitted yet"):
        call(est, data[2])
    assert_unchanged(est, snap)


def test_save_before_fit_writes_nothing(tmp_path):
    est = make()
    with pytest.raises(NotFittedError, match=r"not fitted yet"):
        est.save_ensemble(tmp_path / "ens")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------- loading files
def _load_fails(directory: Path, exc, match: str, est=None):
    est = make() if est is None else est
    snap = snapshot(est)
    before = tree_bytes(directory) if directory.is_dir() else None
    with pytest.raises(exc, match=match):
        est.load_ensemble(directory)
    assert_unchanged(est, snap)
    if before is not None:
        assert tree_bytes(directory) == before


def test_load_a_missing_directory(tmp_path):
    _load_fails(tmp_path / "nowhere", FileNotFoundError, rf"checkpoint directory '{tmp_path / 'nowhere'}' does not")


def test_load_a_directory_without_manifest(tmp_path):
    (tmp_path / "member_00000.pt").write_bytes(b"junk")
    _load_fails(tmp_path, CheckpointError, rf"'{tmp_path}' holds no manifest.json: it is not an art-certssbd")


def test_load_an_unfinished_training_checkpoint(data, tmp_path):
    """A finished fit's checkpoint_dir loads (tests/test_checkpoint.py); an unfinished one is refused as such."""
    make().fit(data[0][:60], data[1][:60], nb_epochs=1, checkpoint_dir=tmp_path / "ck")
    manifest = json.loads((tmp_path / "ck" / MANIFEST).read_text())
    del manifest["entries"]["member_00000"]
    (tmp_path / "ck" / MANIFEST).write_text(json.dumps(manifest))
    _load_fails(tmp_path / "ck", ValueError, r"unfinished fit's checkpoint .*: resume it with fit\(")


@pytest.mark.parametrize("seed", ["7", True, 7.0, None])
def test_load_refuses_a_random_state_that_is_not_an_integer(saved, data, tmp_path, seed):
    """Both kinds, a save and a finished fit's checkpoint, refuse it before any member is read."""
    shutil.copytree(saved, tmp_path / "ens")
    make().fit(data[0][:60], data[1][:60], nb_epochs=1, checkpoint_dir=tmp_path / "ck")
    for directory in (tmp_path / "ens", tmp_path / "ck"):
        manifest = json.loads((directory / MANIFEST).read_text())
        manifest["config"]["random_state"] = seed
        (directory / MANIFEST).write_text(json.dumps(manifest))
        _load_fails(directory, CheckpointError, rf"random_state {seed!r} is not an integer")


def test_load_a_file_of_another_kind(tmp_path):
    CertificationMemory().save(tmp_path / "memory.npz")
    path = tmp_path / "memory.npz"
    before = path.read_bytes()
    _load_fails(path, CheckpointError, rf"checkpoint path '{path}' exists and is not a directory")
    assert path.read_bytes() == before


def test_load_a_truncated_member(saved, tmp_path, fitted):
    copy = tmp_path / "ens"
    shutil.copytree(saved, copy)
    member = copy / "member_00001.pt"
    member.write_bytes(member.read_bytes()[:-100])
    _load_fails(copy, CheckpointError, rf"'{member}' fails its SHA-256 check: the file is corrupted or was modified")
    _load_fails(copy, CheckpointError, r"fails its SHA-256 check", est=fitted)  # a fitted estimator keeps its state


def test_load_a_truncated_manifest(saved, tmp_path):
    copy = tmp_path / "ens"
    shutil.copytree(saved, copy)
    manifest = copy / MANIFEST
    manifest.write_bytes(manifest.read_bytes()[:200])
    _load_fails(copy, CheckpointError, rf"'{manifest}' is not a readable ensemble manifest")


@pytest.mark.parametrize(
    "change, match",
    [
        ({"format_version": 2}, r"has format_version 2; this version of art-certssbd .* reads format_version 1"),
        ({"format": "someone-elses-format"}, r"is not an art-certssbd-ensemble manifest \(format='someone-elses"),
        ({"kind": "archive"}, r"has kind 'archive', expected one of \('training', 'ensemble'\)"),
        ({"entries": []}, r"is malformed: 'config' and 'entries' must be JSON objects"),
    ],
)
def test_load_a_manifest_of_another_format_version_or_shape(saved, tmp_path, change, match):
    copy = tmp_path / "ens"
    shutil.copytree(saved, copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest.update(change)
    (copy / MANIFEST).write_text(json.dumps(manifest))
    _load_fails(copy, CheckpointError, match)


def test_load_into_an_estimator_of_another_size_or_architecture(saved):
    _load_fails(saved, ValueError, rf"'{saved}' holds 4 members, nb_models is 5", est=make(nb_models=5))
    _load_fails(saved, ValueError, r"holds an ensemble for nb_classes=10, .* not 5", est=make(nb_classes=5))
    _load_fails(saved, ValueError, r"holds an ensemble trained at scale=0.25, not 0.5", est=make(scale=0.5))
    _load_fails(saved, ValueError, r"state_dicts\[0\] does not fit the template architecture", est=make(Flat()))


def test_memory_load_of_other_files(saved, tmp_path):
    for path, detail in (
        (saved, "Is a directory"),
        (saved / "member_00000.pt", "missing fields"),
        (saved / MANIFEST, "not a zip file|pickled data|allow_pickle"),
    ):
        before = tree_bytes(saved)
        with pytest.raises(ValueError, match=rf"path '{path}' is not a CertificationMemory file: .*({detail})"):
            CertificationMemory.load(path)
        assert tree_bytes(saved) == before
    memory = CertificationMemory()
    memory.update(np.zeros((1, 3)), [0], [1.0])
    memory.save(tmp_path / "memory.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes((tmp_path / "memory.npz").read_bytes()[:-40])
    with pytest.raises(ValueError, match=rf"path '{truncated}' is not a CertificationMemory file"):
        CertificationMemory.load(truncated)


# -------------------------------------------------------------------------------------- datasets and configs
def test_missing_dataset_directories_through_the_task_presets(tmp_path, monkeypatch):
    missing = tmp_path / "no-mnist-here"
    with pytest.raises(FileNotFoundError, match=rf"root directory '{missing}' does not exist"):
        load_task("mnist-1v0", root=missing)
    monkeypatch.setenv("ART_CERTSSBD_DATA", str(missing))  # the default directory, from the environment
    with pytest.raises(FileNotFoundError, match=rf"'{missing}' does not exist"):
        load_task("mnist-1v0")
    with pytest.raises(ValueError, match=r"task 'cifar10-airplane-v-bird' needs root"):
        load_task("cifar10-airplane-v-bird")
    with pytest.raises(ValueError, match=r"unknown task 'mnist-7v1'"):
        load_task("mnist-7v1")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"trigger": "nine-pixel"}, r"trigger must be one of .*, got 'nine-pixel'"),
        ({"methods": ("rab", "magic")}, r"methods must be among .*, got \['magic'\]"),
        ({"nb_models": 0}, r"nb_models must be an integer >= 1, got 0"),
        ({"alpha": 1.5}, r"alpha must be in \(0, 1\), got 1.5"),
        ({"scale": -0.25}, r"scale must be a finite number > 0, got -0.25"),
        ({"poison_rate": 2.0}, r"poison_rate must be in \[0, 1\], got 2.0"),
        ({"bound": "wilson"}, r"bound must be one of .*, got 'wilson'"),
        ({"device_type": "tpu"}, r"device_type must be one of \('cpu', 'gpu'\), got 'tpu'"),
        ({"radii": (0.0, -0.5)}, r"radii must be a non-empty sequence of finite numbers >= 0, got \(0.0, -0.5\)"),
    ],
)
def test_malformed_experiment_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ExperimentConfig(**kwargs)


def test_malformed_benchmark_config_exits_2_before_any_work(tmp_path, capsys):
    # the third run is nonsense: refused when the file is read, not after the first two runs have been computed
    config = {"name": "bad", "runs": [{"nb_models": 2}, {"nb_models": 3}, {"alpha": 1.5}]}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(config))
    from certssbd_bench.command import main as benchmark_main  # python benchmarks/run.py mnist ...

    with pytest.raises(SystemExit) as exit_info:
        benchmark_main(["mnist", "--config", str(path), "--output", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert rf"{path} runs[2]: alpha must be in (0, 1), got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and json.loads(path.read_text()) == config


# ------------------------------------------------------------------------------------------------------- CLI
def test_cli_nb_models_0_in_a_subprocess_exits_2_naming_the_option(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "art_certssbd", "demo", "--nb-models", "0", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 2
    assert "argument --nb-models: expected a positive integer, got '0'" in proc.stderr
    assert proc.stdout == "" and not out.exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["demo", "--seed", "-1"], "argument --seed: expected an integer >= 0, got '-1'"),
        (["demo", "--nb-models"], "argument --nb-models: expected one argument"),
        (["demo", "--delta", "nan"], "argument --delta: expected a finite number > 0, got 'nan'"),
        (["demo", "--bound", "wilson"], "argument --bound: invalid choice: 'wilson'"),
        (["demo", "--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
        (["demo", "--bogus", "1"], "unrecognized arguments: --bogus 1"),
    ],
)
def test_cli_bad_arguments_exit_2_naming_the_option(args, needle, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert needle in capsys.readouterr().err


def test_cli_output_below_a_file_is_refused_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "results.txt"
    blocker.write_text("precious\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--output", str(blocker / "out")])
    assert exit_info.value.code == 2
    assert f"argument --output: expected a directory, but '{blocker}' is a file" in capsys.readouterr().err
    assert blocker.read_text() == "precious\n"
