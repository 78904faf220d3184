"""bfloat16 votes on CPU (``amp="bf16"``): allowed where the CPU has native bfloat16, refused with a reason elsewhere;
``"fp16"`` stays CUDA-only (``art_certssbd.ensemble.check_accelerators`` and ``autocast``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import digits_estimator

from art_certssbd import ensemble as ens_mod
from art_certssbd.ensemble import StackedEnsemble, autocast, check_accelerators, cpu_has_native_bf16, vote
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


@pytest.fixture
def native_bf16(monkeypatch):
    monkeypatch.setattr(ens_mod, "cpu_has_native_bf16", lambda: True)


@pytest.fixture
def no_bf16(monkeypatch):
    monkeypatch.setattr(ens_mod, "cpu_has_native_bf16", lambda: False)


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


def test_bf16_refused_on_a_cpu_without_it_with_the_reason(no_bf16):
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
