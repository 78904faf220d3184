"""bfloat16 votes on CPU (``amp="bf16"``): allowed where the CPU has native bfloat16, refused with a reason elsewhere;
``"fp16"`` stays CUDA-only (``art_certssbd.ensemble.check_accelerators`` and ``autocast``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import digits_estimator

from art_certssbd.accelerators import NATIVE_BF16_ENV, autocast, check_accelerators, cpu_has_native_bf16
from art_certssbd.ensemble import StackedEnsemble, vote
from art_certssbd.noise import derive_seed, gaussian, make_generator


class _Probe(torch.nn.Module):
    """Three-class linear scores of the feature sum (class 0 below -1, 1 near 0, 2 above 1); records whether CPU
    bfloat16 autocast was on when it ran (the forward's Python runs under vmap and functional_call alike)."""

    seen: list = []

    def __init__(self, shift: float):
        super().__init__()
        self.lin = torch.nn.Linear(1, 3)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[-4.0], [0.0], [4.0]]))
            self.lin.bias.copy_(torch.tensor([-4.0, 0.0, -4.0]) + shift)

    def forward(self, x):
        _Probe.seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return self.lin(x.reshape(len(x), -1).sum(1, keepdim=True))


def _noise(members, draws, shape):
    return torch.stack([gaussian((draws, *shape), make_generator(derive_seed(0, "test_noise", k))) for k in members])


def test_detection_reads_the_cpuinfo_flags(tmp_path):
    for flags, expected in [
        ("fpu sse avx2 avx512f", False),
        ("fpu avx512f avx512_bf16 avx512_vnni", True),
        ("fpu amx_tile amx_bf16 amx_int8", True),
    ]:
        path = tmp_path / f"cpuinfo-{len(flags)}"
        path.write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
        assert cpu_has_native_bf16(str(path)) is expected, flags
    assert cpu_has_native_bf16(str(tmp_path / "missing")) is False
    assert isinstance(cpu_has_native_bf16(), bool)  # this machine, whatever it has


def test_bf16_refused_on_a_cpu_without_it_with_the_reason(no_native_bf16):
    with pytest.raises(ValueError, match=r"amp='bf16' is only supported on CUDA or on a CPU with native bfloat16.*"):
        check_accelerators("cpu", "bf16", False)
    with pytest.raises(ValueError, match=r"avx512_bf16 or amx_bf16.*emulated.*leave amp=None"):
        check_accelerators("cpu", "bf16", False)
    with pytest.raises(ValueError, match=r"amp='bf16' is only supported on CUDA"):  # through the estimator
        digits_estimator(amp="bf16")
    ens = StackedEnsemble.from_modules([_Probe(0.0)])
    with pytest.raises(ValueError, match=r"amp='bf16'"):
        vote(ens, torch.zeros(2, 1, 2, 2), torch.full((2,), 0.1), _noise, 3, amp="bf16")


def test_fp16_and_other_devices_stay_refused(native_bf16):
    with pytest.raises(ValueError, match=r"amp='fp16' is only supported on CUDA.*'cpu'.*not offered on CPU"):
        check_accelerators("cpu", "fp16", False)
    with pytest.raises(ValueError, match=r"amp='bf16' is only supported on CUDA or on a CPU.*'meta'"):
        check_accelerators("meta", "bf16", False)
    with pytest.raises(ValueError, match=r"amp must be None or one of .* got 'fp8'"):
        check_accelerators("cpu", "fp8", False)


def test_bf16_allowed_on_a_native_cpu_and_votes_agree_with_fp32(native_bf16):
    check_accelerators("cpu", "bf16", False)
    check_accelerators(torch.device("cpu"), None, False)
    assert digits_estimator(amp="bf16").amp == "bf16"
    with autocast("cpu", "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    # well separated: feature sums -3, 0 and 3 (classes 0, 1, 2), small noise -> every vote is far from a tie
    x = torch.tensor([-3.0, 0.0, 3.0, 3.0, -3.0, 0.0]).reshape(6, 1, 1, 1).expand(6, 1, 2, 2) / 4
    sigma = torch.full((6,), 0.05)
    ens = StackedEnsemble.from_modules([_Probe(0.01 * k) for k in range(4)])
    for backend in ("sequential", "vmap"):
        _Probe.seen.clear()
        ref = vote(ens, x, sigma, _noise, 3, draws_per_model=5, backend=backend)
        assert _Probe.seen and not any(on for on, _ in _Probe.seen)
        _Probe.seen.clear()
        out = vote(ens, x, sigma, _noise, 3, draws_per_model=5, backend=backend, amp="bf16")
        assert _Probe.seen and all(on and dtype == torch.bfloat16 for on, dtype in _Probe.seen)
        assert out.dtype == torch.int64 and int(out.sum()) == 6 * 4 * 5
        np.testing.assert_array_equal(out.numpy(), ref.numpy())
        np.testing.assert_array_equal(out.argmax(1).numpy(), [0, 1, 2, 2, 0, 1])


# ----------------------------------------------------------------------------- training under bf16 (issue 21)
def _tiny_train(amp, monkeypatch=None):
    from art_certssbd.training import train_members

    g = make_generator(3)
    x = torch.rand((12, 1, 2, 2), generator=g)
    y = (x.sum((1, 2, 3)) > 2).long() * 2
    _Probe.seen.clear()
    return train_members(
        _Probe(0.0), x, y, torch.full((12,), 0.1), [0, 1], loss_fn=torch.nn.CrossEntropyLoss(),
        optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.1), random_state=0, nb_epochs=2, batch_size=4,
        backend="sequential", amp=amp,
    )  # fmt: skip


def test_training_and_sigma_run_under_bf16_on_a_native_cpu(native_bf16):
    from art_certssbd.sigma import optimize_sigma

    ref = _tiny_train(None)
    assert _Probe.seen and not any(on for on, _ in _Probe.seen)
    out = _tiny_train("bf16")
    assert _Probe.seen and all(on and dtype == torch.bfloat16 for on, dtype in _Probe.seen)
    for a, b in zip(out, ref):  # bfloat16 keeps about 3 significant digits: the weights move, but not far
        for name in a:
            assert a[name].dtype == torch.float32
            assert not torch.equal(a[name], b[name]) or name.endswith("bias")
            torch.testing.assert_close(a[name], b[name], rtol=0.05, atol=0.05)
    x = torch.linspace(-1, 1, 6).reshape(6, 1, 1, 1).expand(6, 1, 2, 2).contiguous()
    _Probe.seen.clear()
    s_ref = optimize_sigma(_Probe(0.0), x, 0.2, steps=3, n_samples=4, lr=0.05)
    assert _Probe.seen and not any(on for on, _ in _Probe.seen)
    _Probe.seen.clear()
    s_bf16 = optimize_sigma(_Probe(0.0), x, 0.2, steps=3, n_samples=4, lr=0.05, amp="bf16")
    assert _Probe.seen and all(on and dtype == torch.bfloat16 for on, dtype in _Probe.seen)
    assert s_bf16.dtype == torch.float32
    torch.testing.assert_close(s_bf16, s_ref, rtol=0.02, atol=0.02)


def test_training_and_sigma_refuse_bf16_without_native_support(no_native_bf16):
    from art_certssbd.sigma import optimize_sigma

    with pytest.raises(ValueError, match=r"amp='bf16' is only supported on CUDA or on a CPU with native bfloat16"):
        _tiny_train("bf16")
    with pytest.raises(ValueError, match=rf"amp='bf16'.*{NATIVE_BF16_ENV}=1"):
        optimize_sigma(_Probe(0.0), torch.zeros(2, 1, 2, 2), 0.2, steps=1, amp="bf16")


def test_the_checkpoint_records_bf16_training_and_a_resume_never_mixes(native_bf16, tmp_path, one_thread):
    from art_certssbd.checkpoint import CheckpointError, EnsembleCheckpoint

    rng = np.random.default_rng(0)
    x = rng.random((40, 1, 8, 8), dtype=np.float32)
    y = np.arange(40) % 10
    params = dict(nb_models=2, scale=0.25, sigma_steps=1, sigma_samples=2, sigma_lr=1e-3, random_state=0)
    est = digits_estimator(amp="bf16", **params)
    est.fit(x, y, nb_epochs=1, batch_size=20, checkpoint_dir=tmp_path / "bf16")
    assert EnsembleCheckpoint(tmp_path / "bf16").config["amp"] == "bf16"
    with pytest.raises(CheckpointError, match="amp"):  # float32 members must not join bfloat16 ones
        digits_estimator(**params).fit(x, y, nb_epochs=1, batch_size=20, checkpoint_dir=tmp_path / "bf16")
    fp32 = digits_estimator(**params)
    fp32.fit(x, y, nb_epochs=1, batch_size=20, checkpoint_dir=tmp_path / "fp32")
    assert "amp" not in EnsembleCheckpoint(tmp_path / "fp32").config  # float32 runs keep their old identity
    fp32.set_params(amp="bf16")  # votes in bfloat16 after a float32 fit: the fitted ensemble is kept
    assert fp32.certify(x[:4])[0].shape == (4,)
