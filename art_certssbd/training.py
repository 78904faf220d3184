"""Training the ensemble on ``x_i + sigma_i * b_{k,i}`` (method.md, step 3; pure torch).

Member ``k`` depends on nothing but its own three generators, seeded from ``(random_state, k)``: ``init`` (its
initial weights), ``shuffle`` (its mini-batch order) and ``train_noise`` (its noise ``b_k``, fixed per training sample
by default, fresh per batch with ``noise="fresh"``). So members can be trained one by one (the loop path), in
vectorised chunks (``vmap`` over stacked parameters, the default), or resumed after an interruption, and end the
same. Element-wise optimisers (SGD, Adam, AdamW, RMSprop, Adagrad, ...) on stacked parameters are exactly
per-member optimisers; an optimiser that couples parameters (LBFGS, gradient clipping by a global norm) is not, so
use ``vectorize=False`` with those.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Sequence

import torch
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from art_certssbd.ensemble import has_batchnorm
from art_certssbd.noise import derive_seed, expand_sigma, gaussian, make_generator

logger = logging.getLogger(__name__)

NOISE_MODES = ("fixed", "fresh")

OptimizerFactory = Callable[[Iterable[torch.Tensor]], torch.optim.Optimizer]


def init_member(template: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A copy of ``template`` re-initialised by its modules' own ``reset_parameters`` under a private CPU generator.

    The global generator is forked, seeded and restored, so the caller's random state is untouched.
    """
    module = copy.deepcopy(template).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for sub in module.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()
    return module


class _Streams:
    """The shuffle and noise generators of one model, and its fixed training noise (``noise="fixed"``)."""

    def __init__(self, shuffle_seed: int, noise_seed: int, x: torch.Tensor, noise: str):
        self.shuffle = make_generator(shuffle_seed, x.device)
        self.noise = make_generator(noise_seed, x.device)
        self.fixed = gaussian(x.shape, self.noise, x.dtype) if noise == "fixed" else None

    @classmethod
    def of_member(cls, random_state: int, k: int, x: torch.Tensor, noise: str) -> _Streams:
        return cls(derive_seed(random_state, "shuffle", k), derive_seed(random_state, "train_noise", k), x, noise)

    def permutation(self, n: int) -> torch.Tensor:
        return torch.randperm(n, generator=self.shuffle, device=self.shuffle.device)

    def batch_noise(self, idx: torch.Tensor, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        if self.fixed is not None:
            return self.fixed[idx]
        return gaussian((idx.shape[0],) + tuple(shape), self.noise, dtype)


def train_members(
    template: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    sigma: torch.Tensor,
    members: Sequence[int],
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer_factory: OptimizerFactory,
    random_state: int,
    nb_epochs: int,
    batch_size: int,
    noise: str = "fixed",
    vectorize: bool = True,
    verbose: bool = False,
) -> list[dict[str, torch.Tensor]]:
    """Train ensemble members ``members`` from scratch and return their ``state_dict`` s (CPU tensors).

    :param template: The members' architecture.
    :param x: Training inputs, shape ``(N, *input_shape)``, on the training device.
    :param y: Integer labels, shape ``(N,)``, on the same device.
    :param sigma: Per-sample noise magnitude, shape ``(N,)``.
    :param members: Indices ``k`` of the members to train (they fix the seeds).
    :param loss_fn: Loss on ``(logits, labels)`` of one member, e.g. ``torch.nn.CrossEntropyLoss()``.
    :param optimizer_factory: Builds an optimiser over a parameter list.
    :param random_state: The ensemble seed.
    :param nb_epochs: Epochs per member.
    :param batch_size: Mini-batch size.
    :param noise: ``"fixed"`` (one noise tensor per member, RAB / the paper) or ``"fresh"`` (new noise each batch).
    :param vectorize: Train all ``members`` at once with ``vmap`` (default) or one after the other.
    :param verbose: Progress bar.
    """
    if noise not in NOISE_MODES:
        raise ValueError(f"noise must be one of {NOISE_MODES}, got {noise!r}")
    if vectorize and has_batchnorm(template):
        logger.warning("The model has BatchNorm layers, which vmap cannot train: using the loop path.")
        vectorize = False
    if vectorize and any(isinstance(m, torch.nn.modules.dropout._DropoutNd) for m in template.modules()):
        # under vmap one generator draws the masks of all members of a chunk, so member k would depend on its chunk
        logger.warning("The model has dropout layers, whose masks vmap draws per chunk: using the loop path.")
        vectorize = False
    if vectorize:
        return _train_vectorized(
            template,
            x,
            y,
            sigma,
            members,
            loss_fn,
            optimizer_factory,
            random_state,
            nb_epochs,
            batch_size,
            noise,
            verbose,
        )
    return [
        _train_one(template, x, y, sigma, k, loss_fn, optimizer_factory, random_state, nb_epochs, batch_size, noise)
        for k in tqdm(members, desc="Ensemble", disable=not verbose)
    ]


def _batches(n: int, batch_size: int) -> list[slice]:
    return [slice(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def _fit(model, optimizer, streams, x, y, sigma, loss_fn, nb_epochs, batch_size, torch_seed) -> None:
    """The training loop of one model; the model's own global randomness (dropout) is seeded and isolated."""
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed)
        for _ in range(nb_epochs):
            perm = streams.permutation(x.shape[0])
            for part in _batches(x.shape[0], batch_size):
                idx = perm[part]
                x_noisy = x[idx] + expand_sigma(sigma[idx], x.dim()) * streams.batch_noise(idx, x.shape[1:], x.dtype)
                optimizer.zero_grad(set_to_none=True)
                loss_fn(model(x_noisy), y[idx]).backward()
                optimizer.step()


def fit_model(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    sigma: torch.Tensor | float,
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    seed: int,
    nb_epochs: int,
    batch_size: int,
    noise: str = "fresh",
) -> torch.nn.Module:
    """Train ``model`` in place on ``x_i + sigma_i * noise`` (used for the base model's warm-up); ``seed`` fixes
    the data order and the noise.

    :return: ``model``, in train mode.
    """
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
    streams = _Streams(derive_seed(seed, "shuffle"), derive_seed(seed, "train_noise"), x, noise)
    _fit(model, optimizer, streams, x, y, sigma, loss_fn, nb_epochs, batch_size, seed)
    return model


def _train_one(template, x, y, sigma, k, loss_fn, optimizer_factory, random_state, nb_epochs, batch_size, noise):
    """The loop twin: one member, one optimiser."""
    seed = derive_seed(random_state, "init", k)
    model = init_member(template, seed).to(x.device)
    streams = _Streams.of_member(random_state, k, x, noise)
    _fit(model, optimizer_factory(model.parameters()), streams, x, y, sigma, loss_fn, nb_epochs, batch_size, seed)
    return {n: t.detach().cpu().clone() for n, t in model.state_dict().items()}


def _train_vectorized(
    template, x, y, sigma, members, loss_fn, optimizer_factory, random_state, nb_epochs, batch_size, noise, verbose
):
    """All ``members`` at once: stacked parameters, one optimiser over them, ``vmap(functional_call)``."""
    modules = [init_member(template, derive_seed(random_state, "init", k)).to(x.device).train() for k in members]
    params, buffers = stack_module_state(modules)
    base = copy.deepcopy(modules[0]).to("meta")
    optimizer = optimizer_factory(list(params.values()))
    streams = [_Streams.of_member(random_state, k, x, noise) for k in members]

    def call(p, b, xk):
        return functional_call(base, (p, b), (xk,))

    forward = vmap(call, randomness="different")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(random_state, "init", members[0]))
        for _ in tqdm(range(nb_epochs), desc=f"Ensemble ({len(members)} models)", disable=not verbose):
            perm = torch.stack([s.permutation(x.shape[0]) for s in streams])  # (Mc, N)
            for part in _batches(x.shape[0], batch_size):
                idx = perm[:, part]  # (Mc, B)
                eps = torch.stack([s.batch_noise(i, x.shape[1:], x.dtype) for s, i in zip(streams, idx)])
                x_noisy = x[idx] + expand_sigma(sigma[idx], x.dim() + 1) * eps
                logits = forward(params, buffers, x_noisy)
                labels = y[idx]
                optimizer.zero_grad(set_to_none=True)
                # the sum of the members' losses: each member's gradient is its own loss's gradient
                torch.stack([loss_fn(logits[m], labels[m]) for m in range(len(members))]).sum().backward()
                optimizer.step()
    return [{n: t[m].detach().cpu().clone() for n, t in {**params, **buffers}.items()} for m in range(len(members))]


def optimizer_factory_from(optimizer: torch.optim.Optimizer) -> OptimizerFactory:
    """A factory that builds optimisers of ``optimizer``'s type with its default hyper-parameters (ART's pattern in
    :meth:`PyTorchClassifier.clone_for_refitting`)."""
    kind, defaults = type(optimizer), dict(optimizer.defaults)

    def factory(params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
        return kind(params, **defaults)

    return factory
