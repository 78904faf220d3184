"""The certificate in the attacker's units: ``k`` poisoned training samples with triggers of L2 norm at most
``delta`` each, and a test trigger of norm at most ``delta_x`` (pure numpy).

The smoothing certificate behind both radii is an ellipsoid. With training noise ``sigma_i`` on sample ``i`` and
test noise ``sigma_x``, given the sigmas, the prediction is unchanged for every stacked perturbation with

    sum_i ||delta_i||^2 / sigma_i^2  +  ||delta_x||^2 / sigma_x^2  <  q^2,      q = radius / sigma_x,

where ``radius`` is the reported paper radius (``sigma_x * Phi^-1(p_a_lower) / sqrt(E)`` before the storage-update
memory, and only ever smaller after it; ``docs/guarantees.md``). The worst ``k`` poisoned samples are the ``k``
with the smallest sigmas, so the budget ``(k, delta, delta_x)`` is inside the ellipsoid iff

    delta^2 * S_k  +  delta_x^2 / sigma_x^2  <  q^2,      S_k = sum of the k largest 1 / sigma_i^2.

The conservative radius ``Rc`` is a plain L2 ball over the stacked perturbation, so the budget is also covered when
``k * delta^2 + delta_x^2 < Rc^2``. A budget is certified when either holds. Without the memory the ellipsoid
contains the conservative ball, so the second test adds nothing; it matters only for inputs the memory relabelled
(their own votes certify another class, so the ellipsoid test is not used for them: ``q = 0``) or trimmed. Either
way the budget certificate never claims more than the two radii already do, and it implies the conservative
radius's statement (every budget inside that ball is certified).

For RAB (all sigmas equal to ``sigma_x``) the test reduces to ``delta < radius / sqrt(k + 1)`` at ``delta_x = delta``.

Answers per input: :meth:`BudgetCertificate.certified` (is the budget covered?), :meth:`~BudgetCertificate.delta_max`
(the supremum of the certified ``delta`` at a given ``k``: certified iff ``delta < delta_max``) and
:meth:`~BudgetCertificate.k_max` (the largest certified ``k`` at a trigger norm; ``-1`` when not even ``k = 0`` is,
e.g. on abstain). The sorted cumulative sums ``S_k`` make each query O(log N) per input.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

import numpy as np

__all__ = [
    "NO_BUDGET",
    "Budget",
    "BudgetCertificate",
    "attach_budgets",
    "certified_accuracy_by_k",
    "check_budgets",
    "k_grid",
    "parse_budgets",
]

#: :meth:`BudgetCertificate.k_max` where no budget is certified, not even ``k = 0`` (abstain, or a test trigger
#: already beyond the radius).
NO_BUDGET = -1


def _check_norm(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_k(k, nb_train: int) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
        raise ValueError(f"k must be an integer >= 0 (poisoned training samples), got {k!r}")
    if k > nb_train:
        raise ValueError(
            f"k={k} is larger than the training set ({nb_train} samples): at most {nb_train} can be poisoned"
        )
    return int(k)


def _check_array(value, name: str, *, positive: bool, length: int | None = None) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64).reshape(-1) if np.ndim(value) else np.asarray([value], dtype=np.float64)
    bad = ~(np.isfinite(arr) & ((arr > 0) if positive else (arr >= 0)))
    if bad.any():
        raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'}, got {float(arr[bad][0])!r}")
    if length is not None and arr.shape[0] != length:
        raise ValueError(f"{name} must have one entry per input ({length}), got {arr.shape[0]}")
    return arr


@dataclass(frozen=True)
class Budget:
    """An attacker's budget: ``k`` poisoned training samples, each trigger of L2 norm at most ``delta``, and a test
    trigger of norm at most ``delta_x`` (``None``: ``delta``, the same trigger on the test input)."""

    k: int
    delta: float
    delta_x: float | None = None

    def __post_init__(self):
        if isinstance(self.k, bool) or not isinstance(self.k, numbers.Integral) or self.k < 0:
            raise ValueError(f"k must be an integer >= 0 (poisoned training samples), got {self.k!r}")
        object.__setattr__(self, "k", int(self.k))
        object.__setattr__(self, "delta", _check_norm(self.delta, "delta"))
        if self.delta_x is not None:
            object.__setattr__(self, "delta_x", _check_norm(self.delta_x, "delta_x"))

    @property
    def test_norm(self) -> float:
        """The test trigger's norm (``delta`` when ``delta_x`` is ``None``)."""
        return self.delta if self.delta_x is None else self.delta_x

    @property
    def label(self) -> str:
        """``k=253,delta=1,delta_x=1``: the CLI's syntax, short (for tables and column names)."""
        return f"k={self.k},delta={self.delta:g},delta_x={self.test_norm:g}"

    @property
    def spec(self) -> str:
        """The CLI's syntax with every digit (:func:`parse_budgets` reads it back to an equal budget)."""
        return f"k={self.k},delta={self.delta!r},delta_x={self.test_norm!r}"

    def to_dict(self) -> dict:
        return {"k": self.k, "delta": self.delta, "delta_x": self.test_norm}


class BudgetCertificate:
    """The budget certificate of ``len(sigma)`` inputs against one training set (module docstring).

    :param train_sigma: The training sigmas ``sigma_i`` (``(N,)``, finite and > 0): the fitted ``train_sigma_`` of a
        :class:`~art_certssbd.CertSSBDEstimator`, ``scale`` for every sample of a :class:`~art_certssbd.RABEstimator`.
    :param sigma: Test noise ``sigma_x`` per input (finite and > 0).
    :param radius: The reported paper radius per input (>= 0; 0 on abstain), after the memory.
    :param radius_conservative: The reported conservative radius per input (>= 0, at most ``radius``).
    :param relabelled: Inputs whose label the memory changed (their own votes certify another class: only the
        conservative ball applies); default none.
    :raises ValueError: A bad sigma or radius, mismatched lengths, ``radius_conservative > radius``.
    """

    def __init__(self, train_sigma, sigma, radius, radius_conservative, relabelled=None):
        train_sigma = _check_array(train_sigma, "train_sigma", positive=True)
        sigma = _check_array(sigma, "sigma", positive=True)
        n = sigma.shape[0]
        radius = _check_array(radius, "radius", positive=False, length=n)
        conservative = _check_array(radius_conservative, "radius_conservative", positive=False, length=n)
        if (conservative > radius).any():
            i = int(np.argmax(conservative > radius))
            raise ValueError(
                f"radius_conservative must not exceed radius, got {float(conservative[i])!r} > "
                f"{float(radius[i])!r} at input {i}"
            )
        relabelled = np.zeros(n, bool) if relabelled is None else np.asarray(relabelled, dtype=bool).reshape(-1)
        if relabelled.shape[0] != n:
            raise ValueError(f"relabelled must have one entry per input ({n}), got {relabelled.shape[0]}")
        self.nb_train = int(train_sigma.shape[0])
        # S_0 = 0, S_k = sum of the k largest 1 / sigma_i^2 (the k smallest sigmas): non-decreasing
        self.cumulative = np.concatenate([[0.0], np.cumsum(np.sort(1.0 / train_sigma**2)[::-1])])
        self.sigma = sigma
        self.q = np.where(relabelled, 0.0, radius / sigma)  # the ellipsoid's radius in whitened units
        self.radius_conservative = conservative

    @classmethod
    def from_result(cls, result, train_sigma) -> BudgetCertificate:
        """From a :class:`~art_certssbd.result.CertificationResult` (after the memory) and the training sigmas."""
        relabelled = np.asarray(result.pred) != np.asarray(result.pred_before_memory)
        return cls(train_sigma, result.sigma, result.radius, result.radius_conservative, relabelled)

    def __len__(self) -> int:
        return self.sigma.shape[0]

    # Two criteria of the form  delta^2 * C_k + delta_x^2 * w  <  T  (per input):
    #   the ellipsoid:          C_k = S_k, w = 1 / sigma_x^2, T = q^2
    #   the conservative ball:  C_k = k,   w = 1,             T = Rc^2
    def _criteria(self):
        return (
            (self.cumulative, 1.0 / self.sigma**2, self.q**2),
            (np.arange(self.nb_train + 1, dtype=np.float64), np.ones_like(self.sigma), self.radius_conservative**2),
        )

    def certified(self, k: int, delta: float, delta_x: float | None = None) -> np.ndarray:
        """Whether each input's prediction is certified against ``k`` poisoned samples with triggers of norm at most
        ``delta`` and a test trigger of norm at most ``delta_x`` (default ``delta``). Boolean ``(n,)``."""
        k = _check_k(k, self.nb_train)
        delta = _check_norm(delta, "delta")
        delta_x = delta if delta_x is None else _check_norm(delta_x, "delta_x")
        out = np.zeros(len(self), bool)
        for cum, w, t in self._criteria():
            out |= delta**2 * cum[k] + delta_x**2 * w < t
        return out

    def delta_max(self, k: int, *, ratio: float | None = None, delta_x: float | None = None) -> np.ndarray:
        """The largest training trigger norm certified with ``k`` poisoned samples, per input: the budget is certified
        iff ``delta < delta_max`` (``inf``: any, e.g. ``k = 0`` with a fixed ``delta_x``; 0: none).

        :param k: Poisoned training samples, ``0 <= k <= N``.
        :param ratio: The test trigger is ``ratio * delta`` (default 1: the same trigger on the test input).
        :param delta_x: A fixed test trigger norm instead (exclusive with ``ratio``).
        """
        k = _check_k(k, self.nb_train)
        if ratio is not None and delta_x is not None:
            raise ValueError(f"give ratio or delta_x, not both (got ratio={ratio!r}, delta_x={delta_x!r})")
        out = np.zeros(len(self))
        with np.errstate(divide="ignore", invalid="ignore"):
            for cum, w, t in self._criteria():
                if delta_x is not None:
                    rest = t - _check_norm(delta_x, "delta_x") ** 2 * w
                    value = np.where(rest <= 0, 0.0, np.sqrt(np.maximum(rest, 0) / cum[k]))  # inf where cum[k] = 0
                else:
                    r = 1.0 if ratio is None else _check_norm(ratio, "ratio")
                    denom = cum[k] + r**2 * w
                    value = np.where(t <= 0, 0.0, np.sqrt(t / denom))  # inf where denom = 0 and t > 0
                out = np.maximum(out, value)
        return out

    def k_max(self, delta: float, delta_x: float | None = None) -> np.ndarray:
        """The largest number of poisoned samples certified at trigger norm ``delta`` (test trigger ``delta_x``,
        default ``delta``), per input; :data:`NO_BUDGET` (-1) where not even ``k = 0`` is certified. Int ``(n,)``."""
        delta = _check_norm(delta, "delta")
        delta_x = delta if delta_x is None else _check_norm(delta_x, "delta_x")
        out = np.full(len(self), NO_BUDGET, dtype=np.int64)
        for index, (cum, w, t) in enumerate(self._criteria()):
            rest = t - delta_x**2 * w  # certified iff delta^2 * C_k < rest
            if delta == 0:
                value = np.where(rest > 0, self.nb_train, NO_BUDGET)
            elif index == 0:  # the number of C_k < rest / delta^2, minus one for C_0
                value = np.searchsorted(cum, rest / delta**2, side="left") - 1
            else:  # C_k = k: the largest integer k < rest / delta^2
                value = np.clip(np.ceil(rest / delta**2) - 1, NO_BUDGET, self.nb_train)
            out = np.maximum(out, np.asarray(value, dtype=np.int64))
        return out


_BUDGET_SYNTAX = "k=INT,delta=NORM[,delta_x=NORM]"


def parse_budgets(text: str) -> tuple[Budget, ...]:
    """``"k=253,delta=1.0"`` (``delta_x=`` optional, default ``delta``; several budgets separated by ``;``) ->
    budgets.

    :raises ValueError: A malformed budget, quoting the bad token.
    """
    out = []
    for item in str(text).split(";"):
        fields: dict[str, str] = {}
        for token in item.split(","):
            key, sep, value = token.strip().partition("=")
            if not sep or key not in ("k", "delta", "delta_x") or key in fields or not value.strip():
                raise ValueError(f"bad token {token.strip()!r} in {item.strip()!r}: expected {_BUDGET_SYNTAX}")
            fields[key] = value.strip()
        missing = [key for key in ("k", "delta") if key not in fields]
        if missing:
            raise ValueError(f"{item.strip()!r} has no {missing[0]}=: expected {_BUDGET_SYNTAX}")
        try:
            k = int(fields["k"])
        except ValueError:
            raise ValueError(f"bad token 'k={fields['k']}' in {item.strip()!r}: k must be an integer >= 0") from None
        values = {}
        for key in ("delta", "delta_x"):
            if key in fields:
                try:
                    values[key] = float(fields[key])
                except ValueError:
                    values[key] = fields[key]  # refused below, by name
        try:
            out.append(Budget(k, **values))
        except ValueError as err:
            raise ValueError(f"{item.strip()!r}: {err}") from None
    return tuple(out)


def k_grid(nb_train: int) -> np.ndarray:
    """The numbers of poisoned samples of a certified-accuracy curve: 0, 1, 2, 5, 10, 20, 50, ... up to
    ``nb_train`` (included)."""
    steps = [0] + [m * 10**e for e in range(12) for m in (1, 2, 5)]
    return np.array(sorted({k for k in steps if k < nb_train} | {nb_train}), dtype=np.int64)


def certified_accuracy_by_k(result, y, delta: float, ks, delta_x: float | None = None) -> np.ndarray:
    """Certified accuracy of a :class:`~art_certssbd.result.CertificationResult` (holding the training sigmas) at
    each ``k`` of ``ks``, with triggers of norm ``delta`` (test trigger ``delta_x``, default ``delta``): one
    :meth:`BudgetCertificate.k_max` per input, certified at ``k`` iff ``k <= k_max``."""
    k_max = result.k_max(delta, delta_x)
    correct = (np.asarray(result.pred) == np.asarray(y).reshape(-1)) & (np.asarray(result.pred) != -1)
    ks = np.asarray(ks, dtype=np.int64).reshape(-1)
    return np.array([np.mean(correct & (k_max >= k)) for k in ks], dtype=float)


def check_budgets(budgets, nb_train: int | None = None) -> tuple[Budget, ...]:
    """``budgets`` as a tuple of :class:`Budget`: each a :class:`Budget`, a tuple ``(k, delta)`` or ``(k, delta,
    delta_x)``, or a dict with those keys; ``None`` for none.

    :param nb_train: The training set's size: a ``k`` above it is refused.
    :raises ValueError: A malformed budget, naming it.
    """
    if budgets is None:
        return ()
    if isinstance(budgets, (Budget, dict)) or (
        isinstance(budgets, tuple) and budgets and not isinstance(budgets[0], (tuple, list, dict, Budget))
    ):
        budgets = [budgets]  # one budget given alone
    out = []
    for item in budgets:
        try:
            if isinstance(item, Budget):
                budget = item
            elif isinstance(item, dict):
                budget = Budget(**item)
            elif isinstance(item, (tuple, list)) and len(item) in (2, 3):
                budget = Budget(*item)
            else:
                raise ValueError("expected a Budget, (k, delta), (k, delta, delta_x) or a dict with those keys")
        except (TypeError, ValueError) as err:
            raise ValueError(f"budgets: bad budget {item!r} ({err})") from None
        if nb_train is not None and budget.k > nb_train:
            raise ValueError(
                f"budgets: k={budget.k} is larger than the training set ({nb_train} samples): at most {nb_train} can "
                "be poisoned"
            )
        out.append(budget)
    return tuple(out)


def attach_budgets(result, train_sigma, budgets=None):
    """A copy of a :class:`~art_certssbd.result.CertificationResult` (after the memory) holding the training sigmas
    and, for each of ``budgets`` (:func:`check_budgets`), whether each input is certified against it."""
    train_sigma = _check_array(train_sigma, "train_sigma", positive=True)
    budgets = check_budgets(budgets, train_sigma.shape[0])
    certificate = BudgetCertificate.from_result(result, train_sigma)
    decided = np.stack([certificate.certified(b.k, b.delta, b.delta_x) for b in budgets], axis=1) if budgets else None
    rows = np.array([[b.k, b.delta, b.test_norm] for b in budgets], dtype=float).reshape(-1, 3)
    return dataclasses.replace(result, train_sigma=train_sigma, budgets=rows, budget_certified=decided)
