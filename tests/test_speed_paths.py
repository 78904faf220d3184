"""The fast paths agree with the reference paths: vmap / sequential / loop, vote ranges, chunking, and mixed precision
against float32 (on CUDA; its CPU refusal is tested everywhere), and ``torch.compile`` against eager."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import trim_bruteforce

from art_certssbd import ensemble as ens_mod
from art_certssbd import training as train_mod
from art_certssbd.accelerators import NATIVE_BF16_ENV
from art_certssbd.ensemble import StackedEnsemble, to_channels_last, vote
from art_certssbd.memory import CertificationMemory
from art_certssbd.models import MnistCNN
from art_certssbd.noise import derive_seed, gaussian, make_generator
from art_certssbd.sigma import optimize_sigma
from art_certssbd.training import init_member, train_members

CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")


def _noise(members, draws, shape, device="cpu"):
    gens = [make_generator(derive_seed(0, "test_noise", k), device) for k in members]
    return torch.stack([gaussian((draws, *shape), g) for g in gens])


def _mnist_ensemble(m=4, nb_classes=3, device="cpu"):
    modules = [init_member(MnistCNN(nb_classes), derive_seed(0, "init", k)) for k in range(m)]
    return StackedEnsemble.from_modules(modules).to(device)


def _data(n=6, device="cpu"):
    g = make_generator(7)
    x = torch.rand((n, 1, 28, 28), generator=g).to(device)
    return x, torch.linspace(0.1, 0.5, n).to(device)


def _sgd(params):
    return torch.optim.SGD(params, lr=0.05)


# ---------------------------------------------------------------------------------------------------- votes
def test_vote_backends_agree_on_a_cnn(one_thread):
    ens, (x, sigma) = _mnist_ensemble(), _data()
    noise = lambda ks, d, s: _noise(ks, d, s)  # noqa: E731
    ref = vote(ens, x, sigma, noise, 3, draws_per_model=2, vectorize=False)
    for backend in ("vmap", "sequential", "auto"):
        out = vote(ens, x, sigma, noise, 3, draws_per_model=2, backend=backend, batch_size=4, max_images_per_pass=16)
        np.testing.assert_array_equal(out.numpy(), ref.numpy())
    soft_ref = vote(ens, x, sigma, noise, 3, draws_per_model=2, soft=True, vectorize=False)
    soft = vote(ens, x, sigma, noise, 3, draws_per_model=2, soft=True, backend="vmap")
    torch.testing.assert_close(soft, soft_ref)
    assert not soft.is_inference()


def test_logits_backends_agree(one_thread):
    ens, (x, _) = _mnist_ensemble(), _data(4)
    xs = x.unsqueeze(0).expand(3, -1, -1, -1, -1)
    ref = ens.logits(xs, 1, 4, vectorize=False)
    for backend in ("vmap", "sequential"):
        torch.testing.assert_close(ens.logits(xs, 1, 4, backend=backend), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("draws", [1, 3])
def test_vote_ranges_add_up(draws, one_thread):
    ens, (x, sigma) = _mnist_ensemble(5), _data(3)
    full = vote(ens, x, sigma, _noise, 3, draws_per_model=draws)
    total = 5 * draws
    cuts = [0, 2, 7, total] if draws == 3 else [0, 1, 4, total]
    parts = sum(
        vote(ens, x, sigma, _noise, 3, draws_per_model=draws, start_vote=a, nb_votes=b) for a, b in zip(cuts, cuts[1:])
    )
    np.testing.assert_array_equal(parts.numpy(), full.numpy())
    assert torch.all(vote(ens, x, sigma, _noise, 3, draws_per_model=draws, start_vote=2, nb_votes=4).sum(1) == 2)
    with pytest.raises(ValueError, match="start_vote must be in"):
        vote(ens, x, sigma, _noise, 3, draws_per_model=draws, start_vote=4, nb_votes=4)


def test_channels_last_helper_forces_strides():
    w = torch.randn(16, 1, 5, 5)
    assert w.contiguous(memory_format=torch.channels_last).stride() == w.stride()  # the pitfall it avoids
    cl = to_channels_last(w)
    assert cl.stride() == (25, 1, 5, 1) and torch.equal(cl, w)
    assert to_channels_last(cl) is cl and to_channels_last(torch.ones(3)).shape == (3,)


def test_accelerators_refused_off_cuda(no_native_bf16):
    ens, (x, sigma) = _mnist_ensemble(2), _data(2)
    with pytest.raises(ValueError, match="amp='bf16' is only supported on CUDA"):
        vote(ens, x, sigma, _noise, 3, amp="bf16")
    with pytest.raises(ValueError, match="compile must be True or False"):
        vote(ens, x, sigma, _noise, 3, compile="yes")
    with pytest.raises(ValueError, match="amp must be None or one of"):
        vote(ens, x, sigma, _noise, 3, amp="fp8")
    with pytest.raises(ValueError, match="backend must be one of"):
        vote(ens, x, sigma, _noise, 3, backend="threads")
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="amp='fp16' is only supported on CUDA"):
        train_members(
            MnistCNN(3),
            x[:1].expand(4, -1, -1, -1),
            y,
            torch.ones(4),
            [0],
            loss_fn=torch.nn.CrossEntropyLoss(),
            optimizer_factory=_sgd,
            random_state=0,
            nb_epochs=1,
            batch_size=2,
            amp="fp16",
        )


# ------------------------------------------------------------------------------------------------- training
def _train(backend=None, vectorize=True, device="cpu", **kwargs):
    g = make_generator(3)
    x = torch.rand((40, 1, 28, 28), generator=g).to(device)
    y = torch.randint(0, 3, (40,), generator=g).to(device)
    sigma = torch.linspace(0.1, 0.3, 40).to(device)
    opts = {"backend": backend} if backend else {}
    return train_members(
        MnistCNN(3),
        x,
        y,
        sigma,
        [0, 2, 5],
        loss_fn=torch.nn.CrossEntropyLoss(),
        optimizer_factory=_sgd,
        random_state=4,
        nb_epochs=2,
        batch_size=16,
        vectorize=vectorize,
        **opts,
        **kwargs,
    )


@pytest.mark.parametrize("noise", ["fixed", "fresh"])
def test_training_backends_agree_on_a_cnn(noise, one_thread):
    ref = _train(vectorize=False, noise=noise)
    for backend in ("vmap", "sequential"):
        out = _train(backend, noise=noise)
        for a, b in zip(out, ref):
            assert a.keys() == b.keys()
            for name in a:
                assert a[name].is_contiguous()
                # two epochs of SGD accumulate float rounding that differs between CPU kernels (vmap'd and
                # channels-last convolutions): about 4e-5 on AMD EPYC; a wrong backend is off by far more
                torch.testing.assert_close(a[name], b[name], rtol=1e-3, atol=2e-4)
    # the sequential path without channels-last is the loop twin, bit for bit
    for a, b in zip(_train("sequential", noise=noise, channels_last=False), ref):
        assert all(torch.equal(a[n], b[n]) for n in a)


def test_vmapped_loss_falls_back_to_a_loop():
    calls = []

    def loss(logits, labels):  # .item() has no batching rule: the member loop must take over
        calls.append(float(logits.sum().item()))
        return torch.nn.functional.cross_entropy(logits, labels)

    total = train_mod._member_losses(loss)
    logits, labels = torch.randn(3, 5, 2), torch.zeros(3, 5, dtype=torch.long)
    expected = sum(torch.nn.functional.cross_entropy(logits[m], labels[m]) for m in range(3))
    torch.testing.assert_close(total(logits, labels), expected)
    torch.testing.assert_close(total(logits, labels), expected)
    assert len(calls) == 6


# ----------------------------------------------------------------------------------------------------- sigma
def test_sigma_channels_last_copy_matches_and_leaves_the_model(one_thread):
    model = init_member(MnistCNN(2), 1).train()
    x, _ = _data(5)
    strides = [p.stride() for p in model.parameters()]
    fast = optimize_sigma(model, x, 0.2, steps=4, n_samples=4, random_state=2)
    plain = optimize_sigma(lambda t: model(t), x, 0.2, steps=4, n_samples=4, random_state=2)  # not a Module: no copy
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)
    assert model.training and [p.stride() for p in model.parameters()] == strides
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    torch.testing.assert_close(optimize_sigma(model, x, 0.2, steps=4, n_samples=4, random_state=2, batch_size=5), fast)


# ---------------------------------------------------------------------------------------------------- memory
def test_memory_matrix_product_screen_matches_bruteforce():
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(300, 12)) * 3
    labels, radii = rng.integers(0, 3, 300), rng.uniform(0.1, 1.0, 300)
    memory = CertificationMemory(chunk_size=64)
    memory._append(centers, labels, radii, radii / 2, np.full(300, 0.2))
    np.testing.assert_allclose(memory._norm2[:300].numpy(), (centers**2).sum(1))
    queries = rng.normal(size=(40, 12)) * 3
    pred, radius = rng.integers(-1, 3, 40), rng.uniform(0, 3, 40)
    got = memory.query(queries, pred, radius)
    for i in range(40):
        c, r, _ = trim_bruteforce(queries[i], pred[i], radius[i], radius[i], centers, labels, radii, radii / 2)
        assert got[0][i] == c and got[1][i] == pytest.approx(r, abs=1e-12)


# --------------------------------------------------------------------------- accelerators (code paths on CPU)
@pytest.fixture
def cpu_accelerators(monkeypatch):
    """Let the CUDA-only options run on CPU (bfloat16 autocast and inductor exist there) to exercise the paths."""
    monkeypatch.setattr(ens_mod, "check_accelerators", lambda *a: None)
    monkeypatch.setattr(train_mod, "check_accelerators", lambda *a: None)
    monkeypatch.setenv(NATIVE_BF16_ENV, "1")


def test_bf16_paths_run_and_agree_with_fp32_on_cpu(cpu_accelerators, one_thread):
    ens, (x, sigma) = _mnist_ensemble(4), _data(8)
    ref = vote(ens, x, sigma, _noise, 3, backend="vmap")
    for backend in ("vmap", "sequential"):
        out = vote(ens, x, sigma, _noise, 3, backend=backend, amp="bf16")
        assert out.dtype == torch.int64 and int(out.sum()) == 32
        assert np.abs(out.numpy() - ref.numpy()).sum() <= 8  # bf16 may flip near-ties
    for backend in ("vmap", "sequential"):
        states = _train(backend, amp="bf16")
        assert all(torch.isfinite(t).all() for s in states for t in s.values())


@pytest.mark.slow
def test_compile_path_runs_on_cpu(cpu_accelerators, one_thread):
    ens, (x, sigma) = _mnist_ensemble(3), _data(4)
    ref = vote(ens, x, sigma, _noise, 3, backend="vmap")
    for backend in ("vmap", "sequential"):
        np.testing.assert_array_equal(
            vote(ens, x, sigma, _noise, 3, backend=backend, compile=True).numpy(), ref.numpy()
        )


# ----------------------------------------------------------------------------------------------------- CUDA
def _cuda_noise(members, draws, shape):
    return _noise(members, draws, shape, "cuda")


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cuda_mixed_precision_votes_match_fp32(amp):
    ens, (x, sigma) = _mnist_ensemble(32, device="cuda"), _data(64, "cuda")
    ref = vote(ens, x, sigma, _cuda_noise, 3).cpu().numpy()
    out = vote(ens, x, sigma, _cuda_noise, 3, amp=amp).cpu().numpy()
    assert out.sum() == ref.sum()
    # votes may only move on near-ties: at most 2 % of them
    assert np.abs(out - ref).sum() / 2 <= 0.02 * ref.sum()


@gpu
@pytest.mark.gpu
def test_cuda_backends_and_compile_match():
    ens, (x, sigma) = _mnist_ensemble(16, device="cuda"), _data(32, "cuda")
    ref = vote(ens, x, sigma, _cuda_noise, 3, vectorize=False).cpu().numpy()
    for kwargs in ({}, {"backend": "sequential"}, {"compile": True}):
        out = vote(ens, x, sigma, _cuda_noise, 3, **kwargs).cpu().numpy()
        assert np.abs(out - ref).sum() / 2 <= 0.01 * ref.sum()


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("amp", [None, "bf16", "fp16"])
def test_cuda_training_matches_fp32_loop(amp):
    ref = _train(vectorize=False, device="cuda")
    out = _train("vmap", device="cuda", amp=amp)
    tol = 1e-4 if amp is None else 5e-2
    for a, b in zip(out, ref):
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=tol, atol=tol)


def test_from_state_dicts_stacks_like_modules():
    modules = [init_member(MnistCNN(3), derive_seed(0, "init", k)) for k in range(3)]
    a = StackedEnsemble.from_modules(modules)
    b = StackedEnsemble.from_state_dicts(MnistCNN(3), [m.state_dict() for m in modules])
    assert a.params.keys() == b.params.keys() and a.buffers.keys() == b.buffers.keys()
    assert all(torch.equal(a.params[n], b.params[n]) for n in a.params)
    bad = modules[0].state_dict()
    bad["fc.weight"] = bad["fc.weight"][:, :10]
    with pytest.raises(ValueError, match=r"state_dicts\[1\] does not fit .* wrong shapes \['fc.weight"):
        StackedEnsemble.from_state_dicts(MnistCNN(3), [modules[0].state_dict(), bad])
    extra = {**modules[0].state_dict(), "extra": torch.ones(1)}
    with pytest.raises(ValueError, match=r"unexpected keys \['extra'\]"):
        StackedEnsemble.from_state_dicts(MnistCNN(3), [extra])
    with pytest.raises(ValueError, match="at least one state_dict"):
        StackedEnsemble.from_state_dicts(MnistCNN(3), [])


@pytest.mark.slow
def test_estimator_compile_option_gives_the_eager_certificates():
    # compile=True (inductor, here on CPU) is a speed option: same votes, radii and predictions as eager float32
    from helpers import digits_estimator

    from art_certssbd.datasets import load_digits

    x_train, y_train, x_test, _ = load_digits(random_state=0)
    params = dict(nb_models=4, scale=0.25, alpha=0.1, random_state=0, sigma_steps=2, sigma_samples=2, warmup_epochs=1)
    est = digits_estimator(**params)
    est.fit(x_train[:200], y_train[:200], nb_epochs=2, batch_size=64)
    eager = est.certify(x_test[:32], return_details=True, update_memory=False)
    est.set_params(compile=True)
    compiled = est.certify(x_test[:32], return_details=True, update_memory=False)
    np.testing.assert_array_equal(compiled.votes, eager.votes)
    np.testing.assert_array_equal(compiled.pred, eager.pred)
    np.testing.assert_allclose(compiled.radius, eager.radius)
