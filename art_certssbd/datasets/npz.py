"""NumPy ``.npz`` archives holding images and labels (a user's own, possibly already poisoned, data).

Arrays, read with ``allow_pickle=False`` (an archive cannot run code):

* ``x`` and ``y``, or ``x_train``/``y_train`` and ``x_test``/``y_test`` for a file that holds both splits;
* images ``(N, H, W)`` (one channel), ``(N, C, H, W)`` or ``(N, H, W, C)`` with ``C`` in 1 or 3, either ``uint8``
  (0..255, scaled to [0, 1]) or floating point already in [0, 1];
* labels ``(N,)`` of non-negative integers, or one-hot ``(N, K)``;
* optionally ``class_names``, an array of strings (label ``i`` is ``class_names[i]``).
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

import numpy as np

from art_certssbd.datasets._common import check_split, to_float01

logger = logging.getLogger(__name__)


def npz_splits(path: str | os.PathLike) -> tuple[str, ...]:
    """The splits an archive holds: ``("train", "test")`` when it has ``x_train`` and ``x_test``, else ``()``."""
    with _open(Path(path).expanduser()) as archive:
        keys = set(archive.files)
    return ("train", "test") if {"x_train", "y_train", "x_test", "y_test"} <= keys else ()


_NOT_ARCHIVE = "is not an .npz archive (the zip file np.savez writes)"


def _open(path: Path):
    """The archive, after checking that the file is one (numpy's own message would advise ``allow_pickle``, an
    unsafe load, for any other file)."""
    if not path.is_file():
        raise FileNotFoundError(f"npz file {str(path)!r} does not exist")
    try:
        with open(path, "rb") as handle:
            head = handle.read(6)
    except OSError as err:
        raise ValueError(f"{str(path)!r} cannot be read ({err})") from err
    if head.startswith(b"\x93NUMPY"):
        raise ValueError(f"{str(path)!r} {_NOT_ARCHIVE} but a single .npy array: save x and y with np.savez")
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise ValueError(f"{str(path)!r} {_NOT_ARCHIVE}: it starts with {head!r}")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{str(path)!r} {_NOT_ARCHIVE}, or a damaged one ({type(err).__name__})") from err


def _images(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)  # channels last -> channels first
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"{where}: images must be (N, H, W), (N, C, H, W) or (N, H, W, C) with C in 1 or 3")
    if x.dtype == np.uint8:
        return to_float01(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{where}: images must be uint8 (0..255) or floating point in [0, 1], got {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.size and not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
        raise ValueError(f"{where}: floating-point images must be finite and in [0, 1] (scale them, or save uint8)")
    return x


def _labels(y: np.ndarray, where: str) -> np.ndarray:
    if y.ndim == 2 and np.issubdtype(y.dtype, np.number) and np.isin(y, (0, 1)).all() and (y.sum(1) == 1).all():
        y = y.argmax(1)  # one-hot
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{where}: labels must be 1-d integers (or one-hot), got {y.dtype} {y.shape}")
    if y.size and y.min() < 0:
        raise ValueError(f"{where}: labels must be >= 0, got {int(y.min())}")
    return y.astype(np.int64)


def load_npz(path: str | os.PathLike, split: str | None = None) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """Load images and labels from an ``.npz`` archive.

    :param path: The archive.
    :param split: ``"train"`` or ``"test"`` for ``x_train``/``x_test`` when the archive has both splits; with
        ``None``, or for an archive with plain ``x``/``y``, those are read.
    :return: ``(x, y, class_names)``: float32 ``(N, C, H, W)`` in [0, 1], int64 ``(N,)`` and the names or ``None``.
    :raises FileNotFoundError: If the file does not exist.
    :raises ValueError: For a file that is not an archive, missing arrays, bad shapes, types or ranges (naming the
        file and the array).
    """
    path = Path(path).expanduser()
    if split is not None:
        check_split(split)
    with _open(path) as archive:
        keys = set(archive.files)
        if split is not None and f"x_{split}" in keys:
            x_key, y_key = f"x_{split}", f"y_{split}"
        else:
            x_key, y_key = "x", "y"
        missing = [key for key in (x_key, y_key) if key not in keys]
        if missing:
            raise ValueError(
                f"{str(path)!r} has no array {missing[0]!r} (arrays: {sorted(keys)}; expected x and y, or x_train, "
                "y_train, x_test and y_test)"
            )
        try:
            x, y = archive[x_key], archive[y_key]
            names = archive["class_names"] if "class_names" in keys else None
        except ValueError as err:  # object arrays need pickle, refused (numpy's message advises allow_pickle)
            raise ValueError(
                f"{str(path)!r} holds object arrays (Python objects, which only an unsafe pickle load reads): save "
                "numeric arrays, and class names as an array of strings"
            ) from err
    x = _images(x, f"{str(path)!r} array {x_key!r}")
    y = _labels(y, f"{str(path)!r} array {y_key!r}")
    if len(x) != len(y):
        raise ValueError(f"{str(path)!r}: {x_key!r} has {len(x)} images but {y_key!r} has {len(y)} labels")
    class_names = None
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise ValueError(f"{str(path)!r}: 'class_names' must be a 1-d array of strings")
        class_names = [str(n.decode() if isinstance(n, bytes) else n) for n in names.tolist()]
        if y.size and y.max() >= len(class_names):
            raise ValueError(f"{str(path)!r}: label {int(y.max())} has no entry in 'class_names'")
    logger.info("Loaded %d images %s from %s (%s)", len(x), x.shape[1:], path, x_key)
    return x, y, class_names
