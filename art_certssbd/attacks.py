"""Backdoor triggers of the RAB / Cert-SSBD threat model, as callables for ART's ``PoisoningAttackBackdoor``.

Every trigger is additive with L2 norm ``delta`` (before clipping) and works on batches of shape ``(N, C, H, W)``
(``channels_first=True``), ``(N, H, W, C)`` (``channels_first=False``) or ``(N, H, W)`` (one channel, no channel
axis; a 3-D array is always read as a batch, never as one ``(C, H, W)`` image). The pixel presets are RAB's
(``attack_lib.py``), which the Cert-SSBD paper uses:

- one-pixel, one channel: pixel ``(round(23 (H-1) / 27), round(23 (W-1) / 27))``, i.e. ``(23, 23)`` on MNIST and
  ``(6, 6)`` on 8x8 digits, ``+delta``; ``C`` channels: the centre pixel, ``+delta / sqrt(C)`` per channel. The
  centre is ``((H-1) // 2, (W-1) // 2)``, except RAB's ``(112, 112)`` on 224x224 (``(15, 15)`` on CIFAR-10).
- four-pixel: the pattern ``anchor + {(-1, +1), (0, 0), (+1, -1), (+1, +1)}``, ``+delta / sqrt(4 C)`` per pixel
  and channel. The anchor is ``(19, 19)`` on MNIST (pixels (18,20), (19,19), (20,18), (20,20)), scaled as above
  and kept one pixel from the border for other one-channel sizes (``(5, 5)`` on 8x8), the centre for ``C``
  channels (CIFAR-10: (14,16), (15,15), (16,14), (16,16)). The four pixels are distinct on any image of at least
  3x3; 2xW and Hx2 images get the bottom-right 2x2 block instead.
- blending: ``np.random.default_rng(random_state).standard_normal((C, H, W))`` scaled to L2 norm ``delta`` (in
  ``(C, H, W)`` order whatever the layout, so both layouts get the same pattern), added without clipping.

The pixel triggers clip the touched entries at ``clip_max`` (RAB's ``min(x + d, 1)``); any ``C >= 1`` is accepted
(a ``UserWarning`` is issued when ``C`` is not 1 or 3, which usually means a wrong ``channels_first``).

| Paper link: https://arxiv.org/abs/2504.21730 (threat model of RAB: https://arxiv.org/abs/2003.08904)
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from numbers import Integral, Real

import numpy as np
from art.attacks.poisoning import PoisoningAttackBackdoor

from art_certssbd._validation import check_int, check_positive

logger = logging.getLogger(__name__)

_FOUR_OFFSETS = ((-1, 1), (0, 0), (1, -1), (1, 1))
_COLOUR_CENTRES = {(224, 224): (112, 112)}  # RAB's ImageNet-size preset; other sizes use ((H-1)//2, (W-1)//2)


def _check_position(position, name: str) -> tuple[int, int]:
    ok = isinstance(position, Sequence | np.ndarray) and len(position) == 2
    ok = ok and all(isinstance(v, Integral) and not isinstance(v, bool) and v >= 0 for v in position)
    if not ok:
        raise ValueError(f"{name} must be a (row, col) pair of integers >= 0, got {name}={position!r}")
    return int(position[0]), int(position[1])


class Trigger:
    """An additive backdoor trigger, a ``perturbation`` for :class:`art.attacks.poisoning.PoisoningAttackBackdoor`.

    Build one with :func:`one_pixel`, :func:`four_pixel` or :func:`blending`. The pattern is made in ``(C, H, W)``
    order once per image shape and cached; ``trigger(x)`` returns ``x + pattern`` (the touched entries clipped at
    ``clip_max`` unless it is None) as a new array of ``x``'s shape and dtype.
    """

    def __init__(
        self,
        name: str,
        delta: float = 1.0,
        channels_first: bool = True,
        positions: Sequence[tuple[int, int]] | None = None,
        clip_max: float | None = None,
        random_state: int = 0,
    ) -> None:
        """
        :param name: ``"one_pixel"``, ``"four_pixel"`` or ``"blending"``.
        :param delta: L2 norm of the trigger (before clipping).
        :param channels_first: Whether 4-D batches are ``(N, C, H, W)`` (True) or ``(N, H, W, C)`` (False).
        :param positions: Pixel triggers only: explicit ``(row, col)`` pixels (1, or 4 distinct), or None for the
            size rules of the module docstring.
        :param clip_max: Upper clip of the triggered entries, or None.
        :param random_state: Blending only: seed of ``np.random.default_rng`` that draws the pattern.
        """
        if name not in ("one_pixel", "four_pixel", "blending"):
            raise ValueError(f"name must be 'one_pixel', 'four_pixel' or 'blending', got name={name!r}")
        self.name, self.delta = name, check_positive(delta, "delta")
        if not isinstance(channels_first, bool):
            raise ValueError(f"channels_first must be a bool, got channels_first={channels_first!r}")
        if clip_max is not None and (
            isinstance(clip_max, bool) or not isinstance(clip_max, Real) or not math.isfinite(clip_max)
        ):
            raise ValueError(f"clip_max must be a finite number or None, got clip_max={clip_max!r}")
        self.channels_first = channels_first
        self.clip_max = None if clip_max is None else float(clip_max)
        self.random_state = check_int(random_state, "random_state", minimum=0)
        self.positions = None
        if positions is not None and name != "blending":
            count = 1 if name == "one_pixel" else 4
            seq = isinstance(positions, Sequence | np.ndarray)
            checked = [_check_position(p, "positions") for p in positions] if seq else []
            if len(checked) != count or len(set(checked)) != count:
                raise ValueError(f"positions must be {count} distinct (row, col) pairs, got positions={positions!r}")
            self.positions = tuple(checked)
        self._cache: dict[tuple[int, int, int], np.ndarray] = {}

    def pixel_positions(self, channels: int, height: int, width: int) -> tuple[tuple[int, int], ...]:
        """The ``(row, col)`` pixels a pixel trigger touches on images of shape ``(channels, height, width)``.

        :raises ValueError: If an explicit position lies outside the image, or the image is too small.
        """
        if self.positions is not None:
            for row, col in self.positions:
                if row >= height or col >= width:
                    name = "position" if self.name == "one_pixel" else "positions"
                    raise ValueError(f"{name} must lie inside the {height}x{width} image, got ({row}, {col})")
            return self.positions
        if channels == 1:
            ref = 23 if self.name == "one_pixel" else 19  # MNIST's row/col, scaled; rounded half up
            anchor = tuple(math.floor(ref * (size - 1) / 27 + 0.5) for size in (height, width))
        else:
            anchor = _COLOUR_CENTRES.get((height, width), ((height - 1) // 2, (width - 1) // 2))
        if self.name == "one_pixel":
            return (anchor,)
        if height >= 3 and width >= 3:
            row, col = min(max(anchor[0], 1), height - 2), min(max(anchor[1], 1), width - 2)
            return tuple((row + dr, col + dc) for dr, dc in _FOUR_OFFSETS)
        if height >= 2 and width >= 2:
            return ((height - 2, width - 2), (height - 2, width - 1), (height - 1, width - 2), (height - 1, width - 1))
        raise ValueError(f"four_pixel needs images of at least 2x2, got image shape {(channels, height, width)}")

    def pattern(self, image_shape: tuple[int, int, int]) -> np.ndarray:
        """The additive pattern for one image, float64, shape ``(C, H, W)``, read-only (built once per shape).

        :param image_shape: ``(C, H, W)`` of one image.
        """
        key = tuple(int(v) for v in image_shape)
        if key not in self._cache:
            if self.name == "blending":
                pattern = np.random.default_rng(self.random_state).standard_normal(key)
                pattern *= self.delta / np.linalg.norm(pattern)
            else:
                pixels = self.pixel_positions(*key)
                pattern = np.zeros(key)
                for row, col in pixels:
                    pattern[:, row, col] = self.delta / math.sqrt(len(pixels) * key[0])
            pattern.flags.writeable = False
            self._cache[key] = pattern
        return self._cache[key]

    def _chw(self, x: np.ndarray) -> tuple[int, int, int]:
        if x.ndim == 3:
            return 1, x.shape[1], x.shape[2]
        return x.shape[1:] if self.channels_first else (x.shape[3], x.shape[1], x.shape[2])

    def validate(self, x: np.ndarray) -> None:
        """Check a batch before any work.

        :param x: Batch of images.
        :raises ValueError: If ``x`` is not a float array of 3 or 4 dimensions, or the trigger does not fit it.
        """
        if not isinstance(x, np.ndarray) or x.ndim not in (3, 4):
            shape = getattr(x, "shape", None)
            raise ValueError(f"x must be an array of shape (N, H, W), (N, C, H, W) or (N, H, W, C), got shape {shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"x must have a float dtype, got x.dtype={x.dtype}")
        channels, height, width = self._chw(x)
        if min(channels, height, width) < 1:
            raise ValueError(f"x must hold non-empty images, got x.shape={x.shape}")
        if channels not in (1, 3):
            warnings.warn(
                f"{self.name}: {channels} channels in x.shape={x.shape}; check channels_first",
                UserWarning,
                stacklevel=3,
            )
        self.pattern((channels, height, width))  # raises for a position outside the image

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """
        :param x: Batch of float images, ``(N, C, H, W)``, ``(N, H, W, C)`` or ``(N, H, W)``; left unchanged.
        :return: The triggered batch, a new array of the same shape and dtype.
        """
        x = np.asarray(x)
        self.validate(x)
        pattern = self.pattern(self._chw(x))
        if x.ndim == 3:
            pattern = pattern[0]
        elif not self.channels_first:
            pattern = pattern.transpose(1, 2, 0)
        out = x + pattern.astype(x.dtype)
        if self.clip_max is not None:
            out = np.where(pattern != 0, np.minimum(out, x.dtype.type(self.clip_max)), out)
        return out.astype(x.dtype, copy=False)

    def __repr__(self) -> str:
        if self.name == "blending":
            extra = f"random_state={self.random_state!r}"
        elif self.name == "one_pixel":
            extra = f"position={self.positions and self.positions[0]!r}, clip_max={self.clip_max!r}"
        else:
            extra = f"positions={self.positions and list(self.positions)!r}, clip_max={self.clip_max!r}"
        return f"{self.name}(delta={self.delta!r}, channels_first={self.channels_first!r}, {extra})"


def one_pixel(
    delta: float = 1.0, channels_first: bool = True, position: tuple[int, int] | None = None, clip_max: float = 1.0
) -> Trigger:
    """One-pixel trigger: MNIST ``x[..., 23, 23] += delta`` clipped at ``clip_max``; ``C`` channels: centre pixel.

    :param delta: L2 norm of the trigger (``delta / sqrt(C)`` per channel).
    :param channels_first: Whether 4-D batches are ``(N, C, H, W)``.
    :param position: ``(row, col)`` overriding the size rule of the module docstring.
    :param clip_max: Upper clip of the triggered entries, or None.
    """
    positions = None if position is None else [_check_position(position, "position")]
    return Trigger("one_pixel", delta, channels_first, positions, clip_max)


def four_pixel(
    delta: float = 1.0,
    channels_first: bool = True,
    positions: Sequence[tuple[int, int]] | None = None,
    clip_max: float = 1.0,
) -> Trigger:
    """Four-pixel trigger: MNIST (18,20), (19,19), (20,18), (20,20), ``+delta / 2`` each, clipped at ``clip_max``.

    :param delta: L2 norm of the trigger (``delta / sqrt(4 C)`` per pixel and channel).
    :param channels_first: Whether 4-D batches are ``(N, C, H, W)``.
    :param positions: Four distinct ``(row, col)`` pairs overriding the size rule of the module docstring.
    :param clip_max: Upper clip of the triggered entries, or None.
    """
    return Trigger("four_pixel", delta, channels_first, positions, clip_max)


def blending(delta: float = 1.0, random_state: int = 0, channels_first: bool = True) -> Trigger:
    """Blending trigger: a fixed Gaussian pattern of L2 norm ``delta``, added without clipping.

    :param delta: L2 norm of the pattern.
    :param random_state: Seed of ``np.random.default_rng`` for the pattern.
    :param channels_first: Whether 4-D batches are ``(N, C, H, W)``.
    """
    return Trigger("blending", delta, channels_first, random_state=random_state)


def _check_perturbation(perturbation, x: np.ndarray) -> list[Callable]:
    chain = list(perturbation) if isinstance(perturbation, list | tuple) else [perturbation]
    if not chain or not all(callable(p) for p in chain):
        raise ValueError(f"perturbation must be a callable or a list of callables, got perturbation={perturbation!r}")
    for p in chain:
        if isinstance(p, Trigger):
            p.validate(x)
    return chain


def apply_trigger(x: np.ndarray, perturbation: Callable | Sequence[Callable]) -> np.ndarray:
    """Triggered copy of a test set (``x`` is left unchanged).

    :param x: Batch of inputs.
    :param perturbation: A trigger (or any callable ``x -> x``), or a list of them applied in order.
    :return: The triggered batch, same shape and dtype as ``x``.
    """
    x = np.asarray(x)
    chain = _check_perturbation(perturbation, x)
    out = np.array(x, copy=True)
    for p in chain:
        out = p(out)
    if out.shape != x.shape:
        raise ValueError(f"perturbation changed the shape from {x.shape} to {out.shape}")
    return out.astype(x.dtype, copy=False)


def _labels(y: np.ndarray, name: str) -> np.ndarray:
    if y.ndim == 2:
        return np.argmax(y, axis=1)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or np.all(np.mod(y, 1) == 0)):
        raise ValueError(f"{name} must be integer labels (N,) or one-hot (N, C), got {name}.shape={y.shape}")
    return y.astype(np.int64)


def poison_dataset(
    x: np.ndarray,
    y: np.ndarray,
    perturbation: Callable | Sequence[Callable],
    rate: float = 0.02,
    target: int = 0,
    random_state: int | None = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backdoor ``round(rate * N)`` samples drawn uniformly from the non-target classes and relabel them ``target``.

    The trigger is applied through :class:`art.attacks.poisoning.PoisoningAttackBackdoor`. ``round`` is Python's
    (half to even). RAB draws ``int(N * rate)`` with numpy's global generator; we use
    ``np.random.default_rng(random_state)``, so the same seed gives the same mask.

    :param x: Training inputs, shape ``(N, ...)``.
    :param y: Integer labels ``(N,)`` or one-hot labels ``(N, C)``; the format is kept.
    :param perturbation: A trigger (or any callable ``x -> x``), or a list of them.
    :param rate: Fraction of the whole training set to poison, in ``[0, 1]``.
    :param target: Target class, ``0 <= target < C`` (one-hot) or ``<= max(y)`` (integer labels).
    :param random_state: Seed for the choice of the poisoned samples (None: not reproducible).
    :return: ``(x_poisoned, y_poisoned, is_poison)``: copies of the set, and a boolean mask of shape ``(N,)``.
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 1 or y.ndim < 1 or len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got x.shape={x.shape} and y.shape={y.shape}")
    labels = _labels(y, "y")
    if isinstance(rate, bool) or not isinstance(rate, Real) or not 0 <= rate <= 1:
        raise ValueError(f"rate must be a number in [0, 1], got rate={rate!r}")
    nb_classes = y.shape[1] if y.ndim == 2 else int(labels.max(initial=0)) + 1
    if isinstance(target, bool) or not isinstance(target, Integral) or not 0 <= target < nb_classes:
        raise ValueError(f"target must be a class label in [0, {nb_classes - 1}], got target={target!r}")
    seed = None if random_state is None else check_int(random_state, "random_state", minimum=0)
    chain = _check_perturbation(perturbation, x)
    nb_poison = round(rate * len(x))
    candidates = np.flatnonzero(labels != target)
    if nb_poison > len(candidates):
        raise ValueError(
            f"rate={rate!r} asks for {nb_poison} poisoned samples but only {len(candidates)} have a label != "
            f"target={target}"
        )
    is_poison = np.zeros(len(x), dtype=bool)
    x_poisoned, y_poisoned = np.array(x, copy=True), np.array(y, copy=True)
    if nb_poison == 0:
        return x_poisoned, y_poisoned, is_poison
    index = np.sort(np.random.default_rng(seed).choice(candidates, size=nb_poison, replace=False))
    if y.ndim == 2:
        y_target = np.zeros((nb_poison, y.shape[1]), dtype=y.dtype)
        y_target[:, target] = 1
    else:
        y_target = np.full(nb_poison, target, dtype=y.dtype)
    attack = PoisoningAttackBackdoor(chain[0] if len(chain) == 1 else chain)
    x_sel, y_sel = attack.poison(x[index], y=y_target)
    if x_sel.shape != x[index].shape:
        raise ValueError(f"perturbation changed the shape from {x[index].shape} to {x_sel.shape}")
    x_poisoned[index], y_poisoned[index], is_poison[index] = x_sel, y_sel, True
    logger.info("Poisoned %d of %d samples (rate %g) towards target %d", nb_poison, len(x), rate, target)
    return x_poisoned, y_poisoned, is_poison


def attack_success_rate(pred: np.ndarray, y_true: np.ndarray, target: int) -> float:
    """Fraction of the samples whose true label is not ``target`` that are predicted as ``target``.

    Abstentions (label ``-1``, or an all-zero score row as ART's smoothed estimators return) count as failures.

    :param pred: Predicted labels ``(N,)`` (``-1`` = abstain) or scores ``(N, C)``, on triggered inputs.
    :param y_true: Clean labels of those inputs, integer ``(N,)`` or one-hot ``(N, C)``.
    :param target: The attacker's target class.
    :return: The attack success rate in ``[0, 1]``.
    """
    pred, y_true = np.asarray(pred), np.asarray(y_true)
    if pred.ndim == 2:
        pred = np.where(np.any(pred != 0, axis=1), np.argmax(pred, axis=1), -1)
    if pred.ndim != 1 or len(pred) != len(y_true):
        raise ValueError(f"pred and y_true must have the same length, got shapes {pred.shape} and {y_true.shape}")
    if isinstance(target, bool) or not isinstance(target, Integral) or target < 0:
        raise ValueError(f"target must be an integer >= 0, got target={target!r}")
    mask = _labels(y_true, "y_true") != target
    if not mask.any():
        raise ValueError(f"y_true has no sample with a label other than target={target}")
    return float(np.mean(pred[mask] == target))
