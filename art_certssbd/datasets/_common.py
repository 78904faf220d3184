"""Private helpers shared by the dataset loaders: argument checks and the uint8 -> float32 conversion."""

from __future__ import annotations

import numpy as np

from art_certssbd._validation import existing_dir  # noqa: F401 (the loaders' directory check)

SPLITS = ("train", "test")


def check_split(split: object) -> str:
    """Return ``split`` when it is ``"train"`` or ``"test"``, else raise a ValueError naming it."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split  # type: ignore[return-value]


def to_float01(images: np.ndarray) -> np.ndarray:
    """uint8 images -> float32 in [0, 1] (a new, C-contiguous array)."""
    out = np.asarray(images, dtype=np.float32)
    out /= 255.0
    return np.ascontiguousarray(out)


def check_channels(channels: object) -> int | None:
    """``1`` (grey), ``3`` (RGB) or ``None`` (detect from the images); ``ValueError`` naming anything else."""
    if channels is None:
        return None
    if isinstance(channels, bool) or not isinstance(channels, int | np.integer) or channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey), 3 (RGB) or None (detect from the images), got {channels!r}")
    return int(channels)
