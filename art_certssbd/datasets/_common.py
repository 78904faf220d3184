"""Private helpers shared by the dataset loaders: argument checks and the uint8 -> float32 conversion."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SPLITS = ("train", "test")


def check_split(split: object) -> str:
    """Return ``split`` when it is ``"train"`` or ``"test"``, else raise a ValueError naming it."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split  # type: ignore[return-value]


def existing_dir(root: str | os.PathLike, name: str = "root") -> Path:
    """Return ``root`` as a Path, raising FileNotFoundError (missing) or NotADirectoryError (a file) naming it."""
    if not isinstance(root, str | os.PathLike):
        raise ValueError(f"{name} must be a path, got {type(root).__name__} {root!r}")
    path = Path(root).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{name} directory {str(path)!r} does not exist")
    if not path.is_dir():
        raise NotADirectoryError(f"{name} {str(path)!r} is not a directory")
    return path


def to_float01(images: np.ndarray) -> np.ndarray:
    """uint8 images -> float32 in [0, 1] (a new, C-contiguous array)."""
    out = np.asarray(images, dtype=np.float32)
    out /= 255.0
    return np.ascontiguousarray(out)
