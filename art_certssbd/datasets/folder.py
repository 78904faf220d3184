"""Image folders with one sub-folder per class (GTSRB training set, ImageNette, dogs-vs-cats sorted by class, ...).

Needs Pillow (``pip install pillow``), imported only when a folder is loaded.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from art_certssbd.datasets._common import check_channels, existing_dir

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


#: Pillow modes of single-channel images (grey levels, with or without transparency).
GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def is_grey(image) -> bool:
    """Whether a Pillow image holds one channel: a grey mode, or a palette whose colours are all grey."""
    if image.mode in GREY_MODES:
        return True
    if image.mode in ("P", "PA"):
        palette = image.getpalette() or []
        return all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette) - 2, 3))
    return False


def load_image_folder(
    root: str | os.PathLike,
    size: tuple[int, int] = (32, 32),
    classes: Sequence[str] | None = None,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    channels: int | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load every image of a class-per-folder tree, resized with bilinear interpolation, as grey or RGB.

    Labels follow the sorted sub-folder names (``00000`` ... ``00042`` for GTSRB's ``Final_Training/Images``), or
    the order of ``classes``. Files with other suffixes (GTSRB's per-class CSV files, for example) and hidden
    files are skipped; sub-folders of a class folder are searched too.

    With ``channels=None`` the images decide: when every one is single-channel (Pillow modes ``L``, ``1``, ``I``,
    ``F``, ``LA``, or a palette of greys; Fashion-MNIST or MNIST saved as PNG) they load as one channel, otherwise
    (any colour image among them) as RGB, the grey images with their level copied to the three channels. The
    choice, and the file that forced RGB, are logged.

    :param root: Directory whose sub-folders are the classes.
    :param size: Output ``(height, width)``.
    :param classes: Class folder names to keep, in label order. Default: all, sorted.
    :param extensions: File suffixes (case-insensitive) read as images.
    :param channels: ``1`` (colour images converted to grey with Pillow's ``L`` conversion), ``3`` (RGB), or
           ``None`` (detect, as above).
    :return: ``(x, y, class_names)``: float32 ``(N, C, H, W)`` in [0, 1] with ``C`` 1 or 3, int64 ``(N,)``, names.
    :raises ValueError: For a bad ``size``/``extensions``/``channels``, an unknown class (the message lists the
        available ones), an empty class folder, or an image Pillow cannot read (naming the file).
    """
    height, width = _check_size(size)
    channels = check_channels(channels)
    paths, labels, class_names = list_image_folder(root, classes, extensions)
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("load_image_folder needs Pillow: pip install pillow") from err
    images: list[np.ndarray] = []
    first_colour: Path | None = None
    for path in paths:
        try:
            with Image.open(path) as image:
                grey = is_grey(image) if channels is None else channels == 1
                if not grey and first_colour is None:
                    first_colour = path
                converted = image.convert("L" if grey else "RGB")
                if converted.size != (width, height):
                    converted = converted.resize((width, height), Image.Resampling.BILINEAR)
                pixels = np.asarray(converted, dtype=np.uint8)
        except (OSError, SyntaxError, ValueError) as err:
            raise ValueError(f"cannot read image {str(path)!r}: {err}") from err
        images.append(pixels)
    nb_channels = channels if channels is not None else (1 if first_colour is None else 3)
    x = np.empty((len(paths), nb_channels, height, width), dtype=np.float32)
    for i, pixels in enumerate(images):  # a grey image among colour ones: its level in every channel, as Pillow does
        x[i] = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    x /= 255.0
    if channels is not None:
        reason = f"channels={channels} asked for"
    elif first_colour is None:
        reason = "every image is single-channel"
    else:
        reason = f"not every image is single-channel (the first colour one: {str(first_colour)!r})"
    logger.info(
        "Loaded %d images of %d classes from %s at %dx%d, %s: %s",
        len(x),
        len(class_names),
        root,
        height,
        width,
        "grey (1 channel)" if nb_channels == 1 else "RGB (3 channels)",
        reason,
    )
    return x, labels, class_names
