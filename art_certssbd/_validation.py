"""Early, explicit checks of user input: each failure names the parameter and the offending value."""

from __future__ import annotations

import numbers
import os
from pathlib import Path

import numpy as np

NOT_FITTED = (
    "This {name} instance is not fitted yet. Call 'fit' with appropriate arguments before using this estimator."
)


class NotFittedError(ValueError, AttributeError):
    """Raised when a method needs a fitted estimator (scikit-learn's convention: a ValueError and AttributeError)."""


def check_int(value, name: str, minimum: int = 1) -> int:
    """An integer ``>= minimum`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive(value, name: str) -> float:
    """A finite real number ``> 0``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_nonnegative(value, name: str) -> float:
    """A finite real number ``>= 0``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_probability(value, name: str) -> float:
    """A real number in the open interval (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return float(value)


def first_bad(values: np.ndarray, bad: np.ndarray):
    """The first offending entry of ``values`` where the mask ``bad`` is set (for error messages)."""
    return np.broadcast_to(values, bad.shape)[bad].flat[0]


def check_alpha(alpha) -> float:
    """``alpha`` as a float in the open interval (0, 1)."""
    return check_probability(alpha, "alpha")


def check_positive_array(value, name: str) -> np.ndarray:
    """``value`` as a float array of finite, strictly positive entries."""
    arr = np.asarray(value, dtype=float)
    bad = ~(np.isfinite(arr) & (arr > 0))
    if bad.any():
        raise ValueError(f"{name} must be finite and > 0, got {first_bad(arr, bad)}")
    return arr


def check_unit_interval(value, name: str) -> np.ndarray:
    """``value`` as a float array in the closed interval [0, 1]."""
    arr = np.asarray(value, dtype=float)
    bad = ~((arr >= 0) & (arr <= 1))
    if bad.any():
        raise ValueError(f"{name} must be in [0, 1], got {first_bad(arr, bad)}")
    return arr


def check_n(n) -> np.ndarray:
    """``n`` (a number of votes) as an integer array of entries >= 1."""
    arr = np.asarray(n, dtype=float)
    bad = ~(np.isfinite(arr) & (arr >= 1) & (arr == np.floor(arr)))
    if bad.any():
        raise ValueError(f"n must be an integer >= 1, got {first_bad(arr, bad)}")
    return arr.astype(np.int64)


def check_k(k, n: np.ndarray, integer: bool) -> np.ndarray:
    """``k`` (votes for one class) as a float array with ``0 <= k <= n`` (integer-valued when ``integer``)."""
    arr = np.asarray(k, dtype=float)
    bad = ~(np.isfinite(arr) & (arr >= 0) & (arr <= n))
    if integer:
        bad |= arr != np.floor(arr)
    if bad.any():
        kind = "integers" if integer else "numbers"
        raise ValueError(f"k must be {kind} in [0, n], got {first_bad(arr, bad)}")
    return arr


def check_sigma_rows(sigma, nb_rows: int) -> np.ndarray:
    """``sigma`` as a positive array of shape ``(nb_rows,)`` (a scalar is broadcast)."""
    sigma = check_positive_array(sigma, "sigma")
    if sigma.ndim > 1 or (sigma.ndim == 1 and sigma.shape[0] != nb_rows):
        raise ValueError(f"sigma must be a scalar or have shape ({nb_rows},), got shape {sigma.shape}")
    return np.broadcast_to(sigma, (nb_rows,))


def check_choice(value, name: str, choices: tuple) -> str:
    """One of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_bool(value, name: str) -> bool:
    """A boolean (``True``/``False`` or a numpy bool; strings such as ``"no"`` are refused, not read as true)."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_pair(value, name: str) -> tuple:
    """A pair ``(low, high)`` (a tuple or list of length 2)."""
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}")
    return tuple(value)


def check_input_shape(value, name: str = "input_shape") -> tuple[int, ...]:
    """A non-empty tuple (or list) of positive integers, e.g. ``(1, 28, 28)``."""
    if (
        not isinstance(value, tuple | list)
        or not value
        or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1 for v in value)
    ):
        raise ValueError(f"{name} must be a non-empty tuple of positive integers, got {value!r}")
    return tuple(int(v) for v in value)


def _describe(x: np.ndarray) -> str:
    return f"array of shape {x.shape} and dtype {x.dtype}"


def check_inputs(
    x, input_shape: tuple[int, ...], clip_values=None, name: str = "x", *, allow_empty: bool = False
) -> np.ndarray:
    """Validate a batch of inputs and return it as a float32 array.

    :param x: Inputs of shape ``(N, *input_shape)``.
    :param input_shape: The estimator's ``input_shape``.
    :param clip_values: ``(min, max)`` allowed range, or ``None``.
    :param name: Parameter name for messages.
    :param allow_empty: Accept ``N = 0`` (prediction and certification of an empty batch, as ART); otherwise an
           empty batch is refused (training on nothing).
    """
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.dtype.kind not in "fiu":
        raise ValueError(f"{name} must hold real numbers, got {_describe(x)}")
    if x.ndim != len(input_shape) + 1 or tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(f"{name} must have shape (N, {', '.join(map(str, input_shape))}), got {_describe(x)}")
    if x.shape[0] == 0 and allow_empty:
        return np.zeros(x.shape, dtype=np.float32)
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: got {_describe(x)}")
    if not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")
    if clip_values is not None:
        low, high = (np.asarray(v, dtype=np.float64) for v in clip_values)
        tol = 1e-6
        below, above = x < low - tol, x > high + tol
        if below.any() or above.any():
            raise ValueError(
                f"{name} has values outside clip_values={tuple(np.asarray(clip_values).tolist())}: "
                f"min {float(x.min())!r}, max {float(x.max())!r}"
            )
    if x.dtype.kind == "f" and x.dtype.itemsize > 4 and np.abs(x).max() > np.finfo(np.float32).max:
        raise ValueError(f"{name} has values beyond the float32 range: max |x| {float(np.abs(x).max())!r}")
    # a C-contiguous, native-endian float32 copy when needed (torch refuses negative strides and foreign byte order)
    return np.ascontiguousarray(x, dtype=np.float32)


def check_labels(y, nb_samples: int, nb_classes: int, name: str = "y") -> np.ndarray:
    """Validate labels in any format ART's ``PyTorchClassifier`` accepts and return int64 class indices ``(N,)``.

    * indices ``(N,)`` or ``(N, 1)``: integers, or floats holding whole numbers (``3.0``);
    * a ``(N, nb_classes)`` matrix: one-hot, soft (probabilities) or any scores, read as ``argmax`` per row as ART
      does; a row without a single maximum (ART's all-zero abstain rows of ``predict``, or the all-one rows
      ``art.utils.get_labels_np_array`` makes of them) gives its first maximal class, i.e. class 0.

    Refused with a ``ValueError`` naming ``name`` and the values: other shapes, non-numeric or boolean indices, NaN or
    infinite values, fractional indices (``1.5``; ART would truncate them) and indices outside ``[0, nb_classes)``.
    """
    if not isinstance(y, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(y).__name__}")
    if y.ndim == 2 and y.shape[1] == nb_classes and y.shape[1] > 1:
        if y.dtype.kind not in "fiub":
            raise ValueError(f"{name} must hold numbers, got {_describe(y)}")
        if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
            raise ValueError(f"{name} contains NaN or infinite values: {_describe(y)}")
        y = y.argmax(axis=1)
    elif y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim != 1:
        raise ValueError(f"{name} must have shape ({nb_samples},) or ({nb_samples}, {nb_classes}), got {_describe(y)}")
    if y.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold integer class indices, got {_describe(y)}")
    if y.shape[0] != nb_samples:
        raise ValueError(f"{name} has {y.shape[0]} labels but x has {nb_samples} samples")
    if y.dtype.kind == "f":
        bad = y[~np.isfinite(y) | (y != np.round(y))] if y.size else y
        if bad.size:
            raise ValueError(f"{name} must hold integer class indices, got the values {bad[:5]} ({_describe(y)})")
    if y.size and (y.min() < 0 or y.max() >= nb_classes):
        bad = y[(y < 0) | (y >= nb_classes)]
        raise ValueError(f"{name} has labels outside [0, {nb_classes - 1}] (nb_classes={nb_classes}): {bad[:5]}")
    return y.astype(np.int64)


def existing_path(path, name: str, kind: str = "file") -> Path:
    """``path`` as a :class:`~pathlib.Path` that exists and is a ``kind`` (``"file"`` or ``"directory"``), else an
    error naming it: FileNotFoundError (missing), IsADirectoryError / NotADirectoryError (the other kind), ValueError
    (not a path at all)."""
    if not isinstance(path, str | os.PathLike):
        raise ValueError(f"{name} must be a path, got {type(path).__name__} {path!r}")
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{name}{' directory' if kind == 'directory' else ''} {str(path)!r} does not exist")
    if kind == "directory" and not path.is_dir():
        raise NotADirectoryError(f"{name} {str(path)!r} is not a directory")
    if kind == "file" and not path.is_file():
        raise IsADirectoryError(f"{name} {str(path)!r} is not a file")
    return path


def existing_file(path, name: str) -> Path:
    """An existing file (see :func:`existing_path`)."""
    return existing_path(path, name, "file")


def existing_dir(path, name: str = "root") -> Path:
    """An existing directory (see :func:`existing_path`)."""
    return existing_path(path, name, "directory")
