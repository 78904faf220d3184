"""Where and how the steps of one call run: :class:`Executor` (here, Ray tasks, or members streamed from disk, decided
once per call), :class:`SigmaSearch` (the sigma optimiser's settings) and :class:`VoteSettings` (the vote's).

Every path gives the same numbers: the Ray executor shards the same computations
(:mod:`art_certssbd.ray_backend`), the streamed members vote in blocks whose counts add up
(:mod:`art_certssbd.streaming`).
"""

from __future__ import annotations

import dataclasses
import functools

import torch

from art_certssbd.ensemble import vote
from art_certssbd.ray_backend import import_ray, resolve_executor
from art_certssbd.sigma import optimize_sigma
from art_certssbd.streaming import SavedEnsemble, stream_votes


class Executor:
    """Where the work of one call runs, decided once from the ``executor`` parameter and the members: Ray tasks
    (``"ray"`` or a :class:`~art_certssbd.ray_backend.RayExecutor`), blocks of a
    :class:`~art_certssbd.streaming.SavedEnsemble` read from disk, or here. Every path gives the same numbers."""

    def __init__(self, executor, members=None):
        self.ray = resolve_executor(executor)
        self.streamed = isinstance(members, SavedEnsemble)

    def member_runner(self, verbose: bool):
        """How ``fit`` trains the members: ``None`` here, or the Ray executor's task runner."""
        if self.ray is None:
            return None
        import_ray()  # without Ray, fail here, before the warm-up's work
        return functools.partial(self.ray.train_members, verbose=verbose)

    def vote(self, members, x, sigma, noise_fn, settings: VoteSettings, *, start_vote, nb_votes, batch_size, verbose):
        """The members' votes ``start_vote .. nb_votes - 1`` on ``x`` (a ``(N, C)`` int64 tensor)."""
        if self.ray is not None:  # blocks of members vote as Ray tasks (in memory or read from a saved ensemble)
            run = self.ray.vote
        else:  # blocks of members read from disk within memory_budget, or the members in memory
            run = stream_votes if self.streamed else vote
        return run(members, x, sigma, noise_fn, settings.nb_classes, draws_per_model=settings.draws_per_model,
                   start_vote=start_vote, nb_votes=nb_votes, batch_size=batch_size, vectorize=settings.vectorize,
                   amp=settings.amp, compile=settings.compile, verbose=verbose)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class SigmaSearch:
    """The sigma optimiser's settings (the estimator's ``scale`` and ``sigma_*``) and where it runs."""

    scale: float
    steps: int
    lr: float
    samples: int
    bounds: tuple[float, float] | None
    update: str
    tol: float | None
    patience: int
    amp: str | None
    executor: Executor

    def run(self, model: torch.nn.Module, x: torch.Tensor, random_state: int, verbose: bool = False) -> torch.Tensor:
        """Per-sample sigma by SGA (``scale`` everywhere when ``steps == 0``), here or sharded over Ray tasks (the
        same sigmas); ``tol=None`` runs every step, bitwise as before early stopping existed."""
        low, high = self.bounds if self.bounds is not None else (None, None)
        early, tol = self.tol is not None, 0.0 if self.tol is None else float(self.tol)
        ray = self.executor.ray
        run = ray.optimize_sigma if ray is not None and self.steps > 0 else optimize_sigma  # the same sigmas
        return run(model, x, sigma0=self.scale, steps=self.steps, lr=self.lr, n_samples=self.samples, sigma_min=low,
                   sigma_max=high, update=self.update, random_state=random_state, amp=self.amp, early_stop=early,
                   tol=tol, patience=int(self.patience), verbose=verbose)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class VoteSettings:
    """How the members vote: classes, draws per member, and the speed options (the same votes either way)."""

    nb_classes: int
    draws_per_model: int
    vectorize: bool
    amp: str | None
    compile: bool
