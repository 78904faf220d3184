"""IDX files (MNIST, Fashion-MNIST, EMNIST, ...): a header-checking reader and the MNIST-style loaders.

The IDX format (http://yann.lecun.com/exdb/mnist/): two zero bytes, one type byte, one byte with the number of
dimensions ``d``, then ``d`` big-endian uint32 sizes, then the data, big-endian, row-major. ``0x00000803`` is a
3-d unsigned-byte file (images), ``0x00000801`` a 1-d one (labels). Files may be gzip-compressed (detected from
the content, not the name).
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from art_certssbd.datasets._common import check_split, existing_dir, to_float01
from art_certssbd.datasets.paths import fashion_mnist_dir, mnist_dir

logger = logging.getLogger(__name__)

#: IDX type byte -> big-endian numpy dtype.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

MNIST_CLASSES = tuple(str(digit) for digit in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_GZIP_MAGIC = b"\x1f\x8b"
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file, plain or gzip-compressed, into a native-endian numpy array of its own type and shape.

    :param path: The IDX file (for example ``train-images-idx3-ubyte`` or ``t10k-labels-idx1-ubyte.gz``).
    :return: Array of shape given by the header, dtype given by the type byte (``uint8`` for MNIST).
    :raises FileNotFoundError: If ``path`` does not exist.
    :raises ValueError: If the file is not IDX (bad magic, unknown type byte), is truncated or has trailing bytes,
        naming the file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {str(path)!r} does not exist")
    with open(path, "rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
    if compressed:
        try:
            with gzip.open(path, "rb") as handle:
                return _parse_idx(handle, path)
        except (gzip.BadGzipFile, EOFError, zlib.error) as err:  # corrupt or truncated gzip stream
            raise ValueError(f"{str(path)!r}: corrupt or truncated gzip IDX file ({err})") from err
    with open(path, "rb") as handle:
        return _parse_idx(handle, path)


def _read_at_most(handle, size: int, chunk: int = 1 << 24) -> bytes:
    """Read up to ``size`` bytes in chunks, so that a header claiming a huge size allocates nothing up front."""
    parts, remaining = [], size
    while remaining > 0:
        part = handle.read(min(remaining, chunk))
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def _parse_idx(handle, path: Path) -> np.ndarray:
    header = handle.read(4)
    if len(header) < 4 or header[0] != 0 or header[1] != 0:
        raise ValueError(
            f"{str(path)!r} is not an IDX file: magic number {header.hex() or '(empty)'} does not start with 0000"
        )
    type_code, ndim = header[2], header[3]
    if type_code not in IDX_DTYPES:
        known = ", ".join(f"0x{code:02X}" for code in IDX_DTYPES)
        raise ValueError(f"{str(path)!r}: unknown IDX data type 0x{type_code:02X} (known: {known})")
    if ndim == 0:
        raise ValueError(f"{str(path)!r}: IDX header declares 0 dimensions")
    dims_bytes = handle.read(4 * ndim)
    if len(dims_bytes) != 4 * ndim:
        raise ValueError(f"{str(path)!r}: truncated IDX header ({ndim} dimensions declared)")
    shape = struct.unpack(f">{ndim}I", dims_bytes)
    dtype = IDX_DTYPES[type_code]
    expected = math.prod(shape) * dtype.itemsize
    data = _read_at_most(handle, expected + 1)  # one extra byte detects trailing data
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        shown = f"{len(data)}" if len(data) <= expected else f"more than {expected}"
        raise ValueError(
            f"{str(path)!r}: IDX data {what}: header shape {shape} of {dtype.name} needs {expected} bytes, "
            f"file has {shown}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _idx_candidates(split: str, kind: str) -> list[str]:
    prefix = _SPLIT_PREFIX[split]
    idx = "idx3" if kind == "images" else "idx1"
    return [f"{prefix}-{kind}{sep}{idx}-ubyte{gz}" for sep in ("-", ".") for gz in ("", ".gz")]


def find_idx_pair(root: str | os.PathLike, split: str = "train") -> tuple[Path, Path]:
    """Locate the images and labels IDX files of ``split`` in ``root`` (or ``root/raw``, torchvision's layout).

    Accepted names: ``train-images-idx3-ubyte``, ``train-images.idx3-ubyte`` and either with ``.gz``; likewise
    ``train-labels-idx1-ubyte``; ``t10k-`` for the test split.

    :param root: Directory holding the files.
    :param split: ``"train"`` or ``"test"``.
    :return: ``(images_path, labels_path)``.
    """
    split = check_split(split)
    root = existing_dir(root)
    found = []
    for kind in ("images", "labels"):
        names = _idx_candidates(split, kind)
        hits = [folder / name for folder in (root, root / "raw") for name in names if (folder / name).is_file()]
        if not hits:
            raise FileNotFoundError(
                f"no {split} {kind} IDX file in {str(root)!r} (looked for {', '.join(names)}, also under raw/)"
            )
        found.append(hits[0])
    return found[0], found[1]


def _load_idx_pair(root: str | os.PathLike, split: str, nb_classes: int) -> tuple[np.ndarray, np.ndarray]:
    images_path, labels_path = find_idx_pair(root, split)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"{str(images_path)!r}: expected 3-d unsigned-byte images, got {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(f"{str(labels_path)!r}: expected 1-d unsigned-byte labels, got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(
            f"{str(images_path)!r} has {len(images)} images but {str(labels_path)!r} has {len(labels)} labels"
        )
    if labels.size and int(labels.max()) >= nb_classes:
        raise ValueError(f"{str(labels_path)!r}: label {int(labels.max())} outside 0..{nb_classes - 1}")
    logger.info("Loaded %d %s images %s from %s", len(images), split, images.shape[1:], images_path.parent)
    return to_float01(images[:, None, :, :]), labels.astype(np.int64)


def load_mnist(root: str | os.PathLike | None = None, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST from its IDX files.

    :param root: Directory with ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``
        and ``t10k-labels-idx1-ubyte`` (``.gz`` or ``.idx3-ubyte`` spellings accepted). Default:
        :func:`~art_certssbd.datasets.mnist_dir` (``$ART_CERTSSBD_DATA`` or ``~/.cache/art-certssbd/mnist``), which
        :func:`~art_certssbd.datasets.fetch_mnist_from_npm` fills. Nothing is downloaded here.
    :param split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
    :return: ``(x, y)``: float32 ``(N, 1, 28, 28)`` in [0, 1] and int64 ``(N,)`` digits, in file order.
    """
    check_split(split)
    return _load_idx_pair(mnist_dir() if root is None else root, split, nb_classes=10)


def load_fashion_mnist(root: str | os.PathLike | None = None, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Load Fashion-MNIST (same IDX files and names as MNIST; class names in :data:`FASHION_MNIST_CLASSES`).

    :param root: Directory with the IDX files. Default: :func:`~art_certssbd.datasets.fashion_mnist_dir`, which is
        ``/usr/share/datasets/fashion-mnist`` when Debian's ``dataset-fashion-mnist`` package is installed, else
        ``~/.cache/art-certssbd/fashion-mnist``.
    :param split: ``"train"`` or ``"test"``.
    :return: ``(x, y)``: float32 ``(N, 1, 28, 28)`` in [0, 1] and int64 ``(N,)`` labels, in file order.
    """
    check_split(split)
    return _load_idx_pair(fashion_mnist_dir() if root is None else root, split, nb_classes=10)
