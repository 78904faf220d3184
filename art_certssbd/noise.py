"""Seeded Gaussian noise with per-sample sigma (pure torch).

Every random draw in the package comes from an explicit :class:`torch.Generator` seeded from
``(random_state, purpose, k)`` through :class:`numpy.random.SeedSequence`, so that model ``k`` of an ensemble gets the
same initialisation, data order and noise whether it is trained alone, in a vectorised chunk, or after a resume, and
so that two seeds never share streams (``seed + k`` would make seed 0 / model 1 equal seed 1 / model 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

#: The independent random streams of one ensemble member (or of the sigma optimiser, ``k = 0``).
PURPOSES = {"init": 0, "shuffle": 1, "train_noise": 2, "test_noise": 3, "sigma_train": 4, "sigma_test": 5}


def derive_seed(random_state: int, purpose: str, k: int = 0) -> int:
    """A 63-bit seed for stream ``purpose`` of ensemble member ``k``, independent across all three arguments.

    :param random_state: The user's seed (a non-negative integer).
    :param purpose: One of :data:`PURPOSES`.
    :param k: Index of the ensemble member.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {sorted(PURPOSES)}, got {purpose!r}")
    state = np.random.SeedSequence(int(random_state), spawn_key=(PURPOSES[purpose], int(k))).generate_state(2)
    return int((int(state[0]) << 32 | int(state[1])) & ((1 << 63) - 1))


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh generator on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(int(seed))


def gaussian(shape: Sequence[int], generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise of ``shape`` drawn from ``generator`` on the generator's device."""
    return torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=dtype)


def expand_sigma(sigma: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append singleton axes to ``sigma`` so that it broadcasts against a tensor of rank ``ndim`` whose leading axes
    are those of ``sigma`` (e.g. ``(N,)`` against ``(N, C, H, W)`` or ``(M, N)`` against ``(M, N, C, H, W)``)."""
    return sigma.reshape(sigma.shape + (1,) * (ndim - sigma.dim()))


def add_noise(x: torch.Tensor, sigma: torch.Tensor | float, eps: torch.Tensor) -> torch.Tensor:
    """``x + sigma * eps`` with ``sigma`` a scalar or one value per sample (the leading axes of ``x``)."""
    if isinstance(sigma, torch.Tensor):
        sigma = expand_sigma(sigma, x.dim())
    return x + sigma * eps
