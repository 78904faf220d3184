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
import math

import numpy as np

from art_certssbd._validation import check_int, check_positive


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
