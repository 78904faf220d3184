"""Data sources as the command line names them (``KIND[:PATH]``), on small files in the real on-disk formats."""

from __future__ import annotations

import numpy as np
import pytest
from cli_files import digits_uint8, write_cifar10, write_folder, write_mnist

from art_certssbd.datasets import DataSpec, load_npz, load_split, parse_data_spec, select_classes
from art_certssbd.datasets.spec import class_indices, has_splits


@pytest.fixture(scope="module")
def digits():
    return digits_uint8(classes=(0, 1, 2), train=45, test=15)


@pytest.mark.parametrize(
    "text, kind, has_path",
    [("digits", "digits", False), ("mnist", "mnist", False), ("mnist:/d", "mnist", True), ("NPZ:/f.npz", "npz", True)],
)
def test_parse_data_spec(text, kind, has_path):
    spec = parse_data_spec(text)
    assert spec.kind == kind and (spec.path is not None) == has_path


@pytest.mark.parametrize(
    "text, needle",
    [
        ("imagenet:/x", "unknown data source 'imagenet'"),
        ("npz", "npz needs a path"),
        ("cifar10:", "cifar10 needs a path"),
        ("digits:/x", "takes no path"),
        ("", "expected KIND[:PATH]"),
    ],
)
def test_parse_data_spec_refuses(text, needle):
    with pytest.raises(ValueError, match=None) as info:
        parse_data_spec(text)
    assert needle in str(info.value)


def test_relative_paths_resolve_against_a_base(tmp_path):
    assert DataSpec("npz", tmp_path / "a.npz").resolved().path == tmp_path / "a.npz"
    assert parse_data_spec("npz:data/a.npz").resolved(tmp_path).path == tmp_path / "data" / "a.npz"


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("kind", ["mnist", "fashion-mnist"])
def test_idx_sources(tmp_path, digits, kind, compress):
    x_tr, y_tr, x_te, y_te = digits
    write_mnist(tmp_path, *digits, compress=compress)
    spec = parse_data_spec(f"{kind}:{tmp_path}")
    train, test = load_split(spec, "train"), load_split(spec, "test")
    assert train.x.shape == (45, 1, 8, 8) and train.x.dtype == np.float32
    np.testing.assert_array_equal(np.round(train.x[:, 0] * 255), x_tr)
    np.testing.assert_array_equal(test.y, y_te)
    assert len(train.class_names) == 10 and has_splits(spec)
    if kind == "fashion-mnist":
        assert train.class_names[0] == "T-shirt/top"


def test_cifar10_source_with_and_without_meta(tmp_path, digits):
    write_cifar10(tmp_path / "a", *digits)
    data = load_split(parse_data_spec(f"cifar10:{tmp_path / 'a'}"), "train")
    assert data.x.shape == (45, 3, 32, 32) and data.class_names[0] == "airplane"
    np.testing.assert_array_equal(data.y, digits[1])
    write_cifar10(tmp_path / "b", *digits, names=[f"c{i}" for i in range(10)])
    test = load_split(parse_data_spec(f"cifar10:{tmp_path / 'b' / 'cifar-10-batches-py'}"), "test")
    assert test.class_names[:3] == ["c0", "c1", "c2"] and len(test.y) == 15
    subset, _ = select_classes(test, ["c2", "c0"])
    np.testing.assert_array_equal(subset.y, np.where(digits[3] == 2, 0, 1)[digits[3] != 1])


def test_folder_source_with_and_without_splits(tmp_path, digits):
    x_tr, y_tr, x_te, y_te = digits
    names = {0: "zero", 1: "one", 2: "two"}
    write_folder(tmp_path / "split" / "train", x_tr, y_tr, names)
    write_folder(tmp_path / "split" / "test", x_te, y_te, names)
    spec = parse_data_spec(f"folder:{tmp_path / 'split'}")
    assert has_splits(spec)
    train = load_split(spec, "train", image_size=(8, 8))
    assert train.x.shape == (45, 1, 8, 8) and train.class_names == ["one", "two", "zero"]  # grey PNGs; sorted names
    assert load_split(spec, "train", image_size=(8, 8), channels=3).x.shape == (45, 3, 8, 8)
    assert len(load_split(spec, "test", image_size=(8, 8)).y) == 15
    write_folder(tmp_path / "flat", x_te, y_te, names)
    flat = parse_data_spec(f"folder:{tmp_path / 'flat'}")
    assert not has_splits(flat)
    assert load_split(flat, "test", image_size=(16, 16)).x.shape == (15, 1, 16, 16)


def test_other_sources_keep_their_channels_and_refuse_another_count():
    spec = parse_data_spec("digits")
    assert load_split(spec, "test", channels=1).x.shape[1] == 1
    with pytest.raises(ValueError, match=r"channels=3 asked for, but digits images have 1 channel\(s\)"):
        load_split(spec, "test", channels=3)
    with pytest.raises(ValueError, match="channels must be 1 .*got 2"):
        load_split(spec, "test", channels=2)


def test_npz_layouts(tmp_path, digits):
    x_tr, y_tr, x_te, y_te = digits
    np.savez(tmp_path / "both.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    spec = parse_data_spec(f"npz:{tmp_path / 'both.npz'}")
    assert has_splits(spec) and len(load_split(spec, "test").y) == 15
    # one split, channels last, float in [0, 1], one-hot labels, class names
    onehot = np.eye(3, dtype=np.float32)[y_tr]
    names = np.array(["zero", "one", "two"])
    np.savez(tmp_path / "one.npz", x=(x_tr[..., None] / 255.0).astype(np.float32), y=onehot, class_names=names)
    x, y, class_names = load_npz(tmp_path / "one.npz", "train")
    assert x.shape == (45, 1, 8, 8) and class_names == ["zero", "one", "two"]
    np.testing.assert_array_equal(y, y_tr)
    assert not has_splits(parse_data_spec(f"npz:{tmp_path / 'one.npz'}"))


@pytest.mark.parametrize(
    "arrays, needle",
    [
        ({"x": np.zeros((4, 8, 8), np.uint8)}, "no array 'y'"),
        ({"x": np.zeros((4, 8, 8), np.float32) + 2, "y": np.zeros(4, int)}, "in [0, 1]"),
        ({"x": np.zeros((4, 8, 8), np.int32), "y": np.zeros(4, int)}, "uint8"),
        ({"x": np.zeros((4, 5, 8, 8), np.uint8), "y": np.zeros(4, int)}, "C in 1 or 3"),
        ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.zeros(3, int)}, "4 images but 'y' has 3 labels"),
        ({"x": np.zeros((4, 8, 8), np.uint8), "y": -np.ones(4, int)}, "labels must be >= 0"),
        ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.zeros(4, np.float32)}, "1-d integers"),
    ],
)
def test_npz_refuses_bad_arrays(tmp_path, arrays, needle):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError) as info:
        load_npz(tmp_path / "bad.npz")
    assert needle in str(info.value) and "bad.npz" in str(info.value)


def test_npz_refuses_missing_and_non_archives(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_npz(tmp_path / "missing.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(ValueError, match=r"is not an .npz archive \(the zip file np.savez writes\): it starts") as info:
        load_npz(tmp_path / "text.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ValueError, match="but a single .npy array: save x and y with np.savez") as npy:
        load_npz(tmp_path / "one.npy")
    (tmp_path / "cut.npz").write_bytes((tmp_path / "one.npy").read_bytes()[:0] + b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="or a damaged one") as cut:
        load_npz(tmp_path / "cut.npz")
    np.savez(tmp_path / "objects.npz", x=np.zeros((2, 8, 8), np.uint8), y=np.array([0, "a"], dtype=object))
    with pytest.raises(ValueError, match="holds object arrays") as objects:
        load_npz(tmp_path / "objects.npz")
    for err in (info, npy, cut, objects):  # never numpy's advice to load unsafely
        assert "allow_pickle" not in str(err.value) and "pickle.load" not in str(err.value)
    np.savez(tmp_path / "objects.npz", x=np.array([object()] * 2), y=np.zeros(2, int))
    with pytest.raises(ValueError, match="objects.npz"):
        load_npz(tmp_path / "objects.npz")


def test_class_selection_by_name_or_index():
    names = ["airplane", "automobile", "bird"]
    assert class_indices(["bird", "0"], names) == [2, 0]
    assert class_indices([2, 1], names) == [2, 1]
    with pytest.raises(ValueError, match="unknown class 'cat'; available classes: airplane, automobile, bird"):
        class_indices(["cat", "bird"], names)
    with pytest.raises(ValueError, match="unknown class '3'"):
        class_indices(["3", "1"], names)
    with pytest.raises(ValueError, match="distinct"):
        class_indices(["bird", "2"], names)
    with pytest.raises(ValueError, match="at least two"):
        class_indices(["bird"], names)


def test_select_classes_relabels_in_the_given_order(digits):
    from art_certssbd.datasets.spec import Dataset

    data = Dataset(digits[0][:, None] / 255.0, digits[1].astype(np.int64), [str(i) for i in range(10)])
    subset, positions = select_classes(data, ["1", "0"])
    assert subset.class_names == ["1", "0"]
    np.testing.assert_array_equal(subset.y, np.where(data.y[positions] == 1, 0, 1))
    with pytest.raises(ValueError, match="class '7' has no sample"):
        select_classes(data, ["0", "7"])
