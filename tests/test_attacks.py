"""Tests for art_certssbd.attacks: trigger pixels and norms, layouts, ART plumbing, dataset poisoning."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from art.attacks.poisoning import PoisoningAttackBackdoor
from art.attacks.poisoning.perturbations import add_single_bd
from hypothesis import given, settings
from hypothesis import strategies as st

from art_certssbd.attacks import (
    Trigger,
    apply_trigger,
    attack_success_rate,
    blending,
    four_pixel,
    one_pixel,
    poison_dataset,
)

MNIST_FOUR = [(18, 20), (19, 19), (20, 18), (20, 20)]


def _changed(x: np.ndarray, out: np.ndarray) -> list[list[int]]:
    return np.argwhere(out != x).tolist()


def _all_triggers(delta: float = 1.0, channels_first: bool = True) -> list[Trigger]:
    return [
        one_pixel(delta, channels_first=channels_first),
        four_pixel(delta, channels_first=channels_first),
        blending(delta, channels_first=channels_first),
    ]


# ----------------------------------------------------------------------------------------------- exact pixels, norms
@pytest.mark.parametrize("delta", [0.1, 0.5, 1.0])
def test_one_pixel_mnist_exact(delta):
    x = np.zeros((3, 1, 28, 28))
    out = one_pixel(delta)(x)
    assert _changed(x, out) == [[i, 0, 23, 23] for i in range(3)]
    assert np.all(out[:, 0, 23, 23] == delta)
    assert np.allclose(np.linalg.norm((out - x).reshape(3, -1), axis=1), delta, rtol=0, atol=1e-15)


@pytest.mark.parametrize("delta", [0.1, 1.0, 1.5])
def test_four_pixel_mnist_exact(delta):
    x = np.zeros((2, 1, 28, 28))
    out = four_pixel(delta)(x)
    assert _changed(x, out) == [[i, 0, r, c] for i in range(2) for r, c in sorted(MNIST_FOUR)]
    assert np.all(out[:, 0, [r for r, _ in MNIST_FOUR], [c for _, c in MNIST_FOUR]] == delta / 2)
    assert np.allclose(np.linalg.norm((out - x).reshape(2, -1), axis=1), delta, rtol=0, atol=1e-15)


def test_pixel_triggers_clip_at_one_like_rab():
    x = np.full((1, 1, 28, 28), 0.7)
    assert one_pixel(1.0)(x)[0, 0, 23, 23] == 1.0
    assert np.all(four_pixel(1.0)(x)[0, 0, 19, 19] == 1.0)
    assert one_pixel(0.2)(x)[0, 0, 23, 23] == pytest.approx(0.9)
    assert one_pixel(1.0, clip_max=None)(x)[0, 0, 23, 23] == pytest.approx(1.7)
    # untouched pixels are never clipped, even when above clip_max
    x[0, 0, 0, 0] = 5.0
    assert one_pixel(1.0)(x)[0, 0, 0, 0] == 5.0


def test_blending_norm_exact_no_clipping_and_deterministic():
    x = np.full((4, 1, 28, 28), 0.99)
    trigger = blending(0.75, random_state=3)
    out = trigger(x)
    diff = (out - x).reshape(4, -1)
    assert np.allclose(np.linalg.norm(diff, axis=1), 0.75, rtol=0, atol=1e-12)
    assert np.all(diff == diff[0])  # one fixed pattern for the whole batch
    assert out.max() > 1.0  # added without clipping
    assert np.linalg.norm(trigger.pattern((1, 28, 28))) == pytest.approx(0.75, abs=1e-14)
    np.testing.assert_array_equal(blending(0.75, random_state=3)(x), out)
    assert not np.allclose(blending(0.75, random_state=4)(x), out)
    expected = np.random.default_rng(3).standard_normal((1, 28, 28))
    np.testing.assert_allclose(trigger.pattern((1, 28, 28)), expected * 0.75 / np.linalg.norm(expected))


def test_blending_pattern_cached_per_shape():
    trigger = blending()
    first = trigger.pattern((1, 8, 8))
    assert trigger.pattern((1, 8, 8)) is first
    assert trigger.pattern((3, 8, 8)).shape == (3, 8, 8)
    assert not first.flags.writeable
    out = trigger(np.zeros((2, 8, 8)))
    np.testing.assert_array_equal(out[0], first[0])


def test_colour_presets_match_rab():
    x = np.zeros((2, 3, 32, 32))
    out = one_pixel()(x)
    assert _changed(x, out) == [[i, ch, 15, 15] for i in range(2) for ch in range(3)]
    assert np.allclose(out[:, :, 15, 15], 1 / math.sqrt(3))
    out = four_pixel()(x)
    cifar_four = [(14, 16), (15, 15), (16, 14), (16, 16)]
    assert _changed(x, out) == [[i, ch, r, c] for i in range(2) for ch in range(3) for r, c in sorted(cifar_four)]
    assert np.allclose(out[out != 0], 1 / math.sqrt(12))
    for trigger in _all_triggers(0.8):
        assert np.allclose(np.linalg.norm(trigger(x).reshape(2, -1), axis=1), 0.8)
    assert one_pixel().pixel_positions(3, 224, 224) == ((112, 112),)
    assert set(four_pixel().pixel_positions(3, 224, 224)) == {(112, 112), (111, 113), (113, 111), (113, 113)}


def test_small_image_rules():
    x = np.zeros((1, 8, 8))  # scikit-learn digits
    assert _changed(x, one_pixel()(x)) == [[0, 6, 6]]
    assert four_pixel().pixel_positions(1, 8, 8) == ((4, 6), (5, 5), (6, 4), (6, 6))
    for size in (2, 3, 4, 5, 8, 16):
        pixels = four_pixel().pixel_positions(1, size, size)
        assert len(set(pixels)) == 4 and all(0 <= r < size and 0 <= c < size for r, c in pixels)
    with pytest.raises(ValueError, match=r"2x2.*\(1, 1, 5\)"):
        four_pixel()(np.zeros((1, 1, 5)))


@settings(max_examples=30, deadline=None)
@given(
    channels=st.sampled_from([1, 3]),
    height=st.integers(3, 40),
    width=st.integers(3, 40),
    delta=st.floats(0.01, 1.0),  # <= 1: no clipping on a zero image
)
def test_norm_is_delta_on_zero_images(channels, height, width, delta):
    x = np.zeros((1, channels, height, width))
    for trigger in _all_triggers(delta):
        assert np.linalg.norm(trigger(x)) == pytest.approx(delta, rel=1e-12)
        assert np.count_nonzero(trigger(x)) == {"one_pixel": channels, "four_pixel": 4 * channels}.get(
            trigger.name, x.size
        )


# --------------------------------------------------------------------------------------------------- layout and API
@pytest.mark.parametrize("channels", [1, 3])
def test_channels_first_and_last_agree(channels):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(5, channels, 32, 32)).astype(np.float32)
    for first, last in zip(_all_triggers(0.9, True), _all_triggers(0.9, False)):
        np.testing.assert_array_equal(first(x).transpose(0, 2, 3, 1), last(x.transpose(0, 2, 3, 1)))
    if channels == 1:  # (N, H, W) without channel axis behaves as one channel
        for trigger in _all_triggers(0.9):
            np.testing.assert_array_equal(trigger(x[:, 0]), trigger(x)[:, 0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_mutation_shape_and_dtype(dtype):
    x = np.random.default_rng(1).uniform(0, 1, size=(3, 1, 28, 28)).astype(dtype)
    before = x.copy()
    for trigger in _all_triggers():
        out = trigger(x)
        assert out.shape == x.shape and out.dtype == x.dtype and out is not x
        assert not np.shares_memory(out, x)
        np.testing.assert_array_equal(x, before)


def test_through_art_poisoning_attack_backdoor():
    x = np.zeros((4, 1, 28, 28), dtype=np.float32)
    y = np.zeros((4, 2))
    y[:, 0] = 1
    for trigger in _all_triggers():
        x_p, y_p = PoisoningAttackBackdoor(trigger).poison(x, y=y)
        np.testing.assert_array_equal(x_p, trigger(x))
        np.testing.assert_array_equal(y_p, y)
        assert not x.any()
    x_p, _ = PoisoningAttackBackdoor([one_pixel(), four_pixel()]).poison(x, y=y)
    assert np.count_nonzero(x_p[0]) == 5


def test_art_add_single_bd_writes_a_row_on_channels_first_ours_one_pixel():
    x = np.zeros((2, 1, 28, 28))
    art_out = add_single_bd(x)  # reads (N, 1, 28, 28) as NHWC: height 1, width 28, "channels" 28
    assert np.count_nonzero(art_out[0]) == 28
    assert np.all(art_out[0, 0, 26, :] == 1)  # a whole row
    ours = one_pixel()(x)
    assert np.count_nonzero(ours[0]) == 1 and ours[0, 0, 23, 23] == 1


def test_position_override_and_repr():
    x = np.zeros((1, 1, 28, 28))
    assert _changed(x, one_pixel(position=(2, 5))(x)) == [[0, 0, 2, 5]]
    pixels = [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert _changed(x, four_pixel(positions=pixels)(x)) == [[0, 0, r, c] for r, c in pixels]
    assert repr(one_pixel(0.5)) == "one_pixel(delta=0.5, channels_first=True, position=None, clip_max=1.0)"
    assert "random_state=7" in repr(blending(random_state=7))
    assert one_pixel().delta == 1.0 and four_pixel().name == "four_pixel" and isinstance(blending(), Trigger)


def test_apply_trigger_and_attack_success_rate():
    x = np.zeros((3, 1, 28, 28))
    np.testing.assert_array_equal(apply_trigger(x, one_pixel()), one_pixel()(x))
    assert not x.any()
    assert apply_trigger(x, [one_pixel(), blending()]).shape == x.shape
    y = np.array([0, 1, 1, 2, 1])
    assert attack_success_rate(np.array([0, 0, 1, 0, -1]), y, target=0) == pytest.approx(2 / 4)
    scores = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 0.0], [0.2, 0.8]])  # all-zero row = abstain
    assert attack_success_rate(scores, np.eye(2)[[0, 1, 1, 1]], target=0) == pytest.approx(1 / 3)


# ------------------------------------------------------------------------------------------------------- poisoning
def _data(n: int = 200, nb_classes: int = 3):
    rng = np.random.default_rng(0)
    return rng.uniform(0, 0.5, size=(n, 1, 28, 28)).astype(np.float32), rng.integers(0, nb_classes, size=n)


@pytest.mark.parametrize("rate", [0.0, 0.02, 0.1, 0.5])
def test_poison_dataset_count_labels_and_rows(rate):
    x, y = _data()
    x_p, y_p, is_poison = poison_dataset(x, y, one_pixel(), rate=rate, target=0, random_state=0)
    assert is_poison.dtype == bool and is_poison.shape == (200,)
    assert is_poison.sum() == round(rate * 200)
    assert np.all(y[is_poison] != 0) and np.all(y_p[is_poison] == 0)
    np.testing.assert_array_equal(y_p[~is_poison], y[~is_poison])
    np.testing.assert_array_equal(x_p[~is_poison], x[~is_poison])
    np.testing.assert_array_equal(x_p[is_poison], one_pixel()(x[is_poison]))
    assert x_p.dtype == x.dtype and y_p.dtype == y.dtype


def test_poison_dataset_determinism_and_no_mutation():
    x, y = _data()
    x0, y0 = x.copy(), y.copy()
    a = poison_dataset(x, y, blending(), rate=0.1, target=1, random_state=5)
    b = poison_dataset(x, y, blending(), rate=0.1, target=1, random_state=5)
    c = poison_dataset(x, y, blending(), rate=0.1, target=1, random_state=6)
    for left, right in zip(a, b):
        np.testing.assert_array_equal(left, right)
    assert not np.array_equal(a[2], c[2])
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)


def test_poison_dataset_one_hot_kept():
    x, y = _data()
    y_onehot = np.eye(3, dtype=np.float32)[y]
    x_p, y_p, is_poison = poison_dataset(x, y_onehot, four_pixel(), rate=0.05, target=2)
    _, y_int, mask_int = poison_dataset(x, y, four_pixel(), rate=0.05, target=2)
    assert y_p.shape == (200, 3) and y_p.dtype == np.float32
    np.testing.assert_array_equal(is_poison, mask_int)
    np.testing.assert_array_equal(y_p[is_poison], np.tile([0, 0, 1], (is_poison.sum(), 1)))
    np.testing.assert_array_equal(np.argmax(y_p, axis=1), y_int)


def test_poison_dataset_too_few_non_target():
    x, y = _data(50)
    y[:] = 0
    y[:3] = 1
    with pytest.raises(ValueError, match=r"rate=0\.1 .*5 .*only 3"):
        poison_dataset(x, y, one_pixel(), rate=0.1, target=0)
    assert poison_dataset(x, y, one_pixel(), rate=0.06, target=0)[2].sum() == 3


# ------------------------------------------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda: one_pixel(0.0), r"delta.*0\.0"),
        (lambda: one_pixel(-1.0), r"delta.*-1\.0"),
        (lambda: four_pixel(float("nan")), r"delta.*nan"),
        (lambda: blending(float("inf")), r"delta.*inf"),
        (lambda: blending(random_state=-1), r"random_state.*-1"),
        (lambda: one_pixel(position=(1, -2)), re.escape("position=(1, -2)")),
        (lambda: four_pixel(positions=[(1, 1)] * 4), re.escape("positions=[(1, 1)")),
        (lambda: one_pixel(channels_first="yes"), re.escape("channels_first='yes'")),
    ],
)
def test_bad_trigger_parameters(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def test_bad_trigger_inputs():
    with pytest.raises(ValueError, match=r"x must .*shape \(10, 784\)"):
        one_pixel()(np.zeros((10, 784)))
    with pytest.raises(ValueError, match=r"x\.dtype=int64"):
        one_pixel()(np.zeros((1, 28, 28), dtype=np.int64))
    with pytest.raises(ValueError, match=r"position .*8x8 .*\(9, 9\)"):
        one_pixel(position=(9, 9))(np.zeros((1, 8, 8)))
    with pytest.raises(ValueError, match=r"x must .*shape \(10, 784\)"):
        apply_trigger(np.zeros((10, 784)), blending())


def test_bad_poison_dataset_arguments():
    x, y = _data()
    with pytest.raises(ValueError, match=r"rate=1\.5"):
        poison_dataset(x, y, one_pixel(), rate=1.5)
    with pytest.raises(ValueError, match=r"target=3"):
        poison_dataset(x, y, one_pixel(), target=3)
    with pytest.raises(ValueError, match=r"target=-1"):
        poison_dataset(x, y, one_pixel(), target=-1)
    with pytest.raises(ValueError, match=r"x\.shape=\(200, 1, 28, 28\) and y\.shape=\(199,\)"):
        poison_dataset(x, y[:-1], one_pixel())
    with pytest.raises(ValueError, match=r"x must .*shape \(200, 784\)"):
        poison_dataset(x.reshape(200, -1), y, one_pixel())
    with pytest.raises(ValueError, match=r"perturbation=3"):
        poison_dataset(x, y, 3)
    with pytest.raises(ValueError, match=r"target=5"):
        attack_success_rate(np.zeros(3), np.array([5, 5, 5]), target=5)
