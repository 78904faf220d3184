"""The per-sample outcome of a certification: predictions, both radii, sigmas, bounds and votes."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from art_certssbd.budget import BudgetCertificate
from art_certssbd.stats import ABSTAIN, certified_accuracy


@dataclass(frozen=True)
class CertificationResult:
    """What :meth:`CertSSBDEstimator.certify` (and :func:`art_certssbd.certification.certify_votes`) returns with
    ``return_details=True``. All arrays have length N.

    :param pred: Certified class, or ``-1`` (abstain).
    :param radius: The paper's radius ``sigma_x * Phi^-1(p_a_lower)`` after the storage-update step (0 on abstain;
           divided by ``sqrt(nb_epochs)`` for an ensemble trained with ``noise="fresh"``).
    :param radius_conservative: The radius with ``min(sigma_x, min_j sigma_j)`` in place of ``sigma_x``, never above
           ``radius`` (see the guarantees page of the docs).
    :param sigma: Test noise magnitude ``sigma_x`` used for the votes.
    :param p_a_lower: Lower confidence bound on the top class's probability.
    :param votes: Vote counts per class, shape ``(N, nb_classes)`` (summed scores for soft votes).
    :param pred_before_memory: The prediction before the storage-update step.
    :param train_sigma: The training sigmas the certificate conditions on (empty: not known, e.g. a result of
           :func:`~art_certssbd.certification.certify_votes`); the budget methods below need them.
    :param budgets: The budgets of ``certify(..., budgets=...)``, one row ``(k, delta, delta_x)`` each (``(B, 3)``).
    :param budget_certified: Whether each input is certified against each budget, ``(N, B)`` booleans
           (:mod:`art_certssbd.budget`).
    """

    pred: np.ndarray
    radius: np.ndarray
    radius_conservative: np.ndarray
    sigma: np.ndarray
    p_a_lower: np.ndarray
    votes: np.ndarray
    pred_before_memory: np.ndarray
    train_sigma: np.ndarray = field(default_factory=lambda: np.zeros(0))
    budgets: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    budget_certified: np.ndarray | None = None

    def __post_init__(self):
        object.__setattr__(self, "train_sigma", np.asarray(self.train_sigma, dtype=float).reshape(-1))
        object.__setattr__(self, "budgets", np.asarray(self.budgets, dtype=float).reshape(-1, 3))
        decided = np.zeros((len(self.pred), 0), bool) if self.budget_certified is None else self.budget_certified
        decided = np.asarray(decided, dtype=bool).reshape(len(self.pred), self.budgets.shape[0])
        object.__setattr__(self, "budget_certified", decided)

    def __len__(self) -> int:
        return len(self.pred)

    @property
    def abstained(self) -> np.ndarray:
        """Boolean mask of abstentions."""
        return self.pred == ABSTAIN

    def certified_accuracy(self, y: np.ndarray, radii, conservative: bool = False) -> np.ndarray:
        """Fraction of samples certified correct at each radius in ``radii``."""
        radius = self.radius_conservative if conservative else self.radius
        return certified_accuracy(self.pred, radius, np.asarray(y), np.asarray(radii, dtype=float))

    def budget_certificate(self) -> BudgetCertificate:
        """The budget certificate of these inputs (:class:`~art_certssbd.budget.BudgetCertificate`: ``k`` poisoned
        training samples with triggers of norm at most ``delta``, a test trigger of norm at most ``delta_x``).

        :raises ValueError: The training sigmas are not known (``train_sigma`` is empty).
        """
        if self.train_sigma.size == 0:
            raise ValueError(
                "this result does not hold the training sigmas (train_sigma is empty), which the budget certificate "
                "needs: use the result of an estimator's certify, or BudgetCertificate.from_result(result, train_sigma)"
            )
        return BudgetCertificate.from_result(self, self.train_sigma)

    def certified_at_budget(self, k: int, delta: float, delta_x: float | None = None) -> np.ndarray:
        """Whether each input is certified against ``k`` poisoned samples with triggers of norm at most ``delta`` and a
        test trigger of norm at most ``delta_x`` (default ``delta``)."""
        return self.budget_certificate().certified(k, delta, delta_x)

    def certified_accuracy_at_budget(self, y, k: int, delta: float, delta_x: float | None = None) -> float:
        """Fraction of inputs predicted correctly and certified against the budget ``(k, delta, delta_x)``."""
        certified = self.certified_at_budget(k, delta, delta_x)
        y = np.asarray(y).reshape(-1)
        return float(np.mean(certified & (self.pred == y) & (self.pred != ABSTAIN)))

    def k_max(self, delta: float, delta_x: float | None = None) -> np.ndarray:
        """The largest certified number of poisoned samples at trigger norm ``delta`` per input (-1: none, e.g. on
        abstain); see :meth:`~art_certssbd.budget.BudgetCertificate.k_max`."""
        return self.budget_certificate().k_max(delta, delta_x)

    def delta_max(self, k: int, *, ratio: float | None = None, delta_x: float | None = None) -> np.ndarray:
        """The largest certified trigger norm with ``k`` poisoned samples per input (certified iff ``delta <
        delta_max``); see :meth:`~art_certssbd.budget.BudgetCertificate.delta_max`."""
        return self.budget_certificate().delta_max(k, ratio=ratio, delta_x=delta_x)

    def to_dict(self) -> dict[str, list]:
        """Plain lists, for JSON."""
        return {f.name: np.asarray(getattr(self, f.name)).tolist() for f in fields(self)}
