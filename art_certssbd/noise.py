"""Seeded Gaussian noise with per-sample sigma (pure torch): every noise draw of the method lives here.

* the training noise and data order of member ``k`` (:class:`MemberStreams`, steps 2-3 of training);
* the common random numbers of the sigma optimisation (:func:`sigma_noise`, step 1 of training and step 4 of
  testing);
* the fixed test noise ``e_{k, j}`` of the members (:func:`fixed_test_noise`, step 5 of testing);
* the one sum ``x + sigma * eps`` (:func:`add_noise`) every noisy copy is built with.

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
    """``x + sigma * eps``: the noisy copies of every step of the method.

    :param x: Inputs; broadcast against ``eps`` (e.g. ``(B, *shape)`` against ``(d, 1, *shape)`` gives ``d`` copies
           of a batch).
    :param sigma: A scalar, or one value per sample aligned with the *leading* axes of ``x`` (``(B,)`` for
           ``(B, *shape)``, ``(1, 1, B)`` for ``(1, 1, B, *shape)``); trailing singleton axes are appended.
    :param eps: Standard normal noise.
    """
    if isinstance(sigma, torch.Tensor):
        return torch.addcmul(x, expand_sigma(sigma, x.dim()), eps)
    return x + sigma * eps


def fixed_test_noise(
    seeds: Sequence[int], members: Sequence[int], draws: int, shape: Sequence[int], device
) -> torch.Tensor:
    """The fixed test noise ``e_{k, j}`` of ``members``: member ``k``'s ``draws`` draws come from its own generator
    seeded with ``seeds[k]``, so they do not depend on which other members are evaluated with it.

    :return: Shape ``(len(members), draws, *shape)``, on ``device``.
    """
    return torch.stack([gaussian((draws, *shape), make_generator(seeds[k], device)) for k in members])


def sigma_noise(random_state: int, steps: int, n_samples: int, shape: Sequence[int], device, dtype: torch.dtype):
    """The common random numbers of the sigma optimisation: ``eps[t]``, shape ``(n_samples, *shape)``, is shared by
    every sample at ascent step ``t``. :return: Shape ``(steps, n_samples, *shape)``."""
    return gaussian((steps, n_samples, *shape), make_generator(random_state, device), dtype=dtype)


class MemberStreams:
    """The data order and training noise of one model: its shuffle and noise generators, and its fixed training
    noise (``noise="fixed"``: one draw per training sample, reused every epoch; ``"fresh"``: a new draw per batch).

    :param shuffle_seed: Seed of the data order.
    :param noise_seed: Seed of the training noise.
    :param x: The training inputs (their shape, dtype and device).
    :param noise: ``"fixed"`` or ``"fresh"``.
    :param out: For ``"fixed"``, a tensor of ``x``'s shape to draw the noise into (a slice of a stacked buffer; the
           same values as a fresh tensor).
    """

    def __init__(self, shuffle_seed: int, noise_seed: int, x: torch.Tensor, noise: str, out=None):
        self.shuffle = make_generator(shuffle_seed, x.device)
        self.noise = make_generator(noise_seed, x.device)
        self.fixed = None
        if noise == "fixed" and out is None:
            self.fixed = gaussian(x.shape, self.noise, x.dtype)
        elif noise == "fixed":
            self.fixed = torch.randn(x.shape, generator=self.noise, device=x.device, dtype=x.dtype, out=out)

    @classmethod
    def of_member(cls, random_state: int, k: int, x: torch.Tensor, noise: str, out=None) -> MemberStreams:
        """The streams of ensemble member ``k``."""
        seeds = derive_seed(random_state, "shuffle", k), derive_seed(random_state, "train_noise", k)
        return cls(*seeds, x, noise, out)

    @classmethod
    def of_seed(cls, random_state: int, x: torch.Tensor, noise: str) -> MemberStreams:
        """The streams of a single model (the base model's warm-up)."""
        return cls(derive_seed(random_state, "shuffle"), derive_seed(random_state, "train_noise"), x, noise)

    def permutation(self, n: int) -> torch.Tensor:
        """The data order of the next epoch."""
        return torch.randperm(n, generator=self.shuffle, device=self.shuffle.device)

    def batch_noise(self, idx: torch.Tensor, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        """The training noise of the samples ``idx`` of a batch."""
        if self.fixed is not None:
            return self.fixed[idx]
        return gaussian((idx.shape[0],) + tuple(shape), self.noise, dtype)
