"""The training pipeline (``art_certssbd.pipeline``): warm-up, sigmas, members, seeding and resuming from a store."""

from __future__ import annotations

import pytest
import torch

from art_certssbd import pipeline
from art_certssbd.checkpoint import EnsembleCheckpoint
from art_certssbd.datasets import load_digits
from art_certssbd.models import DigitsCNN
from art_certssbd.noise import derive_seed
from art_certssbd.pipeline import BASE_MEMBER, train_smoothed_ensemble
from art_certssbd.training import init_member, train_members

SCALE = 0.25


@pytest.fixture(scope="module")
def data():
    x_train, y_train, _, _ = load_digits(random_state=0)
    return torch.from_numpy(x_train[:48]), torch.from_numpy(y_train[:48])


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here on one torch thread (the shared ``one_thread`` fixture)."""


def _sgd(params):
    return torch.optim.SGD(params, lr=0.05)


class SigmaRecorder:
    """A sigma function giving every sample its own sigma (so a member trained at sigma0 instead would differ),
    recording the base model's weights and the seed it was called with."""

    def __init__(self):
        self.calls = []

    def __call__(self, base, x, seed):
        self.calls.append(({k: v.clone() for k, v in base.state_dict().items()}, seed))
        return torch.linspace(0.1, 0.5, len(x))


def _train(data, seed=0, nb_models=3, sigma_fn=None, model=None, **kw):
    x, y = data
    params = dict(
        random_state=seed,
        sigma_fn=sigma_fn or SigmaRecorder(),
        nb_models=nb_models,
        scale=SCALE,
        warmup_epochs=1,
        loss_fn=torch.nn.CrossEntropyLoss(),
        optimizer_factory=_sgd,
        nb_epochs=1,
        batch_size=16,
    )
    params.update(kw)
    return train_smoothed_ensemble(model or DigitsCNN(), x, y, **params)


def _assert_states_equal(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def _states_equal(a, b):
    return all(torch.equal(a[name], b[name]) for name in a)


def test_same_seed_gives_the_same_run_whatever_the_model_weights(data):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model_a = DigitsCNN()
        torch.manual_seed(2)
        model_b = DigitsCNN()
    before = {k: v.clone() for k, v in model_b.state_dict().items()}
    base_a, sigma_a, ens_a = _train(data, model=model_a)
    base_b, sigma_b, ens_b = _train(data, model=model_b)
    _assert_states_equal(model_b.state_dict(), before)  # the architecture's own weights are left alone
    _assert_states_equal(base_a.state_dict(), base_b.state_dict())
    assert torch.equal(sigma_a, sigma_b)
    assert ens_a.nb_models == ens_b.nb_models == 3
    for k in range(3):
        _assert_states_equal(ens_a.state_dict(k), ens_b.state_dict(k))
    base_c, _, ens_c = _train(data, seed=1, model=model_a)
    assert not _states_equal(base_a.state_dict(), base_c.state_dict())
    assert not any(_states_equal(ens_a.state_dict(k), ens_c.state_dict(k)) for k in range(3))


@pytest.mark.parametrize("members_per_chunk", [1, 2])
def test_member_k_is_the_member_trained_alone_with_the_returned_sigmas(data, members_per_chunk):
    x, y = data
    model = DigitsCNN()
    _, train_sigma, ens = _train(data, nb_models=3, members_per_chunk=members_per_chunk, model=model)
    torch.testing.assert_close(train_sigma, torch.linspace(0.1, 0.5, len(x)), rtol=0, atol=0)
    kw = dict(loss_fn=torch.nn.CrossEntropyLoss(), optimizer_factory=_sgd, random_state=0, nb_epochs=1, batch_size=16)
    alone = train_members(model, x, y, train_sigma, [0, 1, 2], vectorize=False, **kw)
    for k in range(3):
        torch.testing.assert_close(ens.state_dict(k), alone[k], rtol=1e-5, atol=1e-6)
    assert not _states_equal(ens.state_dict(0), ens.state_dict(1))
    # trained at sigma0 everywhere instead of the per-sample sigmas, member 0 would differ
    at_scale = train_members(model, x, y, torch.full((len(x),), SCALE), [0], vectorize=False, **kw)[0]
    assert not _states_equal(ens.state_dict(0), at_scale)


def test_warmup_and_sigma_fn_arguments(data):
    model = DigitsCNN()
    initial = init_member(model, derive_seed(0, "init", BASE_MEMBER)).state_dict()
    recorder = SigmaRecorder()
    base, _, _ = _train(data, nb_models=1, sigma_fn=recorder, model=model, warmup_epochs=0)
    _assert_states_equal(base.state_dict(), initial)  # no warm-up: the base keeps its seeded initial weights
    assert len(recorder.calls) == 1 and recorder.calls[0][1] == derive_seed(0, "sigma_train")

    recorder = SigmaRecorder()
    base, _, ens = _train(data, nb_models=1, sigma_fn=recorder, model=model, warmup_epochs=1)
    _assert_states_equal(recorder.calls[0][0], base.state_dict())  # sigma_fn sees the warmed-up base ...
    assert not _states_equal(base.state_dict(), initial)  # ... which did train
    assert not _states_equal(base.state_dict(), ens.state_dict(0))  # and is not member 0


def test_resume_trains_only_the_missing_members(data, tmp_path, monkeypatch):
    trained = []

    def spy(template, x, y, sigma, members, **kw):
        trained.append(list(members))
        return train_members(template, x, y, sigma, members, **kw)

    monkeypatch.setattr(pipeline, "train_members", spy)
    model = DigitsCNN()
    store = EnsembleCheckpoint(tmp_path / "ck", {"run": "test"})
    recorder = SigmaRecorder()
    _train(data, nb_models=2, model=model, store=store, sigma_fn=recorder, members_per_chunk=2)
    assert trained == [[0, 1]] and store.finished_members() == [0, 1]
    assert store.has("base") and store.has("train_sigma") and len(recorder.calls) == 1

    trained.clear()
    store = EnsembleCheckpoint(tmp_path / "ck", {"run": "test"})
    base, sigma, ens = _train(data, nb_models=4, model=model, store=store, sigma_fn=recorder, members_per_chunk=1)
    assert trained == [[2], [3]]  # members 0 and 1 come from the store, one chunk per missing member
    assert len(recorder.calls) == 1  # the stored sigmas are reused
    assert store.finished_members() == [0, 1, 2, 3]

    trained.clear()
    base_u, sigma_u, ens_u = _train(data, nb_models=4, model=model)  # uninterrupted, no store
    assert trained == [[0], [1], [2], [3]]
    _assert_states_equal(base.state_dict(), base_u.state_dict())
    assert torch.equal(sigma, sigma_u)
    for k in range(4):
        torch.testing.assert_close(ens.state_dict(k), ens_u.state_dict(k), rtol=1e-5, atol=1e-6)


class BarRecorder:
    """Stands in for tqdm: records each bar's description, total and updates (and whether it shows)."""

    def __init__(self, bars):
        self.bars = bars

    def __call__(self, iterable=None, desc=None, total=None, disable=False, **kwargs):
        bar = {"desc": desc, "total": total if total is not None else len(iterable), "shown": not disable, "n": 0}
        self.bars.append(bar)

        class Bar:
            def __iter__(self):
                for item in iterable:
                    yield item
                    bar["n"] += 1

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def update(self, n=1):
                bar["n"] += n

        return Bar()


@pytest.mark.parametrize("members_per_chunk, vectorize", [(1, False), (1, True), (2, True)])
def test_one_overall_progress_bar_for_the_members_and_one_for_the_warmup(
    data, monkeypatch, members_per_chunk, vectorize
):
    from art_certssbd import training

    bars = []
    monkeypatch.setattr(pipeline, "tqdm", BarRecorder(bars))
    monkeypatch.setattr(training, "tqdm", BarRecorder(bars))
    _train(data, nb_models=4, verbose=True, members_per_chunk=members_per_chunk, vectorize=vectorize)
    shown = [(bar["desc"], bar["total"], bar["n"]) for bar in bars if bar["shown"]]
    assert ("Warm-up", 1, 1) in shown  # the warm-up shows progress
    assert ("Members", 4, 4) in shown  # one bar over every member ...
    assert not [desc for desc, *_ in shown if desc and desc.startswith("Ensemble")]  # ... not 'Ensemble 1/1' each
    chunks = [bar for bar in shown if bar[0].startswith("Chunk")]
    assert len(chunks) == (2 if members_per_chunk == 2 else 0)  # a chunk trained together: its epochs pass by


def test_no_sigma_optimisation_is_announced_for_rab_or_on_resume(tmp_path, caplog):
    from helpers import digits_estimator

    from art_certssbd import RABEstimator

    x_train, y_train, _, _ = load_digits(random_state=0)
    x, y = x_train[:60], y_train[:60]
    with caplog.at_level("INFO", logger="art_certssbd"):
        digits_estimator(RABEstimator, nb_models=2, scale=SCALE, random_state=0).fit(x, y, nb_epochs=1)
    assert "Optimising the sigma" not in caplog.text and "Training 2 of 2 members" in caplog.text
    ssbd = dict(nb_models=2, scale=SCALE, random_state=0, sigma_steps=1, sigma_samples=2, warmup_epochs=1)
    caplog.clear()
    with caplog.at_level("INFO", logger="art_certssbd"):
        digits_estimator(**ssbd).fit(x, y, nb_epochs=1, checkpoint_dir=tmp_path / "ck")
    assert "Optimising the sigma of 60 samples (1 SGA steps each)" in caplog.text
    store = EnsembleCheckpoint(tmp_path / "ck")
    manifest = store.manifest
    store._commit({k: v for k, v in manifest["entries"].items() if k != "member_00001"})
    caplog.clear()
    with caplog.at_level("INFO", logger="art_certssbd"):
        digits_estimator(**ssbd).fit(x, y, nb_epochs=1, checkpoint_dir=tmp_path / "ck")
    assert "Training 1 of 2 members" in caplog.text and "Optimising the sigma" not in caplog.text
