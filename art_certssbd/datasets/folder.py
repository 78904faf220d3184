"""Image folders with one sub-folder per class (GTSRB training set, ImageNette, dogs-vs-cats sorted by class, ...).

Needs Pillow (``pip install pillow``), imported only when a folder is loaded.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from art_certssbd.datasets._common import existing_dir

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _check_size(size: object) -> tuple[int, int]:
    ok = (
        isinstance(size, Sequence)
        and len(size) == 2
        and all(isinstance(v, int | np.integer) and not isinstance(v, bool) and v > 0 for v in size)
    )
    if not ok:
        raise ValueError(f"size must be a pair of positive ints (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def _check_extensions(extensions: object) -> tuple[str, ...]:
    if isinstance(extensions, str) or not isinstance(extensions, Sequence) or not extensions:
        raise ValueError(f"extensions must be a non-empty sequence of suffixes like '.png', got {extensions!r}")
    if not all(isinstance(ext, str) and ext.startswith(".") and len(ext) > 1 for ext in extensions):
        raise ValueError(f"extensions must be suffixes starting with '.', got {extensions!r}")
    return tuple(ext.lower() for ext in extensions)


def _select_classes(available: list[str], classes: Sequence[str] | None, root: Path) -> list[str]:
    if classes is None:
        return available
    if isinstance(classes, str) or not isinstance(classes, Sequence) or not classes:
        raise ValueError(f"classes must be a non-empty list of class folder names, got {classes!r}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes contains duplicates: {list(classes)!r}")
    unknown = [name for name in classes if name not in available]
    if unknown:
        raise ValueError(f"unknown class(es) {unknown!r} in {str(root)!r}; available classes: {available}")
    return list(classes)


def list_image_folder(
    root: str | os.PathLike, classes: Sequence[str] | None = None, extensions: Sequence[str] = IMAGE_EXTENSIONS
) -> tuple[list[Path], np.ndarray, list[str]]:
    """List the image files of a class-per-folder tree without opening them.

    :param root: Directory whose sub-folders are the classes.
    :param classes: Class folder names to keep, in label order. Default: every sub-folder, sorted by name.
    :param extensions: File suffixes (case-insensitive) counted as images; other files are skipped.
    :return: ``(paths, labels, class_names)``: files sorted by class then by path, int64 labels.
    """
    root = existing_dir(root)
    extensions = _check_extensions(extensions)
    available = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not available:
        raise ValueError(f"{str(root)!r} has no class sub-folders")
    class_names = _select_classes(available, classes, root)
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(class_names):
        files = sorted(
            path
            for path in (root / name).rglob("*")
            if path.is_file() and path.suffix.lower() in extensions and not path.name.startswith(".")
        )
        if not files:
            raise ValueError(f"class folder {str(root / name)!r} has no image files with suffixes {extensions}")
        paths.extend(files)
        labels.extend([label] * len(files))
    return paths, np.asarray(labels, dtype=np.int64), class_names


def load_image_folder(
    root: str | os.PathLike,
    size: tuple[int, int] = (32, 32),
    classes: Sequence[str] | None = None,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load every image of a class-per-folder tree as RGB, resized with bilinear interpolation.

    Labels follow the sorted sub-folder names (``00000`` ... ``00042`` for GTSRB's ``Final_Training/Images``), or
    the order of ``classes``. Files with other suffixes (GTSRB's per-class CSV files, for example) and hidden
    files are skipped; sub-folders of a class folder are searched too.

    :param root: Directory whose sub-folders are the classes.
    :param size: Output ``(height, width)``.
    :param classes: Class folder names to keep, in label order. Default: all, sorted.
    :param extensions: File suffixes (case-insensitive) read as images.
    :return: ``(x, y, class_names)``: float32 ``(N, 3, H, W)`` in [0, 1], int64 ``(N,)``, list of names.
    :raises ValueError: For a bad ``size``/``extensions``, an unknown class (the message lists the available ones),
        an empty class folder, or an image Pillow cannot read (naming the file).
    """
    height, width = _check_size(size)
    paths, labels, class_names = list_image_folder(root, classes, extensions)
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("load_image_folder needs Pillow: pip install pillow") from err
    x = np.empty((len(paths), 3, height, width), dtype=np.float32)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
                if rgb.size != (width, height):
                    rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
                pixels = np.asarray(rgb, dtype=np.uint8)
        except (OSError, SyntaxError, ValueError) as err:
            raise ValueError(f"cannot read image {str(path)!r}: {err}") from err
        x[i] = pixels.transpose(2, 0, 1)
    x /= 255.0
    logger.info("Loaded %d images of %d classes from %s at %dx%d", len(x), len(class_names), root, height, width)
    return x, labels, class_names
