"""A wave-grown ensemble: train members in waves and stop as soon as the certificates a user needs are settled.

``fit(..., growth=Growth(x_val, y_val, radius=r))`` trains ``wave_size`` members at a time (members ``0 .. K-1``,
in order) and after each wave certifies the validation inputs with the members so far. It also projects what
``nb_models`` members would certify if the vote fractions stayed as they are (the counts scaled to ``nb_models``
votes, the same anytime bound). It stops when, for ``patience`` consecutive waves, the certified accuracy at
``radius`` is within ``tol`` of that projection (more members would add at most about ``tol``), or when it reaches
``target``, or at ``nb_models``. A rule that only watched the accuracy stop changing stopped too early: the bound
tightens slowly with ``n``, so the accuracy creeps up by less than ``tol`` per wave for a long time. The stopping
size ``K`` is ``nb_models_``; the history of the rule is ``growth_history_``.

**The certificate of such an ensemble must be anytime-valid.** The stopping size depends on the members' votes.
Member ``k`` is trained on its own noise, independently of members ``0 .. k-1``, so ``K`` is a stopping time for
the sequence of members. A fixed-``n`` bound at ``n = K`` is not valid at a stopping time, and a confidence sequence
is (:mod:`art_certssbd.confseq`). So growth needs ``bound="anytime"``, and that bound then certifies every input,
the validation inputs and any later test input alike.

The rule sees only the validation votes. It is replayed from the checkpoint on a resume, and gives the same
decisions because the members are the same. With Ray each wave is one batch of tasks.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math

import numpy as np
import torch

from art_certssbd._validation import check_inputs, check_int, check_labels, check_positive
from art_certssbd.certification import certify_votes
from art_certssbd.ensemble import StackedEnsemble, vote
from art_certssbd.noise import derive_seed, fixed_test_noise
from art_certssbd.streaming import shifted_noise

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Growth:
    """The stopping rule of a wave-grown ``fit``.

    :param x_val: Validation inputs ``(N, *input_shape)`` (not the test inputs whose certificates matter).
    :param y_val: Their labels ``(N,)``.
    :param radius: The radius at which the certified accuracy is watched.
    :param wave_size: Members trained per wave.
    :param tol: The largest gap between the certified accuracy and its projection at ``nb_models`` that counts as
           settled.
    :param patience: Consecutive settled waves needed to stop.
    :param target: Stop as soon as the certified accuracy reaches this value (``None``: only the ``tol`` rule).
    :param conservative: Watch the conservative radius instead of the paper's.
    """

    x_val: np.ndarray
    y_val: np.ndarray
    radius: float
    wave_size: int = 16
    tol: float = 0.005
    patience: int = 2
    target: float | None = None
    conservative: bool = False

    def __post_init__(self):
        self.wave_size = check_int(self.wave_size, "wave_size")
        self.patience = check_int(self.patience, "patience")
        if isinstance(self.radius, bool) or not isinstance(self.radius, int | float) or not self.radius >= 0:
            raise ValueError(f"radius must be a number >= 0, got radius={self.radius!r}")
        if isinstance(self.tol, bool) or not isinstance(self.tol, int | float) or not self.tol >= 0:
            raise ValueError(f"tol must be a number >= 0, got tol={self.tol!r}")
        if self.target is not None:
            check_positive(self.target, "target")
            if self.target > 1:
                raise ValueError(f"target must be a certified accuracy in (0, 1], got target={self.target!r}")
        if len(self.x_val) != len(self.y_val) or len(self.x_val) == 0:
            raise ValueError(
                f"x_val and y_val must hold the same positive number of samples, got {len(self.x_val)} and "
                f"{len(self.y_val)}"
            )

    def settled(self, history: list[dict]) -> bool:
        """Whether the rule stops after the waves of ``history`` (in order; each a dict with ``certified_accuracy``
        and ``projected_accuracy``)."""
        if not history:
            return False
        if self.target is not None and history[-1]["certified_accuracy"] >= self.target:
            return True
        recent = history[-self.patience :]
        # accuracies are multiples of 1 / N: the slack only absorbs float error
        gaps = [h["projected_accuracy"] - h["certified_accuracy"] for h in recent]
        return len(recent) == self.patience and max(gaps) <= self.tol + 1e-12

    def waves(self, nb_models: int) -> list[int]:
        """The ensemble sizes at which the rule is evaluated: ``wave_size, 2 wave_size, ..., nb_models``."""
        return [min(nb_models, self.wave_size * (i + 1)) for i in range(math.ceil(nb_models / self.wave_size))]


def check_growth(growth, bound: str, input_shape, clip_values, nb_classes: int) -> Growth | None:
    """``growth`` for a ``fit`` at ``bound`` (only ``"anytime"`` certifies at a stopping time), its validation
    inputs checked against ``input_shape`` / ``clip_values`` and its labels as indices; ``None`` stays ``None``."""
    if growth is None:
        return None
    if not isinstance(growth, Growth):
        raise ValueError(f"growth must be a Growth or None, got {type(growth).__name__}")
    if bound != "anytime":
        raise ValueError(
            f"growth needs bound='anytime', got bound={bound!r}: the ensemble's size then depends on its "
            "votes, and only a confidence sequence certifies at such a stopping time"
        )
    x_val = check_inputs(growth.x_val, input_shape, clip_values, name="growth.x_val")
    y_val = check_labels(growth.y_val, len(growth.x_val), nb_classes, name="growth.y_val")
    return dataclasses.replace(growth, x_val=x_val, y_val=y_val)


def growth_rule(
    growth: Growth,
    *,
    template: torch.nn.Module,
    device: torch.device,
    random_state: int,
    nb_models: int,
    search,
    nb_classes: int,
    draws_per_model: int,
    vectorize: bool,
    alpha: float,
    noise_copies: int,
    history: list,
):
    """The ``stop`` of :func:`~art_certssbd.pipeline.train_smoothed_ensemble` for ``growth``: after each wave the new
    members vote on the validation inputs (added to the earlier votes), the ``"anytime"`` certificate gives the
    certified accuracy at ``growth.radius``, appended to ``history``; the rule decides.

    :param growth: The rule, with its validation inputs checked and its labels as indices.
    :param template: The members' architecture.
    :param device: Where the validation inputs vote.
    :param random_state: The run's seed (the validation inputs' sigma and the members' test noise derive from it).
    :param nb_models: The largest ensemble size.
    :param search: The sigma optimiser (:class:`~art_certssbd.execution.SigmaSearch`): the validation inputs' sigma is
           computed as ``certify`` computes a test input's.
    :param nb_classes: Number of classes.
    :param draws_per_model: Test noise draws per member.
    :param vectorize: Vote with stacked members.
    :param alpha: The certificate's failure probability.
    :param noise_copies: Noisy copies of each training sample per member.
    :param history: Where the rule's history is appended.
    """
    x_val = torch.from_numpy(np.asarray(growth.x_val)).to(device)
    y_val = np.asarray(growth.y_val)
    seeds = [derive_seed(random_state, "test_noise", k) for k in range(nb_models)]
    noise_fn = functools.partial(fixed_test_noise, seeds, device=device)
    done = {"size": 0, "counts": None, "sigma": None}

    def stop(base, train_sigma, states, size) -> bool:
        if done["sigma"] is None:  # the validation inputs' sigma, as certify computes a test input's
            done["sigma"] = search.run(base, x_val, derive_seed(random_state, "sigma_test"), False)
        first = done["size"]
        block = StackedEnsemble.from_state_dicts(template, [states[k] for k in range(first, size)])
        block.to(device)
        votes = vote(block, x_val, done["sigma"], functools.partial(shifted_noise, noise_fn, first), nb_classes,
                     draws_per_model=draws_per_model, vectorize=vectorize)  # fmt: skip
        done["counts"] = votes if done["counts"] is None else done["counts"] + votes
        done["size"] = size
        counts = done["counts"].cpu().numpy()
        sigma_val = done["sigma"].cpu().numpy().astype(np.float64)

        def accuracy(votes) -> float:
            result = certify_votes(votes, sigma_val, alpha=alpha, bound="anytime",
                                   train_sigma_min=float(train_sigma.min()), noise_copies=noise_copies)  # fmt: skip
            return float(result.certified_accuracy(y_val, [growth.radius], growth.conservative)[0])

        # now, and what nb_models members would certify if the vote fractions stayed as they are
        now = accuracy(counts)
        projected = accuracy(np.round(counts * (nb_models / size)).astype(np.int64))
        history.append({"nb_models": size, "certified_accuracy": now, "projected_accuracy": projected})
        logger.info("Growth: %d members, certified accuracy %.4f at r = %g (projected at %d: %.4f).",
                    size, now, growth.radius, nb_models, projected)  # fmt: skip
        return growth.settled(history)

    return stop
