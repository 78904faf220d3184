"""The fitted state of a smoothed ensemble, as one record: :class:`FittedEnsemble`.

``fit``, :meth:`CertSSBDEstimator.from_official <art_certssbd.estimator.CertSSBDEstimator.from_official>` and
``load_ensemble`` all build it through its one constructor, and the estimator's fitted attributes (``ensemble_``,
``train_sigma_``, ``random_state_``, ``test_noise_seeds_``, ``nb_models_``, ``growth_history_``,
``train_noise_copies_``, ``memory_``) are read-only views of it. What the certificate needs from the fitted state
(the minimum training sigma, the training noise copies, whether only an anytime bound is valid) is read here, once:
:meth:`FittedEnsemble.certificate_options`.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from typing import Any

import numpy as np

from art_certssbd._validation import NOT_FITTED, NotFittedError, check_int
from art_certssbd.memory import CertificationMemory
from art_certssbd.noise import derive_seed, fixed_test_noise


@dataclasses.dataclass(frozen=True, eq=False)
class FittedEnsemble:
    """Everything a fitted smoothed ensemble certifies with.

    :param members: The ``M`` members: a :class:`~art_certssbd.ensemble.StackedEnsemble` in memory or a
           :class:`~art_certssbd.streaming.SavedEnsemble` read from disk.
    :param train_sigma: The training sigmas ``sigma_j`` (1-D, positive; RAB: ``scale``; the official models: the
           stand-in ``[scale]``).
    :param random_state: The run's seed (the sigma optimiser's test stream derives from it).
    :param train_noise_copies: Noisy copies of each training sample one member saw (1 for ``noise="fixed"``,
           ``nb_epochs`` for ``"fresh"``): both radii shrink by its square root. Required: a record without it
           cannot be built.
    :param test_noise_seeds: Member ``k``'s test-noise seed (default ``derive_seed(random_state, "test_noise", k)``,
           as ``fit`` draws them).
    :param growth_history: The growth rule's history (``[]`` for a grown ensemble loaded from disk), ``None`` for an
           ensemble of fixed size.
    :param memory: The storage-update memory, or ``None`` (``use_memory=False``).
    """

    members: Any
    train_sigma: np.ndarray
    random_state: int
    train_noise_copies: int
    test_noise_seeds: list[int] | None = None
    growth_history: list[dict] | None = None
    memory: CertificationMemory | None = None

    def __post_init__(self) -> None:
        if self.train_noise_copies is None:
            raise ValueError(
                "train_noise_copies is required: how many noisy copies of each training sample a member saw "
                "(1 for noise='fixed', nb_epochs for noise='fresh') sets the certified radius, so a fitted ensemble "
                "without it cannot certify"
            )
        check_int(self.train_noise_copies, "train_noise_copies")
        if isinstance(self.random_state, bool) or not isinstance(self.random_state, numbers.Integral):
            raise ValueError(f"random_state must be an integer, got {self.random_state!r}")
        sigma = np.asarray(self.train_sigma)
        if sigma.ndim != 1 or len(sigma) == 0 or not bool(np.all(sigma > 0)):
            raise ValueError(f"train_sigma must be a 1-D array of positive sigmas, got shape {sigma.shape}")
        seeds = self.test_noise_seeds
        if seeds is None:  # fit's seeds: one stream per member, from the run's seed
            seeds = [derive_seed(self.random_state, "test_noise", k) for k in range(self.nb_models)]
        seeds = [int(s) for s in seeds]
        if len(seeds) != self.nb_models:
            raise ValueError(f"test_noise_seeds must hold one seed per member ({self.nb_models}), got {len(seeds)}")
        object.__setattr__(self, "train_sigma", sigma)
        object.__setattr__(self, "test_noise_seeds", seeds)

    @property
    def nb_models(self) -> int:
        """The number of members (fewer than ``nb_models`` when a growth rule stopped the ensemble)."""
        return int(self.members.nb_models)

    @property
    def train_sigma_min(self) -> float:
        """``min_j sigma_j``, the training sigma of the conservative radius."""
        return float(np.min(self.train_sigma))

    def replace(self, **changes) -> FittedEnsemble:
        """A copy with ``changes`` (through the constructor, so checked the same way)."""
        return dataclasses.replace(self, **changes)

    def test_noise(self, device):
        """The members' fixed test noise ``e_{k, j}`` as a picklable function ``(members, draws, shape) -> noise`` of
        shape ``(len(members), draws, *shape)`` on ``device``."""
        return functools.partial(fixed_test_noise, self.test_noise_seeds, device=device)

    def check_bound(self, bound: str) -> None:
        """Refuse a bound that does not certify this ensemble: a grown one (its size depends on its votes) needs
        ``"anytime"``."""
        if self.growth_history is not None and bound != "anytime":
            raise ValueError(
                f"this ensemble was grown until a stopping rule (fit with growth=...), so only bound='anytime' "
                f"certifies it, got bound={bound!r}: set_params(bound='anytime')"
            )

    def certificate_options(self, alpha: float, bound: str, draws_per_model: int) -> dict[str, Any]:
        """The keyword arguments of :func:`art_certssbd.certification.certify_votes` for this ensemble at ``alpha``,
        ``bound`` and ``draws_per_model`` (``alpha``, ``bound``, ``draws_per_model``, ``train_sigma_min``,
        ``noise_copies``).

        :raises ValueError: A grown ensemble (its size depends on its votes) with a bound other than ``"anytime"``.
        """
        self.check_bound(bound)
        return {
            "alpha": alpha,
            "bound": bound,
            "draws_per_model": draws_per_model,
            "train_sigma_min": self.train_sigma_min,
            "noise_copies": self.train_noise_copies,
        }


def fitted_attribute(field: str, doc: str) -> property:
    """A read-only fitted attribute of an estimator (``ensemble_``, ``train_sigma_``, ...): ``field`` of its record
    ``fitted_`` (an ``AttributeError`` before ``fit``, so that ``hasattr`` tells whether it is fitted)."""

    def get(self):
        record = self.__dict__.get("fitted_")
        if record is None:
            raise AttributeError(f"{type(self).__name__} has no fitted state yet (call fit)")
        return getattr(record, field)

    return property(get, doc=doc)


def require_fitted(estimator) -> FittedEnsemble:
    """The record ``estimator.fitted_``; a ``NotFittedError`` when there is none (naming the parameters whose
    ``set_params`` reset it, ``estimator._reset_by``)."""
    record = estimator.__dict__.get("fitted_")
    if record is None:
        reset_by = getattr(estimator, "_reset_by", None)
        reason = f" (set_params of {', '.join(reset_by)} reset the fitted ensemble)" if reset_by else ""
        raise NotFittedError(NOT_FITTED.format(name=type(estimator).__name__) + reason)
    return record


def record_from_attributes(state: dict) -> dict:
    """The ``__dict__`` of an estimator pickled before the record (one attribute per fitted field: ``ensemble_``,
    ``train_sigma_``, ...) with those as one :class:`FittedEnsemble` (``fitted_``), built by its constructor.

    :raises ValueError: A ``noise="fresh"`` estimator pickled before ``train_noise_copies_`` was recorded.
    """
    state = dict(state)
    old = {key: state.pop(key, None) for key in (*_OLD_FIELDS, "nb_models_")}
    copies = old["train_noise_copies_"]
    if copies is None and state.get("noise") != "fixed":  # saved before the count was recorded
        raise ValueError(
            f"this pickled estimator was trained with noise={state.get('noise')!r}, and how many noisy copies of each "
            "training sample a member saw (nb_epochs) is not recorded in its fitted state: the certified radius "
            "depends on it (it shrinks by sqrt(nb_epochs)), so it cannot be loaded; refit it"
        )
    fields = {field: old[key] for key, field in _OLD_FIELDS.items()}
    state["fitted_"] = FittedEnsemble(**{**fields, "train_noise_copies": 1 if copies is None else copies})
    return state


#: The fitted attributes of an estimator pickled before the record, and the record's fields they became.
_OLD_FIELDS = {
    "ensemble_": "members",
    "train_sigma_": "train_sigma",
    "random_state_": "random_state",
    "train_noise_copies_": "train_noise_copies",
    "test_noise_seeds_": "test_noise_seeds",
    "growth_history_": "growth_history",
    "memory_": "memory",
}
