"""CIFAR-10 "python version" batches, read with a restricted unpickler.

The official archive ``cifar-10-python.tar.gz`` extracts to ``cifar-10-batches-py/`` with ``data_batch_1`` ...
``data_batch_5``, ``test_batch`` and ``batches.meta``: Python 2 pickles (protocol 2) of dicts with bytes keys.
``b"data"`` is a uint8 array of shape (10000, 3072) whose rows hold the red 32x32 plane, then green, then blue,
each row-major; ``b"labels"`` is a list of 10,000 ints in 0..9; ``batches.meta`` holds ``b"label_names"``.

.. warning::
    Unpickling data from an untrusted source can execute arbitrary code. These files are therefore read with
    :class:`RestrictedUnpickler`, which builds only plain containers, bytes, numbers and numpy arrays and refuses
    every other global (for example ``os.system``) with :class:`UnsafePickleError`. Still, only load files
    whose origin you trust.
"""

from __future__ import annotations

import codecs
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from art_certssbd.datasets._common import check_split, existing_dir, to_float01

logger = logging.getLogger(__name__)

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch",)
CIFAR10_DIRNAME = "cifar-10-batches-py"

# numpy's array-reconstruction function, whatever module it lives in for this numpy version.
_reconstruct = np.ndarray.__reduce__(np.zeros(0))[0]


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle asked for a global outside the allow-list of :class:`RestrictedUnpickler`."""


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3's protocol-2 pickler uses it for bytes, limited to the latin-1 codec."""
    if codecs.lookup(encoding).name != "iso8859-1" or not isinstance(text, str) or errors != "strict":
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}, errors {errors!r}")
    return text.encode("latin1")


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals a CIFAR batch needs.

    Allowed: numpy's ``_reconstruct`` (``numpy.core.multiarray`` in files written by numpy 1 / Python 2,
    ``numpy._core.multiarray`` by numpy 2), ``numpy.ndarray`` and ``numpy.dtype``, plus ``_codecs.encode``
    restricted to latin-1 (how Python 3 writes bytes in protocol 2; the original Python 2 files do not need it).
    Any other global raises :class:`UnsafePickleError` before it is imported or called.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        """Return the allowed object for ``module.name`` or raise :class:`UnsafePickleError`."""
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"refusing to load global {module}.{name} from a pickle") from None


def load_cifar_batch(path: str | os.PathLike) -> dict:
    """Unpickle one CIFAR batch file with :class:`RestrictedUnpickler` (``encoding="bytes"``: keys stay bytes).

    :param path: A batch file such as ``data_batch_1``, ``test_batch`` or ``batches.meta``.
    :return: The unpickled dict.
    :raises FileNotFoundError: If ``path`` does not exist.
    :raises ValueError: If the file is not a pickled dict or asks for a forbidden global (:class:`UnsafePickleError`),
        naming the file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR batch file {str(path)!r} does not exist")
    try:
        with open(path, "rb") as handle:
            obj = RestrictedUnpickler(handle, encoding="bytes").load()
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{str(path)!r}: {err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise ValueError(f"{str(path)!r} is not a readable CIFAR batch pickle ({type(err).__name__}: {err})") from err
    if not isinstance(obj, dict):
        raise ValueError(f"{str(path)!r}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def batch_dir(root: str | os.PathLike) -> Path:
    """The folder that holds the CIFAR-10 batch files: ``root`` itself, or its ``cifar-10-batches-py`` folder.

    :param root: The ``cifar-10-batches-py`` directory, or the directory that contains it.
    :return: The directory of ``batches.meta`` and the data batches.
    """
    root = existing_dir(root)
    nested = root / CIFAR10_DIRNAME
    return nested if not (root / "batches.meta").is_file() and nested.is_dir() else root


def load_cifar10(root: str | os.PathLike, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Load CIFAR-10 from the python-version batch files.

    :param root: The ``cifar-10-batches-py`` directory, or the directory that contains it.
    :param split: ``"train"`` (``data_batch_1`` ... ``data_batch_5``, 50,000 images) or ``"test"``
        (``test_batch``, 10,000 images).
    :return: ``(x, y)``: float32 ``(N, 3, 32, 32)`` RGB in [0, 1] and int64 ``(N,)`` labels, in file order.
    """
    check_split(split)
    directory = batch_dir(root)
    names = CIFAR10_TRAIN_FILES if split == "train" else CIFAR10_TEST_FILES
    paths = [directory / name for name in names]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 {split} batch file(s) not found: {', '.join(missing)}")
    images, labels = [], []
    for path in paths:
        batch = load_cifar_batch(path)
        data, batch_labels = batch.get(b"data"), batch.get(b"labels")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise ValueError(f"{str(path)!r}: b'data' must be a uint8 array of shape (N, 3072), got {got}")
        batch_labels = np.asarray(batch_labels if batch_labels is not None else [], dtype=np.int64)
        if batch_labels.shape != (len(data),):
            raise ValueError(f"{str(path)!r}: b'labels' has shape {batch_labels.shape}, expected ({len(data)},)")
        if batch_labels.size and (batch_labels.min() < 0 or batch_labels.max() > 9):
            raise ValueError(f"{str(path)!r}: labels outside 0..9")
        images.append(data.reshape(-1, 3, 32, 32))  # R plane, G plane, B plane, each row-major 32x32
        labels.append(batch_labels)
    x = to_float01(np.concatenate(images))
    logger.info("Loaded %d CIFAR-10 %s images from %s", len(x), split, directory)
    return x, np.concatenate(labels)


def cifar10_class_names(root: str | os.PathLike) -> list[str]:
    """Class names from ``batches.meta`` (``b"label_names"``), in label order.

    :param root: The ``cifar-10-batches-py`` directory, or the directory that contains it.
    :return: For the real files, the names in :data:`CIFAR10_CLASSES`.
    """
    path = batch_dir(root) / "batches.meta"
    meta = load_cifar_batch(path)
    names = meta.get(b"label_names")
    if not isinstance(names, list) or not all(isinstance(name, bytes | str) for name in names):
        raise ValueError(f"{str(path)!r}: b'label_names' must be a list of strings")
    return [name.decode("utf-8") if isinstance(name, bytes) else name for name in names]
