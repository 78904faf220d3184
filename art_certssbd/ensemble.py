"""M models of one architecture held as stacked parameters, evaluated with ``torch.func`` (pure torch).

:class:`StackedEnsemble` keeps member ``k``'s parameters at index ``k`` of stacked tensors
(:func:`torch.func.stack_module_state`). Two fast backends evaluate them, chosen by ``backend``:

* ``"vmap"``: all members of a chunk at once with ``vmap(functional_call)`` (one grouped kernel per layer; the
  default on CUDA, where the members' small kernels would otherwise be launch-bound);
* ``"sequential"``: one ``functional_call`` per member on a slice of the stacked parameters, convolution weights in
  channels-last layout (the default on CPU, where oneDNN runs one member's large batch 2-4x faster than vmap's grouped
  convolution and its max-pooling with indices; measured in ``benchmarks/speed.py``).

``"auto"`` picks ``"vmap"`` on CUDA and ``"sequential"`` elsewhere. Every path has a loop twin (``vectorize=False``)
that rebuilds member ``k`` as an ordinary module and runs it on the same inputs and noise; all agree to
floating-point rounding. Mixed precision (``amp``) and ``torch.compile`` are opt-in (:mod:`art_certssbd.accelerators`).

:func:`vote` implements step 5 of the method: member ``k`` classifies ``x + sigma_x * e_k`` where ``e_k`` is a fixed
per-member test noise drawn from the member's own generator, and the votes are counted with one ``bincount``.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable, Sequence

import torch
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from art_certssbd.accelerators import autocast, check_accelerators
from art_certssbd.noise import add_noise

logger = logging.getLogger(__name__)

#: ``noise_fn(ks, draws, shape)`` returns the test noise of members ``ks``: shape ``(len(ks), draws, *shape)``.
NoiseFn = Callable[[Sequence[int], int, Sequence[int]], torch.Tensor]

BACKENDS = ("auto", "vmap", "sequential")


def has_batchnorm(module: torch.nn.Module) -> bool:
    """Whether ``module`` contains batch normalisation (whose running statistics cannot be updated under vmap)."""
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules())


def resolve_backend(backend: str, device: torch.device | str, vectorize: bool = True) -> str:
    """The backend that ``backend`` means on ``device``: ``"auto"`` is ``"vmap"`` on CUDA, ``"sequential"`` elsewhere;
    ``vectorize=False`` always gives ``"loop"`` (the reference twin).

    :param backend: One of :data:`BACKENDS`.
    :param device: Device of the computation.
    :param vectorize: ``False`` selects the loop twin whatever ``backend`` says.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not vectorize:
        return "loop"
    if backend == "auto":
        return "vmap" if torch.device(device).type == "cuda" else "sequential"
    return backend


def to_channels_last(t: torch.Tensor) -> torch.Tensor:
    """A 4-D tensor with explicit channels-last strides (``Tensor.contiguous`` keeps NCHW strides when a dimension is
    1, e.g. a one-channel convolution weight, which would leave oneDNN in NCHW); other tensors unchanged."""
    if t.dim() != 4 or t.stride() == torch.empty_like(t, memory_format=torch.channels_last).stride():
        return t
    return torch.empty_like(t, memory_format=torch.channels_last).copy_(t)


def module_to_channels_last(module: torch.nn.Module) -> torch.nn.Module:
    """Convert the 4-D parameters of ``module`` (convolution weights) to channels-last strides, in place."""
    with torch.no_grad():
        for param in module.parameters():
            if param.dim() == 4:
                param.data = to_channels_last(param.data)
    return module


class StackedEnsemble:
    """Members of one architecture with stacked parameters.

    :param template: A module of the members' architecture (its own weights are not used).
    :param params: Stacked parameters, ``name -> (M, *shape)``.
    :param buffers: Stacked buffers, ``name -> (M, *shape)``.
    """

    def __init__(self, template: torch.nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor]):
        sizes = {t.shape[0] for t in list(params.values()) + list(buffers.values())}
        if len(sizes) != 1:
            raise ValueError(f"stacked parameters must share their first axis, got sizes {sorted(sizes)}")
        self.template = copy.deepcopy(template).to("meta").eval()  # members vote in eval mode (no dropout)
        self.params = {name: p.detach() for name, p in params.items()}
        self.buffers = {name: b.detach() for name, b in buffers.items()}
        self._compiled: dict[str, Callable] = {}

    @classmethod
    def from_modules(cls, modules: Sequence[torch.nn.Module]) -> StackedEnsemble:
        """Stack the parameters of same-architecture modules (module ``k`` becomes member ``k``)."""
        if len(modules) == 0:
            raise ValueError("modules must hold at least one module, got an empty sequence")
        params, buffers = stack_module_state(list(modules))
        return cls(modules[0], params, buffers)

    @classmethod
    def from_state_dicts(cls, template: torch.nn.Module, state_dicts: Sequence[dict]) -> StackedEnsemble:
        """Build the ensemble from one ``state_dict`` per member, in ``template``'s architecture.

        Each state is checked against ``template`` (the same keys and shapes, as a strict ``load_state_dict``) and
        copied into preallocated stacked tensors (cast to the template's dtypes and device), one member at a time:
        with a lazy sequence (e.g. one that loads member ``k``'s file in ``__getitem__``) only one member's state is
        held besides the stack.
        """
        n = len(state_dicts)
        if n == 0:
            raise ValueError("state_dicts must hold at least one state_dict, got an empty sequence")
        expected = template.state_dict()
        tensors = dict(template.named_parameters())
        names = set(tensors)
        tensors.update(template.named_buffers())
        stacked = {
            name: torch.empty((n,) + tuple(t.shape), dtype=t.dtype, device=t.device) for name, t in tensors.items()
        }
        for k in range(n):
            state = state_dicts[k]
            missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
            shapes = [
                f"{name}: {tuple(state[name].shape)} instead of {tuple(t.shape)}"
                for name, t in expected.items()
                if name in state and tuple(state[name].shape) != tuple(t.shape)
            ]
            if missing or unexpected or shapes:
                raise ValueError(
                    f"state_dicts[{k}] does not fit the template architecture: missing keys {missing}, unexpected "
                    f"keys {unexpected}, wrong shapes {shapes}"
                )
            with torch.no_grad():
                for name, out in stacked.items():
                    # a non-persistent buffer is not in the state: every member has the template's
                    out[k].copy_(state[name] if name in expected else tensors[name])
        params = {name: t for name, t in stacked.items() if name in names}
        return cls(template, params, {name: t for name, t in stacked.items() if name not in names})

    @property
    def nb_models(self) -> int:
        """Number of members M."""
        return next(iter(self.params.values())).shape[0]

    @property
    def device(self) -> torch.device:
        """Device of the stacked parameters."""
        return next(iter(self.params.values())).device

    def to(self, device: torch.device | str) -> StackedEnsemble:
        """Move the stacked parameters and buffers to ``device`` (in place) and return ``self``."""
        self.params = {n: p.to(device) for n, p in self.params.items()}
        self.buffers = {n: b.to(device) for n, b in self.buffers.items()}
        self._compiled = {}
        return self

    def state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """The ``state_dict`` of member ``k`` (CPU copies)."""
        return {n: t[k].detach().cpu().clone() for n, t in {**self.params, **self.buffers}.items()}

    def member(self, k: int) -> torch.nn.Module:
        """Member ``k`` as an ordinary module in eval mode, on the ensemble's device."""
        module = copy.deepcopy(self.template).to_empty(device=self.device)
        module.load_state_dict(self.state_dict(k))
        return module.eval()

    def _chunk(self, start: int, stop: int) -> tuple[dict, dict]:
        return ({n: p[start:stop] for n, p in self.params.items()}, {n: b[start:stop] for n, b in self.buffers.items()})

    def member_state(self, k: int, channels_last: bool = False) -> tuple[dict, dict]:
        """Views of member ``k``'s parameters and buffers (convolution weights copied to channels-last if asked)."""
        convert = to_channels_last if channels_last else (lambda t: t)
        return {n: convert(p[k]) for n, p in self.params.items()}, {n: b[k] for n, b in self.buffers.items()}

    def __getstate__(self) -> dict:
        """Pickle / deepcopy without the cached (possibly compiled) forward functions, which are rebuilt on use."""
        state = self.__dict__.copy()
        state["_compiled"] = {}
        return state

    def _function(self, backend: str, compile: bool) -> Callable:
        """``f(params, buffers, x)`` of one member (``"sequential"``) or of a chunk (``"vmap"``), compiled if asked."""
        key = f"{backend}:{compile}"
        if key not in self._compiled:

            def call(p, b, xk):
                return functional_call(self.template, (p, b), (xk,))

            fn = vmap(call) if backend == "vmap" else call
            self._compiled[key] = torch.compile(fn) if compile else fn
        return self._compiled[key]

    def logits(
        self,
        x: torch.Tensor,
        start: int = 0,
        stop: int | None = None,
        vectorize: bool = True,
        *,
        backend: str = "auto",
        amp: str | None = None,
        compile: bool = False,
    ) -> torch.Tensor:
        """Logits of members ``start:stop``, member ``k`` on ``x[k - start]``.

        :param x: Per-member inputs, shape ``(stop - start, B, *input_shape)``.
        :param vectorize: ``False`` runs the loop twin (members rebuilt as ordinary modules).
        :param backend: One of :data:`BACKENDS` (see the module docstring).
        :param amp: Mixed precision on CUDA (``"bf16"`` or ``"fp16"``); logits are returned in float32.
        :param compile: ``torch.compile`` the forward function.
        :return: Logits, shape ``(stop - start, B, C)``.
        """
        stop = self.nb_models if stop is None else stop
        check_accelerators(x.device, amp, compile)
        return _Members(self, resolve_backend(backend, x.device, vectorize), start, stop, amp, compile).run(x)


def count_votes(pred: torch.Tensor, nb_classes: int) -> torch.Tensor:
    """Hard-vote counts of shape ``(N, nb_classes)`` from predicted labels of shape ``(V, N)`` (one ``bincount``)."""
    n = pred.shape[1]
    offsets = torch.arange(n, device=pred.device) * nb_classes
    return torch.bincount((pred + offsets).reshape(-1), minlength=n * nb_classes).reshape(n, nb_classes)


def vote(
    ensemble: StackedEnsemble,
    x: torch.Tensor,
    sigma: torch.Tensor,
    noise_fn: NoiseFn,
    nb_classes: int,
    *,
    draws_per_model: int = 1,
    nb_votes: int | None = None,
    start_vote: int = 0,
    soft: bool = False,
    batch_size: int = 256,
    max_images_per_pass: int = 8192,
    vectorize: bool = True,
    backend: str = "auto",
    amp: str | None = None,
    compile: bool = False,
    verbose: bool = False,
) -> torch.Tensor:
    """Smoothed votes of the ensemble on ``x``: member ``k`` classifies ``x + sigma * e_{k,j}``, ``j < draws``.

    Votes are numbered in member-major order (vote ``v`` is draw ``v % draws`` of member ``v // draws``); votes
    ``start_vote .. nb_votes - 1`` are counted, so consecutive calls with adjacent ranges add up to one call over
    their union (adaptive certification relies on this).

    :param ensemble: The trained members.
    :param x: Inputs, shape ``(N, *input_shape)``, on the ensemble's device.
    :param sigma: Test noise magnitude per input, shape ``(N,)``.
    :param noise_fn: Fixed per-member test noise (see :data:`NoiseFn`).
    :param nb_classes: Number of classes C.
    :param draws_per_model: Noise draws per member.
    :param nb_votes: End (exclusive) of the counted votes (default: all ``M * draws``).
    :param start_vote: First counted vote (default 0).
    :param soft: Return summed softmax scores (the official code's soft votes) instead of hard-vote counts.
    :param batch_size: Inputs per pass.
    :param max_images_per_pass: Bound on ``members * draws * inputs`` evaluated in one vectorised pass (it also
           bounds the test noise held at once).
    :param vectorize: Use a fast backend (default) or the loop twin (``False``).
    :param backend: One of :data:`BACKENDS`: ``"auto"`` (default), ``"vmap"`` or ``"sequential"``.
    :param amp: Mixed precision on CUDA: ``"bf16"`` or ``"fp16"`` autocast (default ``None``, float32).
    :param compile: ``torch.compile`` the forward function (CUDA or CPU).
    :param verbose: Progress bar over member chunks.
    :return: ``(N, C)`` int64 counts, or float sums of scores when ``soft``.
    """
    total = ensemble.nb_models * draws_per_model
    nb_votes = total if nb_votes is None else nb_votes
    if not 1 <= nb_votes <= total:
        raise ValueError(f"nb_votes must be in [1, {total}] (nb_models * draws_per_model), got {nb_votes}")
    if not 0 <= start_vote < nb_votes:
        raise ValueError(f"start_vote must be in [0, nb_votes={nb_votes}), got {start_vote}")
    check_accelerators(x.device, amp, compile)
    backend = resolve_backend(backend, x.device, vectorize)
    first, last = start_vote // draws_per_model, -(-nb_votes // draws_per_model)
    shape = tuple(x.shape[1:])
    out = torch.zeros(x.shape[0], nb_classes, device=x.device, dtype=torch.float64 if soft else torch.int64)
    batch_size = min(batch_size, max(1, x.shape[0]))
    chunk = max(1, max_images_per_pass // (draws_per_model * batch_size))
    with torch.inference_mode():
        for m0 in tqdm(range(first, last, chunk), desc="Votes", disable=not verbose):
            m1 = min(m0 + chunk, last)
            eps = noise_fn(range(m0, m1), draws_per_model, shape).to(x.device, x.dtype)
            # only votes in [start_vote, nb_votes) are counted (member-major order)
            index = torch.arange(m0 * draws_per_model, m1 * draws_per_model, device=x.device)
            keep = ((index >= start_vote) & (index < nb_votes)).reshape(m1 - m0, draws_per_model)
            members = _Members(ensemble, backend, m0, m1, amp, compile)
            for n0 in range(0, x.shape[0], batch_size):
                x_b, s_b = x[n0 : n0 + batch_size], sigma[n0 : n0 + batch_size]
                size = (draws_per_model * x_b.shape[0],) + shape
                if backend == "vmap":  # (Mc, d, B, *shape): every member and draw sees every input of the batch
                    inputs = add_noise(x_b[None, None], s_b[None, None], eps.unsqueeze(2)).reshape((m1 - m0,) + size)
                else:  # member i's (d, B) noisy copies are built just before its pass (cache-resident)
                    inputs = functools.partial(_noisy_copies, x_b, s_b, eps, size)
                logits = members.run(inputs).reshape(m1 - m0, draws_per_model, x_b.shape[0], -1)
                if logits.shape[-1] != nb_classes:
                    raise ValueError(f"the model returns {logits.shape[-1]} outputs, expected nb_classes={nb_classes}")
                if soft:
                    scores = torch.softmax(logits.double(), dim=-1) * keep[..., None, None]
                    out[n0 : n0 + x_b.shape[0]] += scores.sum(dim=(0, 1))
                else:
                    out[n0 : n0 + x_b.shape[0]] += count_votes(logits.argmax(dim=-1)[keep], nb_classes)
    return out  # created outside inference mode: a normal tensor for the caller


def _noisy_copies(x_b: torch.Tensor, s_b: torch.Tensor, eps: torch.Tensor, size: tuple, i: int) -> torch.Tensor:
    """Member ``i``'s noisy copies ``x_b + s_b * eps[i, j]`` of a batch, flattened to ``(draws * B, *shape)``."""
    return add_noise(x_b, s_b, eps[i].unsqueeze(1)).reshape(size)


class _Members:
    """Members ``m0:m1`` of the ensemble with the forward pass of one backend (set up once per chunk)."""

    def __init__(self, ensemble: StackedEnsemble, backend: str, m0: int, m1: int, amp: str | None, compile: bool):
        self.backend, self.size, self.amp, self.device = backend, m1 - m0, amp, ensemble.device
        if backend == "loop":  # the reference twin: ordinary modules
            self.calls = [(ensemble.member(k), ()) for k in range(m0, m1)]
        elif backend == "sequential":
            fn, cl = ensemble._function("sequential", compile), self.device.type == "cpu"
            self.calls = [(fn, ensemble.member_state(k, cl)) for k in range(m0, m1)]
        else:
            self.vmapped, self.state = ensemble._function("vmap", compile), ensemble._chunk(m0, m1)

    def run(self, inputs: torch.Tensor | Callable[[int], torch.Tensor]) -> torch.Tensor:
        """Logits ``(Mc, n, C)`` of member ``m0 + i`` on ``inputs[i]`` (a ``(Mc, n, *shape)`` tensor), or on
        ``inputs(i)`` (a callable, evaluated just before member ``i``'s pass)."""
        get = inputs.__getitem__ if isinstance(inputs, torch.Tensor) else inputs
        with autocast(self.device, self.amp):
            if self.backend == "vmap":
                batch = inputs if isinstance(inputs, torch.Tensor) else torch.stack([get(i) for i in range(self.size)])
                out = self.vmapped(*self.state, batch)
            else:
                out = torch.stack([fn(*state, get(i)) for i, (fn, state) in enumerate(self.calls)])
        return out.float() if self.amp is not None else out
