"""M models of one architecture held as stacked parameters, evaluated with ``torch.func`` (pure torch).

:class:`StackedEnsemble` keeps member ``k``'s parameters at index ``k`` of stacked tensors
(:func:`torch.func.stack_module_state`) and runs all members at once with ``vmap(functional_call)``. Every
vectorised path has a loop twin (``vectorize=False``) that runs one member at a time on the same inputs and noise;
the two agree to floating-point rounding.

:func:`vote` implements step 5 of the method: member ``k`` classifies ``x + sigma_x * e_k`` where ``e_k`` is a fixed
per-member test noise drawn from the member's own generator, and the votes are counted with one ``bincount``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence

import torch
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from art_certssbd.noise import expand_sigma

logger = logging.getLogger(__name__)

#: ``noise_fn(ks, draws, shape)`` returns the test noise of members ``ks``: shape ``(len(ks), draws, *shape)``.
NoiseFn = Callable[[Sequence[int], int, Sequence[int]], torch.Tensor]


def has_batchnorm(module: torch.nn.Module) -> bool:
    """Whether ``module`` contains batch normalisation (whose running statistics cannot be updated under vmap)."""
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules())


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
        # inference only: eval mode, so that dropout is off and batch norm uses its running statistics
        self.template = copy.deepcopy(template).to("meta").eval()
        self.params = {name: p.detach() for name, p in params.items()}
        self.buffers = {name: b.detach() for name, b in buffers.items()}

    @classmethod
    def from_modules(cls, modules: Sequence[torch.nn.Module]) -> StackedEnsemble:
        """Stack the parameters of same-architecture modules (module ``k`` becomes member ``k``)."""
        if len(modules) == 0:
            raise ValueError("modules must hold at least one module, got an empty sequence")
        params, buffers = stack_module_state(list(modules))
        return cls(modules[0], params, buffers)

    @classmethod
    def from_state_dicts(cls, template: torch.nn.Module, state_dicts: Sequence[dict]) -> StackedEnsemble:
        """Build the ensemble from one ``state_dict`` per member, loaded into copies of ``template``."""
        modules = []
        for k, state in enumerate(state_dicts):
            module = copy.deepcopy(template)
            try:
                module.load_state_dict(state)
            except RuntimeError as err:
                raise ValueError(f"state_dicts[{k}] does not fit the template architecture: {err}") from err
            modules.append(module)
        return cls.from_modules(modules)

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

    def logits(self, x: torch.Tensor, start: int = 0, stop: int | None = None, vectorize: bool = True) -> torch.Tensor:
        """Logits of members ``start:stop``, member ``k`` on ``x[k - start]``.

        :param x: Per-member inputs, shape ``(stop - start, B, *input_shape)``.
        :return: Logits, shape ``(stop - start, B, C)``.
        """
        stop = self.nb_models if stop is None else stop
        if vectorize:
            params, buffers = self._chunk(start, stop)

            def call(p, b, xk):
                return functional_call(self.template, (p, b), (xk,))

            return vmap(call)(params, buffers, x)
        return torch.stack([self.member(k)(x[k - start]) for k in range(start, stop)])


def count_votes(pred: torch.Tensor, nb_classes: int) -> torch.Tensor:
    """Hard-vote counts of shape ``(N, nb_classes)`` from predicted labels of shape ``(V, N)`` (one ``bincount``)."""
    n = pred.shape[1]
    offsets = torch.arange(n, device=pred.device) * nb_classes
    return torch.bincount((pred + offsets).reshape(-1), minlength=n * nb_classes).reshape(n, nb_classes)


@torch.no_grad()
def vote(
    ensemble: StackedEnsemble,
    x: torch.Tensor,
    sigma: torch.Tensor,
    noise_fn: NoiseFn,
    nb_classes: int,
    *,
    draws_per_model: int = 1,
    nb_votes: int | None = None,
    soft: bool = False,
    batch_size: int = 256,
    max_images_per_pass: int = 8192,
    vectorize: bool = True,
    verbose: bool = False,
) -> torch.Tensor:
    """Smoothed votes of the ensemble on ``x``: member ``k`` classifies ``x + sigma * e_{k,j}``, ``j < draws``.

    :param ensemble: The trained members.
    :param x: Inputs, shape ``(N, *input_shape)``, on the ensemble's device.
    :param sigma: Test noise magnitude per input, shape ``(N,)``.
    :param noise_fn: Fixed per-member test noise (see :data:`NoiseFn`).
    :param nb_classes: Number of classes C.
    :param draws_per_model: Noise draws per member.
    :param nb_votes: Use only the first ``nb_votes`` votes in member-major order (default: all ``M * draws``).
    :param soft: Return summed softmax scores (the official code's soft votes) instead of hard-vote counts.
    :param batch_size: Inputs per pass.
    :param max_images_per_pass: Bound on ``members * draws * inputs`` evaluated in one vectorised pass.
    :param vectorize: ``vmap`` over members (default) or loop over them.
    :param verbose: Progress bar over member chunks.
    :return: ``(N, C)`` int64 counts, or float sums of scores when ``soft``.
    """
    total = ensemble.nb_models * draws_per_model
    nb_votes = total if nb_votes is None else nb_votes
    if not 1 <= nb_votes <= total:
        raise ValueError(f"nb_votes must be in [1, {total}] (nb_models * draws_per_model), got {nb_votes}")
    nb_members = -(-nb_votes // draws_per_model)
    shape = tuple(x.shape[1:])
    out = torch.zeros(x.shape[0], nb_classes, device=x.device, dtype=torch.float64 if soft else torch.int64)
    batch_size = min(batch_size, max(1, x.shape[0]))
    chunk = max(1, max_images_per_pass // (draws_per_model * batch_size))
    for m0 in tqdm(range(0, nb_members, chunk), desc="Votes", disable=not verbose):
        m1 = min(m0 + chunk, nb_members)
        eps = noise_fn(range(m0, m1), draws_per_model, shape).to(x.device, x.dtype)
        # votes beyond nb_votes in the last member are masked out (member-major order)
        keep = (torch.arange(m0 * draws_per_model, m1 * draws_per_model, device=x.device) < nb_votes).reshape(
            m1 - m0, draws_per_model
        )
        for n0 in range(0, x.shape[0], batch_size):
            x_b, s_b = x[n0 : n0 + batch_size], sigma[n0 : n0 + batch_size]
            b = x_b.shape[0]
            # (Mc, d, B, *shape): every member and draw sees every input of the batch
            noisy = x_b.unsqueeze(0).unsqueeze(0) + expand_sigma(s_b, x_b.dim()) * eps.unsqueeze(2)
            logits = ensemble.logits(noisy.reshape((m1 - m0, draws_per_model * b) + shape), m0, m1, vectorize)
            logits = logits.reshape(m1 - m0, draws_per_model, b, -1)
            if logits.shape[-1] != nb_classes:
                raise ValueError(f"the model returns {logits.shape[-1]} outputs, expected nb_classes={nb_classes}")
            if soft:
                scores = torch.softmax(logits.double(), dim=-1) * keep[..., None, None]
                out[n0 : n0 + b] += scores.sum(dim=(0, 1))
            else:
                pred = logits.argmax(dim=-1)[keep]  # (votes, B)
                out[n0 : n0 + b] += count_votes(pred, nb_classes)
    return out
