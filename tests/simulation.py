"""Vote sources for simulations of the sequential test (``draw(idx, start, stop)`` functions, numpy only)."""

from __future__ import annotations

import numpy as np


def bernoulli_draw(p, nb_classes: int = 2, seed: int = 0):
    """Independent votes: input ``i`` votes for class 1 with probability ``p[i]``, else class 0.

    :param p: Probability of class 1 per input.
    :param nb_classes: Columns of the returned counts (only classes 0 and 1 receive votes).
    :param seed: Seed of the numpy generator.
    """
    p = np.asarray(p, dtype=float)
    rng = np.random.default_rng(seed)

    def draw(idx: np.ndarray, start: int, stop: int) -> np.ndarray:
        ones = rng.binomial(stop - start, p[idx])
        out = np.zeros((len(idx), nb_classes), dtype=np.int64)
        out[:, 0], out[:, 1] = (stop - start) - ones, ones
        return out

    return draw


def member_draw(p, nb_models: int, draws_per_model: int, seed: int = 0):
    """Votes of members whose draws are not independent: member ``k`` of input ``i`` votes class 1 with probability
    ``p[i]`` (over its training noise) and all its ``draws_per_model`` draws vote alike (votes in member-major order,
    as :func:`art_certssbd.ensemble.vote` numbers them).

    :param p: Probability of class 1 per input.
    :param nb_models: Members M.
    :param draws_per_model: Draws D per member.
    :param seed: Seed of the numpy generator.
    """
    p = np.asarray(p, dtype=float)
    ones = np.random.default_rng(seed).random((len(p), nb_models)) < p[:, None]  # member k votes class 1

    def draw(idx: np.ndarray, start: int, stop: int) -> np.ndarray:
        member = np.arange(start, stop) // draws_per_model
        k = ones[np.asarray(idx)][:, member].sum(axis=1)
        return np.stack([(stop - start) - k, k], axis=1).astype(np.int64)

    return draw
