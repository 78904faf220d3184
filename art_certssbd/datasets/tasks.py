"""Binary (or k-class) sub-tasks of a labelled dataset, and the paper's presets.

The official Cert-SSB code (``dataloader.py`` / ``utils.BinaryDataset``) keeps two classes, maps its ``POS_LABEL``
to 1 and ``NEG_LABEL`` to 0, keeps the file order, and uses label 0 as the backdoor target (``TGT_CLASS = 0``):

* MNIST: ``POS_LABEL, NEG_LABEL = 1, 0``: digit 1 -> 1, digit 0 -> 0 (2,115 test images).
* CIFAR-10: ``POS_LABEL, NEG_LABEL = 0, 2``: airplane -> 1, bird -> 0 (2,000 test images).

In :func:`binary_task` the position in ``classes`` is the new label, so those are ``(0, 1)`` and ``(2, 0)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BinaryTask:
    """A preset sub-task.

    :param dataset: ``"mnist"`` or ``"cifar10"``.
    :param classes: Original class indices; position = new label.
    :param label_names: Names of the new labels 0, 1, ...
    :param target_label: The backdoor target, in new labels (the official code's ``TGT_CLASS``).
    """

    dataset: str
    classes: tuple[int, ...]
    label_names: tuple[str, ...]
    target_label: int = 0


PAPER_TASKS = {
    "mnist-1v0": BinaryTask(dataset="mnist", classes=(0, 1), label_names=("0", "1")),
    "cifar10-airplane-v-bird": BinaryTask(dataset="cifar10", classes=(2, 0), label_names=("bird", "airplane")),
}


def _class_index(cls: object, class_names: Sequence[str] | None, present: np.ndarray) -> int:
    if isinstance(cls, str):
        if class_names is None:
            raise ValueError(f"class {cls!r} is a name, but no class_names were given to map names to indices")
        if cls not in class_names:
            raise ValueError(f"unknown class {cls!r}; available classes: {list(class_names)}")
        return list(class_names).index(cls)
    if isinstance(cls, bool) or not isinstance(cls, int | np.integer) or cls < 0:
        raise ValueError(f"classes must hold non-negative int indices or names, got {cls!r}")
    if class_names is not None and cls >= len(class_names):
        raise ValueError(f"unknown class index {cls}; available: 0..{len(class_names) - 1} ({list(class_names)})")
    if class_names is None and cls not in present:
        raise ValueError(f"unknown class {cls}: no sample has that label; labels present: {present.tolist()}")
    return int(cls)


def binary_task(
    x: np.ndarray,
    y: np.ndarray,
    classes: Sequence[int | str],
    class_names: Sequence[str] | None = None,
    return_indices: bool = False,
) -> tuple[np.ndarray, ...]:
    """Keep the samples of ``classes`` and relabel them 0..len(classes)-1 in the order given, keeping file order.

    :param x: Samples, first axis N.
    :param y: Integer labels ``(N,)`` (one-hot labels are not accepted).
    :param classes: Two or more distinct class indices, or names looked up in ``class_names``; ``classes[i]``
        becomes label ``i``.
    :param class_names: Names of the original labels 0, 1, ... (needed for names; bounds-checks indices).
    :param return_indices: Also return the positions of the kept samples in ``x``.
    :return: ``(x_task, y_task)``, or ``(x_task, y_task, indices)``; ``y_task`` is int64.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must be a 1-d array of integer labels, got {y.dtype} {y.shape}")
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)} labels")
    if isinstance(classes, str) or not isinstance(classes, Sequence) or len(classes) < 2:
        raise ValueError(f"classes must be a sequence of at least two classes, got {classes!r}")
    present = np.unique(y)
    indices = [_class_index(cls, class_names, present) for cls in classes]
    if len(set(indices)) != len(indices):
        raise ValueError(f"classes must be distinct, got {list(classes)!r}")
    new_labels = np.full(len(y), -1, dtype=np.int64)
    for label, index in enumerate(indices):
        new_labels[y == index] = label
    keep = np.flatnonzero(new_labels >= 0)
    out = (x[keep], new_labels[keep])
    return (*out, keep) if return_indices else out


def load_task(
    name: str, split: str = "train", root: str | os.PathLike | None = None, return_indices: bool = False
) -> tuple[np.ndarray, ...]:
    """Load a :data:`PAPER_TASKS` preset from local files.

    :param name: A key of :data:`PAPER_TASKS` (``"mnist-1v0"``, ``"cifar10-airplane-v-bird"``).
    :param split: ``"train"`` or ``"test"``.
    :param root: Data directory (MNIST: default :func:`~art_certssbd.datasets.mnist_dir`; CIFAR-10: required).
    :param return_indices: Also return the positions of the kept samples in the full split.
    :return: As :func:`binary_task`.
    """
    from art_certssbd.datasets._common import check_split
    from art_certssbd.datasets.cifar import load_cifar10
    from art_certssbd.datasets.idx import load_mnist

    if name not in PAPER_TASKS:
        raise ValueError(f"unknown task {name!r}; available tasks: {sorted(PAPER_TASKS)}")
    check_split(split)
    task = PAPER_TASKS[name]
    if task.dataset == "cifar10":
        if root is None:
            raise ValueError(f"task {name!r} needs root, the cifar-10-batches-py directory")
        x, y = load_cifar10(root, split)
    else:
        x, y = load_mnist(root, split)
    return binary_task(x, y, task.classes, return_indices=return_indices)
