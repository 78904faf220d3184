"""Training the ensemble on ``x_i + sigma_i * b_{k,i}`` (method.md, step 3; pure torch).

Member ``k`` depends on nothing but its own three generators, seeded from ``(random_state, k)``: ``init`` (its
initial weights), ``shuffle`` (its mini-batch order) and ``train_noise`` (its noise ``b_k``, fixed per training sample
by default, fresh per batch with ``noise="fresh"``). So members can be trained one by one (the loop path), in
vectorised chunks (``vmap`` over stacked parameters, the default), or resumed after an interruption, and end the
same. Element-wise optimisers (SGD, Adam, AdamW, RMSprop, Adagrad, ...) on stacked parameters are exactly
per-member optimisers; an optimiser that couples parameters (LBFGS, gradient clipping by a global norm) is not, so
use ``vectorize=False`` with those.

Backends (``backend``, as in :mod:`art_certssbd.ensemble`): ``"vmap"`` trains a chunk of members at once on stacked
parameters (the default on CUDA); ``"sequential"`` trains them one after the other with convolution weights in
channels-last layout (the default on CPU, where oneDNN's per-member kernels beat vmap's grouped convolutions; see
``benchmarks/speed.py``); ``vectorize=False`` is the loop twin (the same sequence, standard layout, the reference).
Mixed precision (``amp``) runs on CUDA, and ``"bf16"`` also on a CPU with native bfloat16; ``torch.compile``
(``compile``) runs on CUDA or CPU (see :func:`art_certssbd.accelerators.check_accelerators`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Sequence

import torch
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from art_certssbd.accelerators import autocast, check_accelerators
from art_certssbd.ensemble import has_batchnorm, module_to_channels_last, resolve_backend
from art_certssbd.noise import MemberStreams, add_noise, derive_seed

logger = logging.getLogger(__name__)

NOISE_MODES = ("fixed", "fresh")

OptimizerFactory = Callable[[Iterable[torch.Tensor]], torch.optim.Optimizer]


def init_member(template: torch.nn.Module, init_seed: int) -> torch.nn.Module:
    """A copy of ``template`` re-initialised by its modules' own ``reset_parameters`` under a private CPU generator.

    The global generator is forked, seeded and restored, so the caller's random state is untouched.

    :param template: The architecture (copied; its weights are not used or changed).
    :param init_seed: The seed of the initial weights: member ``k``'s is ``derive_seed(random_state, "init", k)``.
    :return: The re-initialised copy, on the CPU.
    """
    module = copy.deepcopy(template).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        for sub in module.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()
    return module


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
    backend: str = "auto",
    channels_last: bool | None = None,
    amp: str | None = None,
    compile: bool = False,
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
    :param vectorize: Use a fast backend (default) or the loop twin (``False``).
    :param backend: ``"auto"`` (``"vmap"`` on CUDA, ``"sequential"`` elsewhere), ``"vmap"`` or ``"sequential"``.
    :param channels_last: Convolution weights in channels-last layout (default: on CPU with the ``"sequential"``
           backend; the loop twin keeps the standard layout). Results agree to floating-point rounding.
    :param amp: Mixed precision: ``"bf16"`` (CUDA, or a CPU with native bfloat16) or ``"fp16"`` (CUDA, with gradient
           scaling) autocast.
    :param compile: ``torch.compile`` the forward pass (CUDA or CPU).
    :param verbose: Progress bar.
    """
    if noise not in NOISE_MODES:
        raise ValueError(f"noise must be one of {NOISE_MODES}, got {noise!r}")
    check_accelerators(x.device, amp, compile)
    backend = resolve_backend(backend, x.device, vectorize)
    if backend == "vmap" and has_batchnorm(template):
        logger.warning("The model has BatchNorm layers, which vmap cannot train: using the sequential backend.")
        backend = "sequential"
    if channels_last is None:
        channels_last = backend == "sequential" and x.device.type == "cpu"
    run = _Run(loss_fn, nb_epochs, batch_size, amp, compile, channels_last)
    if backend == "vmap":
        return _train_vectorized(template, x, y, sigma, members, optimizer_factory, random_state, noise, run, verbose)
    return [
        _train_one(template, x, y, sigma, k, optimizer_factory, random_state, noise, run)
        for k in tqdm(members, desc=f"Chunk of {len(members)} members", leave=False, disable=not verbose)
    ]


class _Run:
    """The training settings shared by every member: loss, epochs, batch size and the accelerator options."""

    def __init__(self, loss_fn, nb_epochs, batch_size, amp=None, compile=False, channels_last=False):
        self.loss_fn, self.nb_epochs, self.batch_size = loss_fn, nb_epochs, batch_size
        self.amp, self.compile, self.channels_last = amp, compile, channels_last

    def scaler(self, device: torch.device) -> torch.amp.GradScaler | None:
        """A gradient scaler for float16 autocast (bfloat16 and float32 need none)."""
        return torch.amp.GradScaler(device.type) if self.amp == "fp16" else None

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler) -> None:
        """Backward pass and optimiser step (through the scaler under float16)."""
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()


def _batches(n: int, batch_size: int) -> list[slice]:
    return [slice(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def _fit(model, optimizer, streams, x, y, sigma, run: _Run, dropout_seed, progress: str | None = None) -> None:
    """The training loop of one model; the model's own global randomness (dropout) is seeded with ``dropout_seed``
    and isolated. ``progress``: the description of a bar over the epochs (none without it)."""
    model.train()
    forward = torch.compile(model) if run.compile else model
    scaler = run.scaler(x.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(dropout_seed)
        for _ in tqdm(range(run.nb_epochs), desc=progress, unit="epoch", disable=progress is None):
            perm = streams.permutation(x.shape[0])
            for part in _batches(x.shape[0], run.batch_size):
                idx = perm[part]
                eps = streams.batch_noise(idx, x.shape[1:], x.dtype)
                x_noisy = add_noise(x[idx], sigma[idx], eps)
                with autocast(x.device, run.amp):
                    loss = run.loss_fn(forward(x_noisy), y[idx])
                run.step(loss, optimizer, scaler)


def fit_model(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    sigma: torch.Tensor | float,
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    random_state: int,
    nb_epochs: int,
    batch_size: int,
    noise: str = "fresh",
    amp: str | None = None,
    verbose: bool = False,
) -> torch.nn.Module:
    """Train ``model`` in place on ``x_i + sigma_i * noise`` (used for the base model's warm-up); ``random_state``
    fixes the data order, the noise and the model's own global randomness; ``amp`` as in :func:`train_members`.

    :param verbose: A progress bar over the epochs (``Warm-up``).
    :return: ``model``, in train mode.
    """
    check_accelerators(x.device, amp, False)
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
    streams = MemberStreams.of_seed(random_state, x, noise)
    _fit(
        model,
        optimizer,
        streams,
        x,
        y,
        sigma,
        _Run(loss_fn, nb_epochs, batch_size, amp),
        random_state,
        "Warm-up" if verbose else None,
    )
    return model


def _state_dict(tensors: dict[str, torch.Tensor], m: int | None = None) -> dict[str, torch.Tensor]:
    """CPU copies in the standard (contiguous) layout, of member ``m`` of stacked tensors if ``m`` is given."""
    return {
        n: (t if m is None else t[m]).detach().to("cpu", memory_format=torch.contiguous_format, copy=True)
        for n, t in tensors.items()
    }


def _train_one(template, x, y, sigma, k, optimizer_factory, random_state, noise, run: _Run):
    """One member, one optimiser (the loop twin, and the sequential backend with ``run.channels_last``)."""
    init_seed = derive_seed(random_state, "init", k)  # also seeds the member's dropout
    model = init_member(template, init_seed).to(x.device)
    if run.channels_last:
        module_to_channels_last(model)
    streams = MemberStreams.of_member(random_state, k, x, noise)
    _fit(model, optimizer_factory(model.parameters()), streams, x, y, sigma, run, init_seed)
    return _state_dict(model.state_dict())


def _train_vectorized(template, x, y, sigma, members, optimizer_factory, random_state, noise, run: _Run, verbose):
    """All ``members`` at once: stacked parameters, one optimiser over them, ``vmap(functional_call)``.

    The mini-batches are laid out member-second, ``(B, Mc, *input_shape)``, so that vmap's batching of the first
    convolution is a view rather than a copy; the members' fixed noise lives in one stacked tensor, gathered with one
    index per batch.
    """
    nb = len(members)
    modules = [init_member(template, derive_seed(random_state, "init", k)).to(x.device).train() for k in members]
    params, buffers = stack_module_state(modules)
    base = copy.deepcopy(modules[0]).to("meta")
    optimizer = optimizer_factory(list(params.values()))
    stacked = torch.empty((nb,) + tuple(x.shape), dtype=x.dtype, device=x.device) if noise == "fixed" else None
    streams = [
        MemberStreams.of_member(random_state, k, x, noise, None if stacked is None else stacked[m])
        for m, k in enumerate(members)
    ]
    rows = torch.arange(nb, device=x.device)

    def call(p, b, xk):
        return functional_call(base, (p, b), (xk,))

    forward = vmap(call, in_dims=(0, 0, 1), randomness="different")
    forward = torch.compile(forward) if run.compile else forward
    loss = _member_losses(run.loss_fn)
    scaler = run.scaler(x.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(random_state, "init", members[0]))
        for _ in tqdm(
            range(run.nb_epochs), desc=f"Chunk of {nb} members", unit="epoch", leave=False, disable=not verbose
        ):
            perm = torch.stack([s.permutation(x.shape[0]) for s in streams])  # (Mc, N)
            for part in _batches(x.shape[0], run.batch_size):
                idx = perm[:, part].T  # (B, Mc)
                if stacked is not None:
                    eps = stacked[rows, idx]
                else:
                    eps = torch.stack([s.batch_noise(i, x.shape[1:], x.dtype) for s, i in zip(streams, idx.T)], 1)
                x_noisy = add_noise(x[idx], sigma[idx], eps)
                with autocast(x.device, run.amp):
                    logits = forward(params, buffers, x_noisy)  # (Mc, B, C)
                    # the sum of the members' losses: each member's gradient is its own loss's gradient
                    total = loss(logits, y[idx.T])
                run.step(total, optimizer, scaler)
    return [_state_dict({**params, **buffers}, m) for m in range(nb)]


def _member_losses(loss_fn):
    """``f(logits, labels)``: the sum over members of ``loss_fn(logits[m], labels[m])``, vmapped when ``loss_fn``
    allows it (checked on the first call), else a loop over members."""
    vmapped = vmap(loss_fn)
    state = {"vmap": None}

    def total(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if state["vmap"] is not False:
            try:
                out = vmapped(logits, labels)
                if out.shape == (logits.shape[0],):
                    state["vmap"] = True
                    return out.sum()
            except (RuntimeError, ValueError, NotImplementedError):  # a loss without batching rules
                if state["vmap"]:
                    raise
            state["vmap"] = False
        return torch.stack([loss_fn(logits[m], labels[m]) for m in range(logits.shape[0])]).sum()

    return total


def optimizer_factory_from(optimizer: torch.optim.Optimizer) -> OptimizerFactory:
    """A factory that builds optimisers of ``optimizer``'s type with its default hyper-parameters (ART's pattern in
    :meth:`PyTorchClassifier.clone_for_refitting`)."""
    kind, defaults = type(optimizer), dict(optimizer.defaults)

    def factory(params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
        return kind(params, **defaults)

    return factory
