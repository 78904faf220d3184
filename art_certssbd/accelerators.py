"""Accelerator options of the torch core: mixed precision (``amp``) and ``torch.compile`` (pure torch).

``amp="bf16"`` runs on CUDA and on a CPU with native bfloat16 (:func:`cpu_has_native_bf16`: AVX512-BF16 or AMX);
``amp="fp16"`` on CUDA only. Both apply to every forward pass of the method that they are given to: the warm-up and
the members' training (:mod:`art_certssbd.training`), the sigma optimiser (:mod:`art_certssbd.sigma`) and the votes
(:mod:`art_certssbd.ensemble`). :func:`check_accelerators` refuses them, with the reason, where they do not pay.

The detection can be forced, for tests and for users who know better, with the environment variable
``ART_CERTSSBD_NATIVE_BF16`` (``1``: treat the CPU as having native bfloat16, ``0``: as not having it).
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch

#: Mixed-precision options: autocast dtype by name (CUDA; "bf16" also on CPUs with native bfloat16).
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: /proc/cpuinfo flags of native bfloat16 arithmetic (AVX512-BF16 and AMX-BF16 on x86).
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
#: Environment variable that overrides the detection of native bfloat16 (``"1"`` or ``"0"``).
NATIVE_BF16_ENV = "ART_CERTSSBD_NATIVE_BF16"


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes in bfloat16 natively: one of :data:`CPU_BF16_FLAGS` among the ``flags`` of
    ``/proc/cpuinfo`` (Linux; ``False`` where the file cannot be read, e.g. on macOS or Windows), unless the
    environment variable :data:`NATIVE_BF16_ENV` says ``"1"`` or ``"0"``. Without native bfloat16 PyTorch emulates
    it and autocast is slower than float32.

    :param cpuinfo: Path of a ``/proc/cpuinfo``-format file to read instead (the environment variable is then not
           consulted).
    """
    if cpuinfo is None:
        forced = os.environ.get(NATIVE_BF16_ENV)
        if forced is not None and forced.strip() != "":
            if forced.strip() not in ("0", "1"):
                raise ValueError(f"{NATIVE_BF16_ENV} must be '0' or '1' (or unset), got {forced!r}")
            return forced.strip() == "1"
        cpuinfo = "/proc/cpuinfo"
    return _cpuinfo_has_bf16(cpuinfo)


@functools.cache
def _cpuinfo_has_bf16(cpuinfo: str) -> bool:
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            flags.update(value.split())
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def check_accelerators(device: torch.device | str, amp: str | None, compile: bool) -> None:
    """Refuse unknown ``amp`` names, mixed precision where it does not pay, and a non-bool ``compile``, with a clear
    message (``torch.compile`` runs on CUDA and on CPU, where inductor makes the MNIST CNN's forward pass about 1.4x
    faster).

    ``amp="bf16"`` runs on CUDA and on a CPU with native bfloat16 (:func:`cpu_has_native_bf16`: AVX512-BF16 or AMX,
    where the MNIST CNN's forward pass under ``torch.autocast("cpu", dtype=torch.bfloat16)`` was measured 1.55x
    faster and a training step 1.47x); ``amp="fp16"`` runs on CUDA only. Like CUDA autocast, bfloat16 can flip
    near-tie votes and changes the trained weights (so a checkpoint records it).

    :param device: Device of the computation.
    :param amp: ``None``, ``"bf16"`` or ``"fp16"``.
    :param compile: Whether ``torch.compile`` is requested.
    """
    if amp is not None and amp not in AMP_DTYPES:
        raise ValueError(f"amp must be None or one of {tuple(AMP_DTYPES)}, got {amp!r}")
    if not isinstance(compile, bool):
        raise ValueError(f"compile must be True or False, got {compile!r}")
    device = torch.device(device)
    if amp is None or device.type == "cuda":
        return
    if amp == "bf16" and device.type == "cpu":
        if cpu_has_native_bf16():
            return
        raise ValueError(
            f"amp={amp!r} is only supported on CUDA or on a CPU with native bfloat16 (cpuinfo flag "
            f"{' or '.join(CPU_BF16_FLAGS)}); this CPU has neither (torch CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()!r}), so bfloat16 would be emulated and slower than float32: "
            f"leave amp=None (or set {NATIVE_BF16_ENV}=1 to use it anyway)"
        )
    if amp == "bf16":
        raise ValueError(
            f"amp={amp!r} is only supported on CUDA or on a CPU with native bfloat16, but the computation runs on "
            f"{device.type!r}: leave amp=None"
        )
    raise ValueError(
        f"amp={amp!r} is only supported on CUDA, but the computation runs on {device.type!r}: float16 autocast is "
        "not offered on CPU (use amp='bf16' on a CPU with native bfloat16, or leave amp=None)"
    )


def autocast(device: torch.device | str, amp: str | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` with the dtype named by ``amp`` on ``device``'s type (``"cuda"``, or ``"cpu"`` for
    ``amp="bf16"`` where :func:`check_accelerators` allows it), or a no-op context when ``amp`` is ``None``."""
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=AMP_DTYPES[amp])
