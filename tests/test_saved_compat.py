"""Ensembles saved by an older art-certssbd load in today's and answer as that version did.

``tests/data/saved_e46f52c`` holds four ensembles written by ``save_ensemble`` / ART's ``save`` at commit e46f52c
(package 0.1.0, checkpoint format version 1) and what that code answered on ten digits (``expected.npz``); its
``make.py`` wrote them (run against a checkout of that commit). Each is loaded here into a new estimator of the same
parameters, in memory and streamed, and ``predict``, ``predict(is_abstain=False)``, every field of ``certify(...,
return_details=True)`` and the memory's regions are compared bit for bit with the recorded ones: a load that reads a
field differently (seeds, sigmas, noise copies, memory, a member, the grown flag) changes some of them.

Two answers changed on purpose since e46f52c; for them the test checks today's definition applied to the recorded
answers, so a load that changes anything else still fails:

* ``predict`` with a non-empty memory (cb5960b, issue 22.1): today it answers as ``certify(update_memory=False)``
  (the memory's trimmed class), at e46f52c it ignored the memory; with ``is_abstain=False`` the majority vote is
  replaced inside a stored region of another label.
* ``p_a_lower`` of the ``"anytime"`` bound (9a24c08): ``confseq.lower`` now tests membership as ``log_evidence``
  computes it, so the returned end is outside the confidence sequence to the last bit; it moved by at most 1e-16.

The recorded numbers come from one machine (``written_by`` in ``expected.npz``: torch version, CPU capability, CPU
model).
Elsewhere torch's CPU kernels may round differently: the float answers are then compared to 1e-5 (relative) and
the integer ones (classes, votes, seeds) still exactly; what was read from disk (the memory as saved) is compared
exactly everywhere.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from art_certssbd import CertSSBDEstimator, RABEstimator
from art_certssbd.checkpoint import MANIFEST, EnsembleCheckpoint

DATA = Path(__file__).resolve().parent / "data" / "saved_e46f52c"


def _load_make():
    """make.py, the fixture's writer, as a module: its names (ensembles, fields, network, CPU model) are the test's."""
    spec = importlib.util.spec_from_file_location("saved_e46f52c_make", DATA / "make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines names only; main() runs under __main__
    return module


MAKE = _load_make()
NAMES = tuple(MAKE.ENSEMBLES)
RESULT_FIELDS, MEMORY_FIELDS = MAKE.RESULT_FIELDS, MAKE.MEMORY_FIELDS


def _cpu_capability() -> str | None:
    return getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)()


with np.load(DATA / "expected.npz") as _data:
    EXPECTED = {key: _data[key] for key in _data.files}
WRITTEN_BY = json.loads(str(EXPECTED["written_by"]))
#: The torch version, CPU kernels and CPU model that wrote the recorded numbers: only there are float answers
#: compared bit for bit.
SAME_KERNELS = (WRITTEN_BY["torch"], WRITTEN_BY["cpu_capability"], WRITTEN_BY.get("cpu_model")) == (
    torch.__version__,
    _cpu_capability(),
    MAKE.cpu_model(),
)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """make.py recorded on one torch thread."""


def estimator(name: str, **overrides):
    """A new estimator of the parameters ``name`` was saved with (recorded by make.py)."""
    params = {**json.loads(str(EXPECTED[f"{name}__params"])), **overrides}
    cls = {"CertSSBDEstimator": CertSSBDEstimator, "RABEstimator": RABEstimator}[params.pop("cls")]
    model = MAKE.net()
    return cls(model, nn.CrossEntropyLoss(), (1, 8, 8), 10, optimizer=torch.optim.Adam(model.parameters(), lr=0.03),
               clip_values=(0.0, 1.0), device_type="cpu", **params)  # fmt: skip


def loaded(name: str, stream: bool = False, **overrides):
    est = estimator(name, **overrides)
    est.load_ensemble(DATA / name, stream=stream)
    return est


def assert_recorded(actual, key: str, exact: bool = False) -> None:
    """``actual`` equals the recorded ``key``: bit for bit where the recording's kernels are these (or ``exact``, or
    integers), to 1e-5 otherwise."""
    want, actual = EXPECTED[key], np.asarray(actual)
    assert actual.shape == want.shape and actual.dtype == want.dtype, (key, actual.shape, actual.dtype, want.dtype)
    if exact or SAME_KERNELS or want.dtype.kind in "iub":
        np.testing.assert_array_equal(actual, want, err_msg=key)
    else:
        np.testing.assert_allclose(actual, want, rtol=1e-5, atol=1e-7, err_msg=f"{key} (recorded on {WRITTEN_BY})")


def one_hot(pred: np.ndarray) -> np.ndarray:
    out = np.zeros((len(pred), 10), dtype=np.float32)
    keep = pred >= 0
    out[np.flatnonzero(keep), pred[keep]] = 1.0
    return out


def test_the_fixture_was_written_by_e46f52c():
    """The folder is what it claims (not rewritten by today's code): package 0.1.0, format version 1, and the
    configs of that version (noise copies recorded, a grown ensemble flagged)."""
    assert WRITTEN_BY["commit"].startswith("e46f52c") and WRITTEN_BY["package_version"] == "0.1.0"
    for name in NAMES:
        manifest = json.loads((DATA / name / MANIFEST).read_text())
        assert (manifest["format_version"], manifest["kind"], manifest["package_version"]) == (1, "ensemble", "0.1.0")
        assert manifest["config"]["nb_models"] == int(EXPECTED[f"{name}__nb_models_"])
    configs = {name: json.loads((DATA / name / MANIFEST).read_text())["config"] for name in NAMES}
    assert configs["certssbd_fresh"]["train_noise_copies"] == 30 and configs["rab"]["train_noise_copies"] == 1
    assert configs["rab_grown"]["grown"] and configs["rab_grown"]["nb_models"] < 16
    assert sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file()) < 300_000


@pytest.mark.parametrize("stream", [False, True], ids=["in-memory", "streamed"])
@pytest.mark.parametrize("name", NAMES)
def test_an_old_save_loads_and_answers_as_it_did(name, stream):
    est = loaded(name, stream)
    x = EXPECTED["x_query"]
    config = json.loads((DATA / name / MANIFEST).read_text())["config"]
    assert est.nb_models_ == int(EXPECTED[f"{name}__nb_models_"]) == config["nb_models"]
    assert (est.random_state_, est.train_noise_copies_) == (config["random_state"], config["train_noise_copies"])
    assert est.growth_history_ == ([] if config["grown"] else None)  # [] marks a grown ensemble
    if name == "certssbd_memory":
        for field in MEMORY_FIELDS:  # read from disk: exact on any machine
            assert_recorded(getattr(est.memory_, field), f"{name}__memory_saved__{field}", exact=True)
    else:
        assert est.memory_ is None or len(est.memory_) == 0

    predict, majority = est.predict(x), est.predict(x, is_abstain=False)
    if name == "certssbd_memory":  # changed on purpose (module docstring): predict consults the memory
        query_pred = EXPECTED[f"{name}__query__pred"]
        assert not np.array_equal(EXPECTED[f"{name}__predict"], one_hot(query_pred)), "the fixture hits no region"
        np.testing.assert_array_equal(predict, one_hot(query_pred))
        old_majority = EXPECTED[f"{name}__predict_majority"].argmax(axis=1)
        np.testing.assert_array_equal(majority, one_hot(est.memory_.query(x, old_majority, np.zeros(len(x)))[0]))
    else:
        assert_recorded(predict, f"{name}__predict")
        assert_recorded(majority, f"{name}__predict_majority")

    with pytest.warns(UserWarning, match="can never certify") if name == "rab_grown" else contextlib.nullcontext():
        result = est.certify(x, return_details=True)
    for field in RESULT_FIELDS:
        key = f"{name}__certify__{field}"
        if (name, field) == ("rab_grown", "p_a_lower"):  # the anytime bound's last bit (module docstring)
            np.testing.assert_allclose(result.p_a_lower, EXPECTED[key], rtol=0, atol=1e-15)
        else:
            assert_recorded(getattr(result, field), key)
    if name == "certssbd_memory":  # the memory trimmed both ways, and stored the new regions as it did
        assert (result.pred != result.pred_before_memory).any()
        for field in MEMORY_FIELDS:
            assert_recorded(getattr(est.memory_, field), f"{name}__memory_after__{field}")


@pytest.mark.parametrize("name", NAMES)
def test_an_old_save_saved_again_holds_the_same(name, tmp_path):
    """Today's ``save_ensemble`` of a loaded old save writes its config and entries unchanged (same tensors)."""
    loaded(name).save_ensemble(tmp_path / name)
    old, new = EnsembleCheckpoint.open(DATA / name), EnsembleCheckpoint.open(tmp_path / name)
    assert new.config == old.config
    assert sorted(new.manifest["entries"]) == sorted(old.manifest["entries"])
    for entry in old.manifest["entries"]:
        a, b = old.load(entry), new.load(entry)
        a, b = (a, b) if isinstance(a, dict) else ({"": a}, {"": b})
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), entry


def test_an_old_save_with_memory_loads_without_it():
    """``use_memory=False`` ignores the saved memory: the answers of e46f52c's own load with ``use_memory=False``."""
    est = loaded("certssbd_memory", use_memory=False)
    assert est.memory_ is None
    x = EXPECTED["x_query"]
    assert_recorded(est.predict(x), "certssbd_memory__nomem__predict")
    assert_recorded(est.predict(x, is_abstain=False), "certssbd_memory__nomem__predict_majority")
    result = est.certify(x, return_details=True)
    for field in RESULT_FIELDS:
        assert_recorded(getattr(result, field), f"certssbd_memory__nomem__certify__{field}")
