"""Tests for the storage-update certification memory against a plain-Python reference of the trim rule."""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from art_certssbd import memory as memory_module
from art_certssbd.memory import CertificationMemory, _trim_bruteforce


class ReferenceMemory:
    """Sequential reference built on ``_trim_bruteforce``: the spec, item by item."""

    def __init__(self):
        self.centers, self.labels, self.radii = [], [], []

    def run(self, x, pred, radius, store):
        out = []
        for xi, ci, ri in zip(np.asarray(x, dtype=float).reshape(len(pred), -1).tolist(), pred, radius):
            c, r = _trim_bruteforce(xi, int(ci), float(ri), self.centers, self.labels, self.radii)
            out.append((c, r))
            if store and c != -1 and r > 0:
                self.centers.append(xi)
                self.labels.append(c)
                self.radii.append(r)
        return [c for c, _ in out], [r for _, r in out]


def assert_same(got, expected):
    assert list(got[0]) == list(expected[0])
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-12, atol=1e-12)


def test_hand_examples():
    mem = CertificationMemory()
    pred, rad = mem.update(np.array([[0.0, 0.0]]), [0], [2.0], sigma=0.25)
    assert list(pred) == [0] and list(rad) == [2.0]
    # Inside a ball of another label: relabelled, radius = R_j - d = 2 - 0.5.
    assert_same(mem.query(np.array([[0.5, 0.0]]), [1], [1.0]), ([0], [1.5]))
    # Overlapping a ball of another label: trimmed to touch, d - R_j = 3 - 2.
    assert_same(mem.query(np.array([[3.0, 0.0]]), [1], [2.0]), ([1], [1.0]))
    # Same label: untouched, even when overlapping or inside.
    assert_same(mem.query(np.array([[3.0, 0.0], [0.1, 0.0]]), [0, 0], [5.0, 4.0]), ([0, 0], [5.0, 4.0]))
    # No overlap: untouched; touching exactly is no overlap.
    assert_same(mem.query(np.array([[5.0, 0.0], [4.0, 0.0]]), [1, 1], [1.0, 2.0]), ([1, 1], [1.0, 2.0]))
    # Exactly on the boundary of another label's ball: not inside, radius 0.
    assert_same(mem.query(np.array([[0.0, 2.0]]), [1], [1.0]), ([1], [0.0]))
    # Abstentions pass through unchanged, even inside a ball.
    assert_same(mem.query(np.array([[0.0, 0.0]]), [-1], [0.0]), ([-1], [0.0]))
    assert len(mem) == 1 and mem.sigmas[0] == 0.25


def test_update_is_sequential_within_a_batch_and_skips_abstain_and_radius_zero():
    mem = CertificationMemory()
    x = np.array([[0.0, 0.0], [3.0, 0.0], [0.5, 0.0], [10.0, 10.0], [0.0, 2.0]])
    pred, rad = mem.update(x, [0, 1, 1, -1, 1], [2.0, 2.0, 1.0, 5.0, 0.5])
    # Item 1 is trimmed by item 0, item 2 lies inside item 0, item 4 touches item 0 (radius 0, not stored).
    assert list(pred) == [0, 1, 0, -1, 1]
    np.testing.assert_allclose(rad, [2.0, 1.0, 1.5, 5.0, 0.0])
    assert len(mem) == 3 and list(mem.labels) == [0, 1, 0]
    np.testing.assert_allclose(mem.radii, [2.0, 1.0, 1.5])
    assert np.isnan(mem.sigmas).all()
    assert mem.check_invariant()


def test_stored_regions_never_grow_and_query_does_not_mutate():
    mem = CertificationMemory()
    mem.update(np.zeros((1, 3)), [1], [1.0])
    before = (mem.centers, mem.labels, mem.radii, mem.sigmas)
    mem.query(np.ones((4, 3)) * 0.1, [0, 1, 2, -1], [3.0, 9.0, 0.0, 1.0])
    for a, b in zip(before, (mem.centers, mem.labels, mem.radii, mem.sigmas)):
        np.testing.assert_array_equal(a, b)
    mem.update(np.array([[0.0, 0.0, 0.5]]), [1], [9.0])  # same label, larger: stored alongside, old ball unchanged
    np.testing.assert_array_equal(mem.radii, [1.0, 9.0])


grid = st.integers(-6, 6).map(lambda v: v / 2)  # dyadic: distances are exact, ties really happen
smooth = st.floats(-3, 3, allow_nan=False, allow_subnormal=False)


@st.composite
def streams(draw, dyadic: bool):
    dim = draw(st.sampled_from([2, 5]))
    item = st.tuples(
        st.lists(grid if dyadic else smooth, min_size=dim, max_size=dim),
        st.sampled_from([-1, 0, 1, 2]),
        st.integers(0, 16).map(lambda v: v / 4) if dyadic else st.floats(0, 4, allow_subnormal=False),
    )
    return draw(st.lists(st.lists(item, min_size=1, max_size=10), min_size=1, max_size=5))


def _run_property(batches, block, chunk):
    mem, ref = CertificationMemory(chunk_size=chunk), ReferenceMemory()
    with mock.patch.object(memory_module, "_BLOCK", block):
        for batch in batches:
            x = np.array([b[0] for b in batch])
            pred = np.array([b[1] for b in batch])
            rad = np.array([b[2] for b in batch])
            # query: against the stored regions only, no state change.
            size = len(mem)
            assert_same(mem.query(x, pred, rad), ref.run(x, pred, rad, store=False))
            assert len(mem) == size
            # update: in order, storing as it goes.
            assert_same(mem.update(x, pred, rad), ref.run(x, pred, rad, store=True))
            assert len(mem) == len(ref.labels)
            assert list(mem.labels) == ref.labels
            assert mem.check_invariant()


@settings(max_examples=60, deadline=None)
@given(streams(dyadic=True), st.sampled_from([1, 3, 256]), st.sampled_from([1, 2, 8192]))
def test_property_grid_streams_match_reference_and_keep_invariant(batches, block, chunk):
    _run_property(batches, block, chunk)


@settings(max_examples=40, deadline=None)
@given(streams(dyadic=False), st.sampled_from([1, 4, 256]), st.sampled_from([3, 8192]))
def test_property_smooth_streams_match_reference_and_keep_invariant(batches, block, chunk):
    _run_property(batches, block, chunk)


def test_far_from_origin_matches_reference_despite_matrix_product_rounding():
    # Centers near 1024: the |a|^2 + |b|^2 - 2ab form loses ~1e-5 in distance, the exact recheck must not.
    rng = np.random.default_rng(0)
    x = 1024.0 + rng.integers(-8, 9, size=(120, 6)) / 4
    pred = rng.integers(0, 3, size=120)
    rad = rng.integers(1, 9, size=120) / 4
    mem, ref = CertificationMemory(chunk_size=16), ReferenceMemory()
    assert_same(mem.update(x, pred, rad), ref.run(x, pred, rad, store=True))
    assert mem.check_invariant()


def test_many_tied_candidates_take_the_exact_fallback():
    mem, ref = CertificationMemory(), ReferenceMemory()
    x = np.zeros((1200, 3))
    pred, rad = np.zeros(1200, dtype=int), np.full(1200, 1.0)
    mem.update(x, pred, rad)
    ref.run(x, pred, rad, store=True)
    q = np.array([[1.5, 0.0, 0.0], [0.25, 0.0, 0.0]])
    assert_same(mem.query(q, [1, 1], [1.0, 1.0]), ref.run(q, [1, 1], [1.0, 1.0], store=False))
    assert_same(mem.query(q, [1, 1], [1.0, 1.0]), ([1, 0], [0.5, 0.75]))


def test_higher_dimensional_random_stream_matches_reference():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 40)).astype(np.float32)  # float32 input, images flattened
    pred = rng.integers(-1, 3, size=300)
    rad = rng.uniform(0, 9, size=300)
    mem, ref = CertificationMemory(chunk_size=64), ReferenceMemory()
    expected = ref.run(x.astype(np.float64), pred, rad, store=True)
    assert_same(mem.update(x.reshape(300, 5, 8), pred, rad), expected)
    assert mem.check_invariant()
    assert not math.isnan(float(mem.radii.sum()))


def test_check_invariant_detects_overlap():
    mem = CertificationMemory()
    mem.update(np.array([[0.0], [3.0]]), [0, 1], [1.0, 1.0])
    assert mem.check_invariant()
    mem._radii[1] = 2.5  # corrupt the state on purpose
    assert not mem.check_invariant()
    assert mem.check_invariant(atol=0.6)


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    mem = CertificationMemory(chunk_size=7)
    mem.update(rng.normal(size=(50, 4)), rng.integers(0, 3, 50), rng.uniform(0, 2, 50), sigma=rng.uniform(0.1, 1, 50))
    path = tmp_path / "memory.npz"
    mem.save(path)
    loaded = CertificationMemory.load(path)
    assert len(loaded) == len(mem)
    for name in ("centers", "labels", "radii", "sigmas"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(mem, name))
    q, qp, qr = rng.normal(size=(30, 4)), rng.integers(-1, 3, 30), rng.uniform(0, 2, 30)
    for a, b in zip(mem.update(q, qp, qr), loaded.update(q, qp, qr)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.centers, mem.centers)
    # An empty memory round-trips too, and the saved file keeps the given name.
    CertificationMemory().save(tmp_path / "empty.bin")
    assert len(CertificationMemory.load(tmp_path / "empty.bin")) == 0


def test_load_rejects_other_files(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a memory\n")
    other = tmp_path / "other.npz"
    np.savez(other, weights=np.ones(3))
    future = tmp_path / "future.npz"
    CertificationMemory().save(future)
    with np.load(future) as data:
        fields = {k: data[k] for k in data.files}
    fields["format_version"] = np.array(99)
    np.savez(future, **fields)
    array = tmp_path / "array.npy"
    np.save(array, np.ones(3))
    for path, detail in ((text, ""), (other, "missing fields"), (future, "version 99"), (array, "not an .npz")):
        with pytest.raises(ValueError, match=rf"path '{path}' is not a CertificationMemory file.*{detail}"):
            CertificationMemory.load(path)
    with pytest.raises(FileNotFoundError):
        CertificationMemory.load(tmp_path / "missing.npz")


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda m: m.query(np.zeros((1, 3)), [0], [1.0]), r"x has shape \(1, 3\).*centers of shape \(1, 2\)"),
        (lambda m: m.update(np.zeros((1, 2, 2)), [0], [1.0]), r"x has shape \(1, 2, 2\).*\(1, 2\)"),
        (lambda m: m.query(np.zeros((2, 2)), [0], [1.0]), r"x must have one row per entry of pred \(1\)"),
        (lambda m: m.query(np.zeros((1, 2)), [0], [1.0, 2.0]), r"radius must have shape \(1,\).*\(2,\)"),
        (lambda m: m.query(np.zeros((1, 2)), [0], [-1.0]), r"radius must be finite and >= 0, got -1.0"),
        (lambda m: m.query(np.zeros((1, 2)), [-2], [1.0]), r"pred must be >= -1.*got -2"),
        (lambda m: m.query(np.zeros((1, 2)), [[0]], [1.0]), r"pred must be a 1-D array"),
        (lambda m: m.update(np.zeros((1, 2)), [0], [1.0], sigma=0.0), r"sigma must be finite and > 0, got 0.0"),
        (lambda m: m.update(np.full((1, 2), np.nan), [0], [1.0]), r"x must be finite"),
    ],
)
def test_bad_input(call, pattern):
    mem = CertificationMemory()
    mem.update(np.zeros((1, 2)), [0], [1.0])
    with pytest.raises(ValueError, match=pattern):
        call(mem)
    assert len(mem) == 1


def test_empty_batches_and_empty_memory():
    mem = CertificationMemory()
    pred, rad = mem.query(np.zeros((2, 1, 2, 2)), [0, 1], [1.0, 2.0])
    assert list(pred) == [0, 1] and list(rad) == [1.0, 2.0] and mem.dim is None
    pred, rad = mem.update(np.zeros((0, 4)), [], [])
    assert pred.shape == (0,) and rad.shape == (0,) and len(mem) == 0
    mem.update(np.zeros((2, 1, 2, 2)), [0, 1], [1.0, 2.0])
    assert mem.centers.shape == (2, 4) and mem.dim == 4 and list(mem.labels) == [0, 0]  # item 1 lies inside item 0


def test_bad_chunk_size():
    with pytest.raises(ValueError, match=r"chunk_size must be an integer >= 1, got 0"):
        CertificationMemory(chunk_size=0)
