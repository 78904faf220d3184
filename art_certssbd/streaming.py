"""Ensembles larger than memory: votes that read the members of a saved ensemble from disk, a block at a time.

A :class:`SavedEnsemble` stands for the members of an ensemble written by ``save_ensemble`` (or a finished ``fit``
checkpoint): it holds their directory, never their weights. :func:`stream_votes` lets blocks of members vote in turn,
each block as large as ``memory_budget`` allows, and adds the integer vote counts, which are those of one call of
:func:`art_certssbd.ensemble.vote` on the whole ensemble in memory (each member sees the same inputs and its own
test noise, whatever block it is in); the certificate is therefore the same. The Ray executor uses the same blocks
(:meth:`art_certssbd.ray_backend.RayExecutor.vote`), each task reading its members from the directory.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from tqdm.auto import tqdm

from art_certssbd.checkpoint import EnsembleCheckpoint
from art_certssbd.ensemble import StackedEnsemble, vote

logger = logging.getLogger(__name__)


def _member_bytes(template: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in template.state_dict().values())


class SavedEnsemble:
    """The members of a saved ensemble, read from ``directory`` on demand (checksums verified on every read).

    :param directory: A folder written by ``save_ensemble`` (kind ``"ensemble"``), or a finished fit's
           ``checkpoint_dir`` (kind ``"training"``).
    :param template: A module of the members' architecture.
    :param memory_budget: Bytes of member weights held at once, counting the three copies of a block while it loads
           (file bytes, loaded tensors, stacked weights); at least one member.
    :param device: Where the blocks are moved to vote.
    """

    def __init__(self, directory: str | os.PathLike, template: torch.nn.Module, memory_budget: int, device="cpu"):
        self.directory = Path(directory)
        store = EnsembleCheckpoint.open(self.directory, kind=None)
        members = store.finished_members()
        if members != list(range(len(members))) or not members:
            raise ValueError(f"{str(directory)!r} does not hold members 0..M-1 of a saved ensemble: {members[:5]}...")
        self.nb_models = len(members)
        self.template = template
        self.memory_budget = int(memory_budget)
        self.device = torch.device(device)
        # a block's weights are held three times while it loads: the file's bytes (read once, hashed), the loaded
        # tensors, and the stacked copy the members vote with
        self.members_per_block = max(1, self.memory_budget // (3 * max(1, _member_bytes(template))))

    def to(self, device) -> SavedEnsemble:
        """Vote on ``device`` from now on (nothing is loaded)."""
        self.device = torch.device(device)
        return self

    def state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Member ``k``'s weights, read from disk."""
        return EnsembleCheckpoint.open(self.directory, kind=None).load_member(k)

    def block(self, m0: int, m1: int) -> StackedEnsemble:
        """Members ``m0 .. m1 - 1`` in memory, on :attr:`device`."""
        return load_block(self.directory, self.template, m0, m1).to(self.device)

    def member(self, k: int) -> torch.nn.Module:
        """Member ``k`` as an ordinary module."""
        return self.block(k, k + 1).member(0)

    def logits(self, x: torch.Tensor, m0: int, m1: int, vectorize: bool = True) -> torch.Tensor:
        """Logits ``(m1 - m0, N, C)`` of members ``m0 .. m1 - 1`` (read as one block)."""
        return self.block(m0, m1).logits(x, 0, m1 - m0, vectorize)


def load_block(directory, template: torch.nn.Module, m0: int, m1: int) -> StackedEnsemble:
    """Members ``m0 .. m1 - 1`` of the saved ensemble in ``directory``, stacked (on the CPU)."""
    store = EnsembleCheckpoint.open(directory, kind=None)
    return StackedEnsemble.from_state_dicts(template, [store.load_member(k) for k in range(m0, m1)])


def block_source(ensemble, m0: int, m1: int):
    """A picklable zero-argument callable that returns members ``m0 .. m1 - 1`` as a :class:`StackedEnsemble`: read
    from the directory of a :class:`SavedEnsemble`, or carried as weights for an ensemble in memory."""
    if isinstance(ensemble, SavedEnsemble):
        return functools.partial(load_block, ensemble.directory, ensemble.template, m0, m1)
    states = [ensemble.state_dict(k) for k in range(m0, m1)]
    template = copy.deepcopy(ensemble.template).to_empty(device="cpu")  # the stacked template lives on "meta"
    return functools.partial(StackedEnsemble.from_state_dicts, template, states)


def member_blocks(draws: int, start_vote: int, nb_votes: int, per_block: int) -> Iterator[tuple[int, int, int, int]]:
    """The blocks of members that cast votes ``start_vote .. nb_votes - 1`` (member-major order): ``(m0, m1, s, e)``
    with ``s .. e - 1`` the block's own vote range, numbered from its first member."""
    first, last = start_vote // draws, -(-nb_votes // draws)
    for m0 in range(first, last, per_block):
        m1 = min(m0 + per_block, last)
        yield m0, m1, max(start_vote, m0 * draws) - m0 * draws, min(nb_votes, m1 * draws) - m0 * draws


def shifted_noise(noise_fn, m0: int, ks, draws: int, shape):
    """The test noise of members ``m0 + k`` (a block numbers its members from 0)."""
    return noise_fn([m0 + k for k in ks], draws, shape)


def stream_votes(
    ensemble: SavedEnsemble,
    x: torch.Tensor,
    sigma: torch.Tensor,
    noise_fn,
    nb_classes: int,
    *,
    draws_per_model: int = 1,
    start_vote: int = 0,
    nb_votes: int | None = None,
    verbose: bool = False,
    **vote_kwargs,
) -> torch.Tensor:
    """:func:`art_certssbd.ensemble.vote` over a saved ensemble, one block of at most ``memory_budget`` bytes of
    weights at a time; the same ``(N, C)`` counts as the in-memory call."""
    total = ensemble.nb_models * draws_per_model
    nb_votes = total if nb_votes is None else nb_votes
    if not 1 <= nb_votes <= total:
        raise ValueError(f"nb_votes must be in [1, {total}] (nb_models * draws_per_model), got {nb_votes}")
    counts = None
    blocks = list(member_blocks(draws_per_model, start_vote, nb_votes, ensemble.members_per_block))
    for m0, m1, s, e in tqdm(blocks, desc="Votes (streamed)", disable=not verbose):
        block = ensemble.block(m0, m1)
        part = vote(block, x, sigma, functools.partial(shifted_noise, noise_fn, m0), nb_classes,
                    draws_per_model=draws_per_model, start_vote=s, nb_votes=e, **vote_kwargs)  # fmt: skip
        counts = part if counts is None else counts + part
        del block
    return counts
