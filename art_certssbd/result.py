"""The per-sample outcome of a certification: predictions, both radii, sigmas, bounds and votes."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

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
    """

    pred: np.ndarray
    radius: np.ndarray
    radius_conservative: np.ndarray
    sigma: np.ndarray
    p_a_lower: np.ndarray
    votes: np.ndarray
    pred_before_memory: np.ndarray

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

    def to_dict(self) -> dict[str, list]:
        """Plain lists, for JSON."""
        return {f.name: np.asarray(getattr(self, f.name)).tolist() for f in fields(self)}
