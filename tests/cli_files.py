"""Small synthetic data sets in the real on-disk formats, for the command-line tests (not a test module).

Each writer takes uint8 images ``(N, H, W)`` or ``(N, 3, H, W)`` and int labels and writes them the way the real
data sets are distributed: IDX files (MNIST / Fashion-MNIST, plain or gzip), CIFAR-10 python batches (protocol-2
pickles with bytes keys), a class-per-folder tree of PNG files, NumPy ``.npz`` archives.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

from art_certssbd.datasets import load_digits


def digits_uint8(classes=(0, 1), train: int = 60, test: int = 20):
    """scikit-learn digits of ``classes`` as uint8 ``(N, 8, 8)`` images and int labels (original digit labels)."""
    x_train, y_train, x_test, y_test = load_digits(random_state=0)
    out = []
    for x, y, n in ((x_train, y_train, train), (x_test, y_test, test)):
        keep = np.flatnonzero(np.isin(y, classes))[:n]
        out += [np.round(x[keep, 0] * 255).astype(np.uint8), y[keep].astype(np.uint8)]
    return tuple(out)


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    """One IDX file (unsigned bytes): magic 0x00000803 / 0x00000801, big-endian dimensions, then the data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def write_mnist(root: Path, x_train, y_train, x_test, y_test, compress: bool = False) -> Path:
    """The four MNIST files (``train-images-idx3-ubyte`` ...; with ``.gz`` when ``compress``)."""
    gz = ".gz" if compress else ""
    for prefix, x, y in (("train", x_train, y_train), ("t10k", x_test, y_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte{gz}", x, compress)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{gz}", y, compress)
    return root


def _cifar_rows(x: np.ndarray) -> np.ndarray:
    """Grey 8x8 digits -> CIFAR rows: 32x32 RGB, R plane then G then B, each row-major (3072 bytes)."""
    big = np.kron(x, np.ones((4, 4), dtype=np.uint8)) if x.shape[-1] == 8 else x
    rgb = np.stack([big, big, big], axis=1) if big.ndim == 3 else big
    return rgb.reshape(len(rgb), 3072)


def write_cifar10(root: Path, x_train, y_train, x_test, y_test, names=None) -> Path:
    """``cifar-10-batches-py/``: five training batches, ``test_batch`` and (optionally) ``batches.meta``."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rows, labels = _cifar_rows(x_train), [int(v) for v in y_train]
    for i, part in enumerate(np.array_split(np.arange(len(rows)), 5), start=1):
        batch = {b"batch_label": b"training batch", b"labels": [labels[j] for j in part], b"data": rows[part]}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
    test = {b"batch_label": b"testing batch", b"labels": [int(v) for v in y_test], b"data": _cifar_rows(x_test)}
    (folder / "test_batch").write_bytes(pickle.dumps(test, protocol=2))
    if names is not None:
        meta = {b"label_names": [n.encode() for n in names], b"num_vis": 3072}
        (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root


def write_folder(root: Path, x, y, names: dict[int, str]) -> Path:
    """PNG files in ``root/<class name>/``."""
    from PIL import Image

    for i, (image, label) in enumerate(zip(x, y)):
        folder = root / names[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="L").save(folder / f"{i:04d}.png")
    return root
