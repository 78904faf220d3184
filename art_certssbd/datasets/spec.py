"""Data sources named by one string, as the command line takes them: ``KIND[:PATH]``.

==================  =====================================================================================
``digits``          scikit-learn's embedded 8x8 digits (fixed stratified split; no path)
``mnist[:DIR]``     MNIST IDX files (default :func:`~art_certssbd.datasets.mnist_dir`)
``fashion-mnist``   Fashion-MNIST IDX files (``fashion-mnist[:DIR]``, default
                    :func:`~art_certssbd.datasets.fashion_mnist_dir`)
``cifar10:DIR``     CIFAR-10 python batches (``cifar-10-batches-py`` or the folder holding it)
``folder:DIR``      one sub-folder per class; ``DIR/train`` and ``DIR/test`` are the splits when both exist,
                    otherwise ``DIR`` is whichever split is asked for
``npz:FILE``        ``x``/``y`` arrays, or ``x_train``/``y_train``/``x_test``/``y_test`` (see :mod:`.npz`)
==================  =====================================================================================
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

DATA_KINDS = ("digits", "mnist", "fashion-mnist", "cifar10", "folder", "npz")
_NEEDS_PATH = ("cifar10", "folder", "npz")


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``KIND[:PATH]``."""

    kind: str
    path: Path | None = None

    def __str__(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"

    def resolved(self, base: str | os.PathLike | None = None) -> DataSpec:
        """The same source with an absolute path (relative paths taken from ``base``, default the working dir)."""
        if self.path is None:
            return self
        path = self.path if self.path.is_absolute() else Path(base or Path.cwd()) / self.path
        return replace(self, path=Path(os.path.abspath(path)))


@dataclass(frozen=True)
class Dataset:
    """Images ``(N, C, H, W)`` float32 in [0, 1], int64 labels, and the class names (``None``: the source has none)."""

    x: np.ndarray
    y: np.ndarray
    class_names: list[str] | None

    @property
    def nb_classes(self) -> int:
        return len(self.class_names) if self.class_names is not None else int(self.y.max(initial=-1)) + 1

    def names(self) -> list[str]:
        """Class names, ``"0"``, ``"1"``, ... where the source has none."""
        return list(self.class_names) if self.class_names is not None else [str(i) for i in range(self.nb_classes)]


def parse_data_spec(text: str) -> DataSpec:
    """Parse ``KIND[:PATH]`` (see the module docstring); ``ValueError`` for an unknown kind or a missing path."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"expected KIND[:PATH] with KIND one of {DATA_KINDS}, got {text!r}")
    kind, _, path = text.strip().partition(":")
    kind = kind.lower()
    if kind not in DATA_KINDS:
        raise ValueError(f"unknown data source {kind!r}; expected one of {', '.join(DATA_KINDS)} (as KIND:PATH)")
    if kind in _NEEDS_PATH and not path:
        raise ValueError(f"{kind} needs a path: {kind}:/path/to/{'data.npz' if kind == 'npz' else 'folder'}")
    if kind == "digits" and path:
        raise ValueError("digits is embedded in scikit-learn and takes no path")
    return DataSpec(kind, Path(path).expanduser() if path else None)


def has_splits(spec: DataSpec) -> bool:
    """Whether the source has its own train and test splits (else the path is the split itself)."""
    if spec.kind == "folder":
        return spec.path is not None and (spec.path / "train").is_dir() and (spec.path / "test").is_dir()
    if spec.kind == "npz":
        from art_certssbd.datasets.npz import npz_splits

        return bool(npz_splits(spec.path))
    return True


def load_split(
    spec: DataSpec, split: str, image_size: tuple[int, int] = (32, 32), channels: int | None = None
) -> Dataset:
    """Load ``split`` (``"train"`` or ``"test"``) of a source.

    :param spec: The source.
    :param split: ``"train"`` or ``"test"``.
    :param image_size: ``(height, width)`` images of a ``folder`` source are resized to.
    :param channels: Channels of a ``folder`` source's images: ``1``, ``3`` or ``None`` (grey when every image is
           single-channel, else RGB; see :func:`~art_certssbd.datasets.load_image_folder`). Other sources keep
           their own and refuse a different number.
    :raises FileNotFoundError: Missing files or directories (the message names them).
    :raises ValueError: Unreadable or malformed files.
    """
    from art_certssbd.datasets import folder
    from art_certssbd.datasets._common import check_channels, check_split

    check_split(split)
    if spec.kind == "folder":
        root = spec.path / split if has_splits(spec) else spec.path
        x, y, names = folder.load_image_folder(root, size=image_size, channels=channels)
        return Dataset(x, y, names)
    channels = check_channels(channels)
    data = _load_fixed(spec, split)
    if channels is not None and data.x.shape[1] != channels:
        raise ValueError(
            f"channels={channels} asked for, but {spec.kind} images have {data.x.shape[1]} channel(s); only folder "
            "sources are converted"
        )
    return data


def _load_fixed(spec: DataSpec, split: str) -> Dataset:
    """A source whose images have a fixed number of channels (every kind but ``folder``)."""
    from art_certssbd.datasets import cifar, digits, idx, npz

    if spec.kind == "digits":
        x_train, y_train, x_test, y_test = digits.load_digits(random_state=0)
        x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
        return Dataset(x, y, list(idx.MNIST_CLASSES))
    if spec.kind in ("mnist", "fashion-mnist"):
        if spec.kind == "mnist":
            return Dataset(*idx.load_mnist(spec.path, split), list(idx.MNIST_CLASSES))
        return Dataset(*idx.load_fashion_mnist(spec.path, split), list(idx.FASHION_MNIST_CLASSES))
    if spec.kind == "cifar10":
        x, y = cifar.load_cifar10(spec.path, split)
        meta = cifar.batch_dir(spec.path) / "batches.meta"
        names = cifar.cifar10_class_names(spec.path) if meta.is_file() else list(cifar.CIFAR10_CLASSES)
        return Dataset(x, y, names)
    x, y, names = npz.load_npz(spec.path, split)
    return Dataset(x, y, names)


def class_indices(classes: Sequence[str | int], class_names: Sequence[str]) -> list[int]:
    """Resolve class names or indices (as given on a command line: ``"cat"``, ``"3"``, ``3``) to label indices.

    A name is looked up first, so a folder named ``"3"`` wins over index 3. ``ValueError`` lists the available
    classes for an unknown one, and refuses duplicates and fewer than two classes.
    """
    if isinstance(classes, str) or not isinstance(classes, Sequence) or len(classes) < 2:
        raise ValueError(f"expected at least two classes, got {classes!r}")
    names = [str(name) for name in class_names]
    out = []
    for item in classes:
        text = str(item).strip()
        if text in names:
            out.append(names.index(text))
        elif text.isdigit() and int(text) < len(names):
            out.append(int(text))
        else:
            raise ValueError(f"unknown class {text!r}; available classes: {', '.join(names)}")
    if len(set(out)) != len(out):
        raise ValueError(f"classes must be distinct, got {[str(c) for c in classes]}")
    return out


def select_classes(data: Dataset, classes: Sequence[str | int] | None) -> tuple[Dataset, np.ndarray]:
    """Keep ``classes`` (names or indices) and relabel them 0, 1, ... in the order given, keeping file order.

    :return: ``(dataset, indices)``: the subset (class names in the new label order) and the positions of its samples
        in ``data``. With ``classes=None``, ``data`` itself and every position.
    """
    if classes is None:
        return data, np.arange(len(data.y))
    from art_certssbd.datasets.tasks import binary_task

    names = data.names()
    chosen = class_indices(classes, names)
    empty = [names[i] for i in chosen if not np.any(data.y == i)]
    if empty:
        raise ValueError(f"class {empty[0]!r} has no sample in this split")
    x, y, keep = binary_task(data.x, data.y, chosen, return_indices=True)
    return Dataset(x, y, [names[i] for i in chosen]), keep
