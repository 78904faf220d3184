"""scikit-learn's embedded 8x8 digits: the package's offline default for the demo and the tests."""

from __future__ import annotations

import numbers

import numpy as np


def load_digits(
    test_size: float | int = 0.25, random_state: int | None = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The 1,797 8x8 digits shipped inside scikit-learn, split once with a fixed, stratified split.

    Pixel values 0..16 are scaled to [0, 1]. Nothing is downloaded.

    :param test_size: Fraction of samples in the test split (float in (0, 1)), or their number (int, at least 10
        and at most ``1797 - 10`` so that both splits hold every class).
    :param random_state: Seed of the split; the same seed gives the same split. ``None`` gives a fresh split.
    :return: ``(x_train, y_train, x_test, y_test)``: float32 ``(N, 1, 8, 8)`` in [0, 1] and int64 ``(N,)`` digits.
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    nb_samples, nb_classes = 1797, 10
    if isinstance(test_size, bool) or not isinstance(test_size, numbers.Real):
        raise ValueError(f"test_size must be a float in (0, 1) or an int, got {test_size!r}")
    if isinstance(test_size, numbers.Integral):
        if not nb_classes <= test_size <= nb_samples - nb_classes:
            raise ValueError(f"test_size must be between {nb_classes} and {nb_samples - nb_classes}, got {test_size}")
        test_size = int(test_size)
    elif not 0.0 < float(test_size) < 1.0:
        raise ValueError(f"test_size must be a float in (0, 1), got {test_size!r}")
    if random_state is not None and (isinstance(random_state, bool) or not isinstance(random_state, numbers.Integral)):
        raise ValueError(f"random_state must be an int or None, got {random_state!r}")

    bunch = sk_load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    split = train_test_split(x, y, test_size=test_size, random_state=random_state, stratify=y)
    x_train, x_test, y_train, y_test = split
    return (
        np.ascontiguousarray(x_train),
        np.ascontiguousarray(y_train),
        np.ascontiguousarray(x_test),
        np.ascontiguousarray(y_test),
    )
