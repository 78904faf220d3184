"""Settings that can never certify, said out loud: a mixin of the estimator shell.

An ensemble of ``M`` members certifies at most the radius of unanimous votes
(:func:`~art_certssbd.certification.max_certifiable_radius`); with too few members for ``alpha`` even unanimous
votes give ``p_a_lower <= 1/2`` and every input abstains. The estimator exposes that ceiling as
:attr:`max_certifiable_radius` and warns (``UserWarning``) where a setting cannot certify: at construction and
``set_params`` when the ceiling is 0, at ``certify`` when the votes asked for (``n``) cannot certify, and at
``certify_adaptive`` when no input's ceiling reaches the radius asked for.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

from art_certssbd.certification import max_certifiable_radius, min_ensemble_size


def caller_level() -> int:
    """The ``stacklevel`` that makes a ``warnings.warn`` in the caller of this function point at the first frame
    outside art-certssbd and ART (the user's line, not the estimator's internals)."""
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in ("art_certssbd", "art"):
        frame, level = frame.f_back, level + 1
    return level


class CertifiableRadiusMixin:
    """:attr:`max_certifiable_radius` and the warnings of :class:`~art_certssbd._shell.SmoothedEnsembleEstimator`."""

    def _check_params(self) -> None:
        """ART's hook, after every other check: warn when the valid parameters can never certify."""
        super()._check_params()
        self._warn_if_never_certifies()

    def _radius_ceiling(self, sigma, nb_votes: int | None = None, alpha: float | None = None):
        """The largest radius ``nb_votes`` votes (default: all, :attr:`sample_size`) can certify at ``sigma`` and
        ``alpha`` (default: the estimator's)."""
        copies = getattr(self, "train_noise_copies_", None) or 1  # noise="fresh": known once fitted
        return max_certifiable_radius(
            self.sample_size if nb_votes is None else nb_votes,
            sigma,
            alpha=self.alpha if alpha is None else alpha,
            bound=self.bound,
            draws_per_model=self.draws_per_model,
            nb_classes=self.nb_classes,
            noise_copies=copies,
        )

    @property
    def max_certifiable_radius(self) -> float:
        """The largest radius this estimator can certify at ``sigma = scale``: the radius of unanimous votes of all
        ``sample_size`` votes at ``alpha`` with ``bound`` (:func:`~art_certssbd.certification.max_certifiable_radius`;
        once fitted, with the fitted number of members and, for ``noise="fresh"``, divided by ``sqrt(nb_epochs)``).

        0 means that every input abstains whatever the members learned: add members (see
        :func:`~art_certssbd.certification.min_ensemble_size`) or raise ``alpha``. RAB certifies at ``scale``; a
        Cert-SSBD input certified at its own ``sigma_x`` gets at most ``max_certifiable_radius * sigma_x / scale``.
        """
        return float(self._radius_ceiling(self.scale))

    def _warn_if_never_certifies(self, nb_votes: int | None = None, where: str = "") -> None:
        """Warn when ``nb_votes`` votes (default: all) cannot certify any input (a ceiling of 0)."""
        if self._radius_ceiling(self.scale, nb_votes) > 0:
            return
        votes = self.sample_size if nb_votes is None else nb_votes
        members = -(-votes // self.draws_per_model)
        needed = min_ensemble_size(self.alpha, bound=self.bound, draws_per_model=self.draws_per_model,
                                   nb_classes=self.nb_classes)  # fmt: skip
        warnings.warn(
            f"{where}{type(self).__name__} with {members} member(s) x draws_per_model={self.draws_per_model} at "
            f"alpha={self.alpha!r}, bound={self.bound!r} can never certify: even unanimous votes give "
            "p_a_lower <= 1/2, so every input abstains (max_certifiable_radius = 0.0); use at least "
            f"nb_models={needed} at this alpha, or a larger alpha",
            UserWarning,
            stacklevel=caller_level(),
        )

    def _warn_if_out_of_reach(self, sigma: np.ndarray, radius: float, nb_votes: int, alpha: float) -> None:
        """Warn when no input's ceiling at its ``sigma`` (``nb_votes`` votes, all of ``alpha`` on one look: an upper
        bound on what a sequential test can certify) reaches ``radius``."""
        if len(sigma) == 0:
            return
        ceiling = float(np.max(self._radius_ceiling(np.asarray(sigma, dtype=float), nb_votes, alpha)))
        if ceiling < radius:
            warnings.warn(
                f"certify_adaptive: radius={radius!r} is out of reach: {nb_votes} votes at alpha={alpha!r}, "
                f"bound={self.bound!r} certify at most a radius of {ceiling:.6g} on these inputs (unanimous votes at "
                "the largest sigma_x), so every input abstains; use more members, a larger alpha or a smaller radius",
                UserWarning,
                stacklevel=caller_level(),
            )
