"""Tests for the storage-update certification memory against a plain-Python reference of the trim rule."""

from __future__ import annotations

import dataclasses
import math
import types
from unittest import mock

import numpy as np
import pytest
import torch
from helpers import digits_estimator, trim_bruteforce
from hypothesis import given, settings
from hypothesis import strategies as st

from art_certssbd import memory as memory_module
from art_certssbd.fitted import FittedEnsemble
from art_certssbd.memory import CertificationMemory, apply_memory
from art_certssbd.result import CertificationResult


class ReferenceMemory:
    """Sequential reference built on ``trim_bruteforce``: the spec, item by item."""

    def __init__(self):
        self.centers, self.labels, self.radii, self.radii_c = [], [], [], []

    def run(self, x, pred, radius, store, conservative=None):
        out = []
        conservative = np.zeros(len(pred)) if conservative is None else conservative
        rows = np.asarray(x, dtype=float).reshape(len(pred), -1).tolist()
        for xi, ci, ri, rci in zip(rows, pred, radius, conservative):
            c, r, rc = trim_bruteforce(
                xi, int(ci), float(ri), float(rci), self.centers, self.labels, self.radii, self.radii_c
            )
            out.append((c, r, rc))
            if store and c != -1 and r > 0:
                self.centers.append(xi)
                self.labels.append(c)
                self.radii.append(r)
                self.radii_c.append(rc)
        return [c for c, _, _ in out], [r for _, r, _ in out], [rc for _, _, rc in out]


def assert_same(got, expected):
    """Labels equal, radii (and conservative radii, when ``got`` has them) equal up to rounding."""
    assert list(got[0]) == list(expected[0])
    for a, b in zip(got[1:], expected[1:]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


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


# ------------------------------------------------------------------------------- conservative radii (issue 10)
def _result(pred, radius, conservative, sigma=0.5):
    n = len(pred)
    return CertificationResult(
        pred=np.asarray(pred),
        radius=np.asarray(radius, dtype=float),
        radius_conservative=np.asarray(conservative, dtype=float),
        sigma=np.full(n, sigma),
        p_a_lower=np.full(n, 0.99),
        votes=np.zeros((n, 2)),
        pred_before_memory=np.asarray(pred),
    )


def test_a_relabelled_input_takes_the_stored_conservative_radius_not_its_own():
    # Issue 10 item 2: training sigma min 0.1, sigma_x 0.5. x1: class 0, radius 0.898, conservative 0.180 (= 0.898 *
    # 0.1 / 0.5). x2 at distance 0.3, all votes for class 1: relabelled class 0 with radius 0.598; it lies outside
    # x1's conservative ball, so its conservative radius is max(0, 0.180 - 0.3) = 0 (477d0a2 reported 0.180).
    mem = CertificationMemory()
    x = np.zeros((2, 4))
    x[1, 0] = 0.3
    first = apply_memory(mem, x[:1], _result([0], [0.898], [0.898 * 0.1 / 0.5]))
    np.testing.assert_allclose(first.radius_conservative, [0.1796])
    second = apply_memory(mem, x[1:], _result([1], [1.2], [0.24]))
    assert list(second.pred) == [0] and list(second.pred_before_memory) == [1]
    np.testing.assert_allclose(second.radius, [0.598])
    assert second.radius_conservative[0] == 0.0
    # Inside the conservative ball too: the ball of radius Rc_j - d around the query lies inside it.
    x[1, 0] = 0.05
    third = apply_memory(mem, x[1:], _result([1], [1.2], [0.24]), update=False)
    np.testing.assert_allclose([third.radius[0], third.radius_conservative[0]], [0.848, 0.1296])
    np.testing.assert_allclose(mem.radii_conservative, [0.1796, 0.0])
    assert mem.check_invariant()


def test_certify_reports_the_trimmed_conservative_radius_of_a_relabelled_input():
    # The same defect through the estimator (votes fixed: 100 of 100 for one class, sigma_x 0.5, training sigma
    # min 0.1). On 477d0a2 x2 came back relabelled with its own conservative radius 0.180.
    est = digits_estimator(nb_models=100, scale=0.5, alpha=0.001, use_memory=True)
    members = types.SimpleNamespace(nb_models=100)  # never votes: the votes are fixed below
    est.fitted_ = FittedEnsemble(members, np.array([0.1, 0.5]), 0, train_noise_copies=1, memory=CertificationMemory())
    x = np.zeros((2, 1, 8, 8), dtype=np.float32)
    x[1, 0, 0, 0] = 0.3

    def fixed_votes(xs, n, batch_size, verbose, label):
        counts = np.zeros((len(xs), 10))
        counts[:, label] = 100
        return xs, np.full(len(xs), 0.5), counts

    with mock.patch.object(est, "_votes", lambda *args: fixed_votes(*args, label=0)):
        first = est.certify(x[:1], return_details=True)
    r1, rc1 = first.radius[0], first.radius_conservative[0]
    np.testing.assert_allclose(rc1, r1 * 0.1 / 0.5)
    assert 0.3 < r1 and rc1 < 0.3
    with mock.patch.object(est, "_votes", lambda *args: fixed_votes(*args, label=1)):
        second = est.certify(x[1:], return_details=True)
    assert list(second.pred) == [0] and list(second.pred_before_memory) == [1]
    np.testing.assert_allclose(second.radius, [r1 - 0.3], rtol=1e-6)
    assert second.radius_conservative[0] == 0.0  # outside x1's conservative ball
    np.testing.assert_allclose(est.memory_.radii_conservative, [rc1, 0.0])


def test_a_trimmed_input_keeps_its_conservative_radius_below_the_gap():
    mem = CertificationMemory()
    mem.update(np.zeros((1, 2)), [0], [1.0], radius_conservative=[0.5])
    # Outside ball 0 at distance 3: the gap to the paper ball is 2; Rc = min(Rc, 2).
    out = mem.query(
        np.array([[3.0, 0.0], [3.0, 0.0], [5.0, 0.0]]), [1, 1, 1], [2.5, 2.5, 1.0], radius_conservative=[2.4, 1.5, 0.9]
    )
    assert list(out[0]) == [1, 1, 1]
    np.testing.assert_allclose(out[1], [2.0, 2.0, 1.0])
    np.testing.assert_allclose(out[2], [2.0, 1.5, 0.9])
    # Same label, and abstentions: unchanged.
    out = mem.query(np.array([[0.5, 0.0], [0.0, 0.0]]), [0, -1], [3.0, 0.0], radius_conservative=[1.0, 0.0])
    assert list(out[0]) == [0, -1] and list(out[1]) == [3.0, 0.0] and list(out[2]) == [1.0, 0.0]


def test_without_conservative_radii_the_calls_answer_as_before_and_store_zero():
    mem = CertificationMemory()
    out = mem.update(np.zeros((1, 2)), [0], [1.0])
    assert len(out) == 2 and len(mem.query(np.ones((1, 2)), [1], [1.0])) == 2
    assert list(mem.radii_conservative) == [0.0]  # unknown: the reading that never overstates a later certificate
    out = mem.query(np.array([[0.5, 0.0]]), [1], [1.0], radius_conservative=[1.0])
    assert list(out[0]) == [0] and out[2][0] == 0.0


def test_apply_memory():
    x = np.array([[0.0, 0.0], [0.5, 0.0], [9.0, 0.0]])
    result = _result([0, 1, -1], [2.0, 1.0, 0.0], [1.0, 3.0, 0.4])  # Rc above R and on abstain: clipped
    assert apply_memory(None, x, result) is result
    mem = CertificationMemory()
    out = apply_memory(mem, x, result)
    assert list(out.pred) == [0, 0, -1] and list(out.pred_before_memory) == [0, 1, -1]
    np.testing.assert_allclose(out.radius, [2.0, 1.5, 0.0])
    np.testing.assert_allclose(out.radius_conservative, [1.0, 0.5, 0.0])
    assert out.sigma is result.sigma and out.votes is result.votes and out.p_a_lower is result.p_a_lower
    assert len(mem) == 2 and list(mem.sigmas) == [0.5, 0.5]
    again = apply_memory(mem, x, result, update=False)
    assert len(mem) == 2 and list(again.pred) == [0, 0, -1]


def test_apply_memory_keeps_fields_added_to_the_result():
    @dataclasses.dataclass(frozen=True)
    class Extended(CertificationResult):
        note: str = "kept"

    base = _result([0], [1.0], [0.5])
    extended = Extended(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)}, note="mine")
    out = apply_memory(CertificationMemory(), np.zeros((1, 2)), extended)
    assert isinstance(out, Extended) and out.note == "mine"


def test_check_invariant_detects_overlapping_conservative_balls():
    mem = CertificationMemory()
    mem.update(np.array([[0.0], [3.0]]), [0, 1], [1.0, 1.0], radius_conservative=[1.0, 0.5])
    assert mem.check_invariant()
    mem._radii[1] = 2.5  # paper and conservative balls of different labels overlap
    mem._radii_c[1] = 2.5
    assert not mem.check_invariant()
    mem._radii_c[1] = 1.5  # only the paper balls overlap
    assert not mem.check_invariant()
    mem._radii[1], mem._radii_c[1] = 1.0, 1.5  # conservative above the paper radius
    assert not mem.check_invariant()


grid = st.integers(-6, 6).map(lambda v: v / 2)  # dyadic: distances are exact, ties really happen
smooth = st.floats(-3, 3, allow_nan=False, allow_subnormal=False)


@st.composite
def streams(draw, dyadic: bool):
    dim = draw(st.sampled_from([2, 5]))
    item = st.tuples(
        st.lists(grid if dyadic else smooth, min_size=dim, max_size=dim),
        st.sampled_from([-1, 0, 1, 2]),
        st.integers(0, 16).map(lambda v: v / 4) if dyadic else st.floats(0, 4, allow_subnormal=False),
        st.sampled_from([0.0, 0.25, 0.5, 1.0]),  # conservative radius as a fraction of the paper radius
    )
    return draw(st.lists(st.lists(item, min_size=1, max_size=10), min_size=1, max_size=5))


def _run_property(batches, block, chunk):
    mem, ref = CertificationMemory(chunk_size=chunk), ReferenceMemory()
    with mock.patch.object(memory_module, "_BLOCK", block):
        for batch in batches:
            x = np.array([b[0] for b in batch])
            pred = np.array([b[1] for b in batch])
            rad = np.array([b[2] for b in batch])
            cons = rad * np.array([b[3] for b in batch])
            # query: against the stored regions only, no state change.
            size = len(mem)
            assert_same(mem.query(x, pred, rad, radius_conservative=cons), ref.run(x, pred, rad, False, cons))
            assert len(mem) == size
            # update: in order, storing as it goes.
            got = mem.update(x, pred, rad, radius_conservative=cons)
            assert_same(got, ref.run(x, pred, rad, True, cons))
            assert np.all(got[2] <= got[1])
            assert len(mem) == len(ref.labels)
            assert list(mem.labels) == ref.labels
            np.testing.assert_allclose(mem.radii_conservative, ref.radii_c, rtol=1e-12, atol=1e-12)
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


@pytest.mark.parametrize(("dim", "spread"), [(2, 1e-3), (6, 1e-4)])
def test_a_tight_cluster_far_from_the_origin_matches_exact_float64(dim, spread):
    # Points within ~spread of each other at norm 1024: the matrix-product distances are off by more than the gaps
    # between the nearest candidates, so only the near-tie screen (every pair within the worst-case rounding error
    # of the minimum is recomputed exactly) keeps the answers those of exact float64 distances. With the screen's
    # tolerance set to 0, 14 (dim 2) and 10 (dim 6) of these 1500 radii differ from the exact ones.
    rng = np.random.default_rng(0)
    center = np.full(dim, 1024 / np.sqrt(dim))
    x, pred, rad = center + spread * rng.normal(size=(300, dim)), rng.integers(0, 2, 300), rng.uniform(0, spread, 300)
    q, q_pred = center + spread * rng.normal(size=(1500, dim)), rng.integers(0, 2, 1500)
    q_rad = rng.uniform(0, 3 * spread, 1500)
    mem, ref = CertificationMemory(), ReferenceMemory()
    assert_same(mem.update(x, pred, rad), ref.run(x, pred, rad, store=True))
    assert_same(mem.query(q, q_pred, q_rad), ref.run(q, q_pred, q_rad, store=False))


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
    rad = rng.uniform(0, 2, 50)
    mem.update(
        rng.normal(size=(50, 4)), rng.integers(0, 3, 50), rad, rng.uniform(0.1, 1, 50), radius_conservative=rad / 3
    )
    path = tmp_path / "memory.npz"
    mem.save(path)
    for loaded in (CertificationMemory.load(path), CertificationMemory.from_state_dict(mem.state_dict())):
        assert len(loaded) == len(mem) and np.any(loaded.radii_conservative > 0)
        for name in ("centers", "labels", "radii", "radii_conservative", "sigmas"):
            np.testing.assert_array_equal(getattr(loaded, name), getattr(mem, name))
    q, qp, qr = rng.normal(size=(30, 4)), rng.integers(-1, 3, 30), rng.uniform(0, 2, 30)
    for a, b in zip(
        mem.update(q, qp, qr, radius_conservative=qr / 2), loaded.update(q, qp, qr, radius_conservative=qr / 2)
    ):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.centers, mem.centers)
    # An empty memory round-trips too, and the saved file keeps the given name.
    CertificationMemory().save(tmp_path / "empty.bin")
    assert len(CertificationMemory.load(tmp_path / "empty.bin")) == 0


def test_a_version_1_file_loads_with_conservative_radii_0(tmp_path, caplog):
    # Version 1 (477d0a2) stored no conservative radii: unknown, so 0, which never overstates a later certificate.
    path = tmp_path / "v1.npz"
    centers, labels, radii, sigmas = (
        np.array([[0.0, 0.0], [5.0, 0.0]]),
        np.array([0, 1]),
        np.array([2.0, 1.0]),
        np.ones(2),
    )
    np.savez(path, format=np.array("art-certssbd/certification-memory"), format_version=np.array(1), centers=centers,
             labels=labels, radii=radii, sigmas=sigmas)  # fmt: skip
    with caplog.at_level("WARNING", logger="art_certssbd.memory"):
        mem = CertificationMemory.load(path)
    assert "format version 1: conservative radii unknown, loaded as 0" in caplog.text
    np.testing.assert_array_equal(mem.radii, radii)
    np.testing.assert_array_equal(mem.radii_conservative, [0.0, 0.0])
    out = mem.query(np.array([[0.5, 0.0]]), [1], [1.0], radius_conservative=[1.0])
    assert list(out[0]) == [0] and out[1][0] == 1.5 and out[2][0] == 0.0
    mem.save(path)  # saved again: version 2
    with np.load(path) as data:
        assert int(data["format_version"]) == 2


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
        (
            lambda m: m.query(np.zeros((1, 2)), [0], [1.0], radius_conservative=[1.5]),
            r"radius_conservative must be finite, >= 0 and <= radius, got 1.5 \(radius 1.0\)",
        ),
        (
            lambda m: m.update(np.zeros((1, 2)), [0], [1.0], radius_conservative=[1.0, 1.0]),
            r"radius_conservative must have shape \(1,\) like pred, got \(2,\)",
        ),
        (
            lambda m: m.update(np.zeros((1, 2)), [0], [1.0], radius_conservative=[np.nan]),
            r"radius_conservative must be finite, >= 0 and <= radius, got nan",
        ),
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


# ---------------------------------------------------------------------------------------------- the mutation run's
# survivors (benchmarks/mutation_report.py): exact messages, dtypes, defaults and the paths the property tests miss.


def _full(pattern: str) -> str:
    return "^" + pattern + "$"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.query(np.zeros((2, 2)), [-1, -2], [0.0, 1.0]), r"pred must be >= -1 \(-1 = abstain\), got -2"),
        (lambda m: m.query(np.zeros((2, 2)), [0.5, 1], [1.0, 1.0]), r"pred must be a 1-D array of integer labels.*"),
        (lambda m: m.query(np.zeros((3, 2)), np.zeros((3, 1)), [1.0] * 3), r"pred must be a 1-D array.*"),
        (lambda m: m.query(np.zeros((2, 2)), [0, 0], [0.0, -1.0]), r"radius must be finite and >= 0, got -1.0"),
        (lambda m: m.update(np.full((1, 2), np.inf), [0], [1.0]), r"x must be finite, got NaN or inf"),
        (
            lambda m: m.update(np.zeros((3, 2)), [0] * 3, [1.0] * 3, sigma=[1.0, 1.0]),
            r"sigma must be a scalar or have shape \(3,\), got shape \(2,\)",
        ),
        (
            lambda m: m.update(np.zeros((3, 2)), [0] * 3, [1.0] * 3, sigma=np.ones((3, 1))),
            r"sigma must be a scalar or have shape \(3,\), got shape \(3, 1\)",
        ),
        (
            lambda m: m.update(np.zeros((3, 2)), [0] * 3, [1.0] * 3, sigma=[1.0, -2.0, 1.0]),
            r"sigma must be finite and > 0, got -2.0",
        ),
        (lambda m: m.update(np.zeros((1, 2)), [0], [1.0], sigma=-3.0), r"sigma must be finite and > 0, got -3.0"),
    ],
)
def test_bad_input_messages_exactly(call, message):
    mem = CertificationMemory()
    mem.update(np.zeros((1, 2)), [0], [1.0])
    with pytest.raises(ValueError, match=_full(message)):
        call(mem)
    assert len(mem) == 1


@pytest.mark.parametrize("chunk_size", [True, 2.0, "3"])
def test_chunk_size_must_be_an_int(chunk_size):
    with pytest.raises(ValueError, match=_full(rf"chunk_size must be an integer >= 1, got {chunk_size!r}")):
        CertificationMemory(chunk_size=chunk_size)


def test_an_empty_memory_has_typed_empty_arrays_and_the_documented_defaults(tmp_path):
    mem = CertificationMemory()
    assert mem.dim is None and len(mem) == 0 and mem.chunk_size == 8192 and mem.device == torch.device("cpu")
    assert CertificationMemory(device="meta").device == torch.device("meta")
    assert mem.centers.shape == (0, 0)
    kinds = {"centers": np.float64, "labels": np.int64, "radii": np.float64, "radii_conservative": np.float64}
    for name, dtype in {**kinds, "sigmas": np.float64}.items():
        assert getattr(mem, name).dtype == dtype, name
    mem.save(tmp_path / "empty.npz")
    for loaded in (
        CertificationMemory.load(tmp_path / "empty.npz"),
        CertificationMemory.from_state_dict(mem.state_dict()),
    ):
        assert loaded.chunk_size == 8192 and loaded.device == torch.device("cpu")
    for loaded in (
        CertificationMemory.load(tmp_path / "empty.npz", device="meta", chunk_size=5),
        CertificationMemory.from_state_dict(mem.state_dict(), device="meta", chunk_size=5),
    ):
        assert loaded.chunk_size == 5 and loaded.device == torch.device("meta")


def test_integer_inputs_are_trimmed_in_float64():
    """Integer radii (and conservative radii) are trimmed to non-integer values, not truncated; labels come back
    int64; a tensor that requires grad and 1-D x (one feature per sample) are accepted."""
    mem = CertificationMemory()
    mem.update(np.zeros((1, 1)), [0], [1.0])
    pred, radius, conservative = mem.query(np.array([[1.5]]), np.array([1]), np.array([2]), radius_conservative=[2])
    assert pred.dtype == np.int64 and list(pred) == [1]
    assert radius[0] == 0.5 and conservative[0] == 0.5
    pred, radius = mem.query(np.array([1.5, 3.0]), [1, 1], [1, 1])  # 1-D x: two samples of one feature
    assert list(radius) == [0.5, 1.0]
    grad = torch.tensor([[1.5]], dtype=torch.float64, requires_grad=True)
    assert mem.query(grad, [1], [2.0])[1][0] == 0.5


def test_the_log_counts_relabels_trims_and_stores(caplog):
    """One debug line per call with the counts, summed over the items and over the blocks of 256; a conflict at
    exactly the certified radius (g = r) touches the ball already, so it is not trimmed."""
    mem = CertificationMemory()
    with caplog.at_level("DEBUG", logger="art_certssbd.memory"):
        mem.update(np.zeros((2, 1)), [0, -1], [1.0, 0.0])
        # +-0.5 inside ball 0 (relabelled), +-3 with radius 2.5 trimmed to 2, 2 with radius 1 at g = r (kept)
        mem.update(np.array([[0.5], [-0.5], [3.0], [-3.0], [2.0]]), [1] * 5, [0.25, 0.25, 2.5, 2.5, 1.0])
        mem.update(100.0 + 10.0 * np.arange(300)[:, None], [2] * 300, [1.0] * 300)  # two blocks, no conflict
        mem.query(np.array([[0.5]]), [1], [1.0])
    assert caplog.messages == [
        "memory update: {'relabelled': 0, 'trimmed': 0, 'stored': 1}; 1 regions stored",
        "memory update: {'relabelled': 2, 'trimmed': 2, 'stored': 5}; 6 regions stored",
        "memory update: {'relabelled': 0, 'trimmed': 0, 'stored': 300}; 306 regions stored",
        "memory query: {'relabelled': 1, 'trimmed': 0, 'stored': 0}; 306 regions stored",
    ]


def test_a_tie_between_a_stored_ball_and_an_earlier_item_of_the_batch_goes_to_the_stored_one():
    """Two same-label balls at equal ``g < 0`` from a query: the one stored before the batch wins the tie (storage
    order), and its conservative radius decides the relabelled one."""
    mem, ref = CertificationMemory(), ReferenceMemory()
    first = (np.array([[0.0]]), [1], [1.0], [1.0])
    mem.update(first[0], first[1], first[2], radius_conservative=first[3])
    ref.run(*first[:3], True, first[3])
    batch = (np.array([[1.0], [0.5]]), [1, 0], [1.0, 0.1], [0.5, 0.1])
    got = mem.update(batch[0], batch[1], batch[2], radius_conservative=batch[3])
    assert_same(got, ref.run(*batch[:3], True, batch[3]))
    assert list(got[0]) == [1, 1] and got[1][1] == 0.5 and got[2][1] == 0.5


def test_apply_memory_sets_pred_before_memory():
    result = dataclasses.replace(_result([0, 1], [1.0, 1.0], [0.5, 0.5]), pred_before_memory=np.array([7, 7]))
    out = apply_memory(CertificationMemory(), np.array([[0.0], [0.5]]), result)
    assert list(out.pred_before_memory) == [0, 1] and list(out.pred) == [0, 0]


def test_a_large_memory_loads_in_one_append(tmp_path):
    rng = np.random.default_rng(3)
    n = 1500
    state = {
        "format_version": torch.tensor(2),
        "centers": torch.from_numpy(rng.normal(size=(n, 2)) * 100),
        "labels": torch.zeros(n, dtype=torch.int64),
        "radii": torch.full((n,), 0.5, dtype=torch.float64),
        "radii_conservative": torch.full((n,), 0.25, dtype=torch.float64),
        "sigmas": torch.ones(n, dtype=torch.float64),
    }
    mem = CertificationMemory.from_state_dict(state)
    assert len(mem) == n and np.array_equal(mem.centers, state["centers"].numpy())


def _state(**changes):
    state = {
        "format_version": torch.tensor(2),
        "centers": torch.zeros((2, 2), dtype=torch.float64),
        "labels": torch.tensor([0, 0]),
        "radii": torch.tensor([1.0, 1.0], dtype=torch.float64),
        "radii_conservative": torch.tensor([0.5, 0.5], dtype=torch.float64),
        "sigmas": torch.ones(2, dtype=torch.float64),
    }
    state.update(changes)
    return {k: v for k, v in state.items() if v is not None}


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ([1, 2], "a memory state must be a mapping of names to tensors"),
        ({"centers": np.zeros((1, 2))}, "a memory state must be a mapping of names to tensors"),
        (_state(format_version=None), r"format version None, expected .*"),
        (_state(format_version=torch.tensor([2, 2])), r"format version tensor\(\[2, 2\]\).*|format version \[2 2\].*"),
        (_state(radii_conservative=None), r"missing fields \['radii_conservative'\]"),
        (_state(centers=torch.zeros(2, dtype=torch.float64)), "inconsistent array shapes"),
        (
            _state(
                centers=torch.zeros(3, dtype=torch.float64),
                labels=torch.tensor([0]),
                radii=torch.tensor([1.0]),
                radii_conservative=torch.tensor([0.5]),
                sigmas=torch.tensor([1.0]),
            ),  # fmt: skip
            "inconsistent array shapes",
        ),
        (_state(labels=torch.tensor([0, 0, 0])), "inconsistent array shapes"),
        (_state(centers=torch.full((2, 2), np.inf)), "non-finite centers, non-positive radii or negative labels"),
        (_state(radii=torch.tensor([1.0, 0.0])), "non-finite centers, non-positive radii or negative labels"),
        (_state(labels=torch.tensor([0, -1])), "non-finite centers, non-positive radii or negative labels"),
        (_state(radii_conservative=torch.tensor([0.5, 1.5])), r"conservative radii outside \[0, radius\]"),
    ],
)
def test_bad_states_are_refused_exactly(state, message):
    with pytest.raises(ValueError, match=_full(message)):
        CertificationMemory.from_state_dict(state)


def test_an_empty_version_1_file_loads_and_says_so(tmp_path, caplog):
    path = tmp_path / "v1.npz"
    arrays = dict(centers=np.zeros((0, 2)), labels=np.zeros(0, dtype=np.int64), radii=np.zeros(0), sigmas=np.zeros(0))
    np.savez(path, format=np.array("art-certssbd/certification-memory"), format_version=np.array(1), **arrays)
    with caplog.at_level("WARNING", logger="art_certssbd.memory"):
        assert len(CertificationMemory.load(path)) == 0
    assert caplog.messages == ["certification memory of format version 1: conservative radii unknown, loaded as 0"]


def test_load_names_a_single_array_file(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.ones(3))
    with pytest.raises(
        ValueError, match=_full(rf"path '{path}' is not a CertificationMemory file: not an .npz archive")
    ):
        CertificationMemory.load(path)


def test_check_invariant_says_which_radii_break_it(caplog):
    mem = CertificationMemory()
    mem.update(np.array([[0.0], [3.0]]), [0, 1], [1.0, 1.0], radius_conservative=[0.5, 0.5])
    mem._radii[1] = 2.5  # paper balls overlap
    with caplog.at_level("WARNING", logger="art_certssbd.memory"):
        assert not mem.check_invariant()
    mem._radii[1] = 1.0
    mem._radii_c[1] = 1.5  # a conservative radius above its paper radius
    with caplog.at_level("WARNING", logger="art_certssbd.memory"):
        assert not mem.check_invariant()
    assert caplog.messages == [
        "certification memory invariant violated (paper radii, atol=1e-06)",
        "certification memory invariant violated: a conservative radius outside [0, radius]",
    ]


def test_apply_memory_ignores_the_radii_of_abstentions():
    """An abstention certifies nothing, so whatever radii a result carries for it (NaN here) are read as 0."""
    result = dataclasses.replace(_result([0, -1], [1.0, np.nan], [0.5, np.nan]))
    out = apply_memory(CertificationMemory(), np.array([[0.0], [5.0]]), result)
    assert list(out.pred) == [0, -1] and list(out.radius) == [1.0, 0.0] and list(out.radius_conservative) == [0.5, 0]


def test_far_balls_reaching_near_the_origin_keep_the_exact_decisions():
    """Stored centers at norm 1e8 whose balls reach to about 1 from the origin, queried near the origin: the fast
    form's error (about eps * |x_j|^2 / ||x - x_j||, some 1e-8 here) is covered only because the rounding bound uses
    the largest *stored* squared norm, not just the query's (a bound from the query alone, or from any other stored
    quantity, misses the true minimiser)."""
    rng = np.random.default_rng(0)
    u = rng.normal(size=(400, 2))
    x = 1e7 * u / np.linalg.norm(u, axis=1, keepdims=True)
    rad = np.linalg.norm(x, axis=1) - 1 + rng.uniform(0, 1e-8, 400)
    mem = CertificationMemory()
    mem.update(x, np.zeros(400, dtype=int), rad, sigma=1e-12)
    assert len(mem) == 400
    q = rng.normal(size=(300, 2)) * 1e-9
    exact = (np.sqrt(((q[:, None, :] - x[None]) ** 2).sum(-1)) - rad[None]).min(axis=1)
    pred, radius = mem.query(q, np.ones(300, dtype=int), np.full(300, 5.0))
    assert list(pred) == [1] * 300
    np.testing.assert_array_equal(radius, exact)


def _crowd_far_from_the_origin(touching: bool, overlap: float = 0.0) -> CertificationMemory:
    """120 tiny balls of alternating labels within 0.05 of each other at norm 2^20, where the matrix-product form's
    rounding bound (about 0.1) makes every pair of different labels a suspect, so ``any_overlap`` takes its
    all-exact path; optionally one extra pair that touches exactly (dyadic values) or overlaps by ``overlap``."""
    rng = np.random.default_rng(5)
    base = np.array([2.0**20, 0.0])
    x = base + rng.uniform(0.1, 0.15, size=(120, 2))
    labels, radii = np.arange(120) % 2, np.full(120, 1e-6)
    if touching or overlap:
        x = np.vstack([x, base, base + [2.0**-10, 0.0]])
        labels = np.append(labels, [0, 1])
        radii = np.append(radii, [2.0**-11 + overlap, 2.0**-11])
    mem = CertificationMemory(chunk_size=4096)
    mem._append(x, labels, radii, radii / 2, np.ones(len(labels)))
    return mem


def test_check_invariant_on_the_all_exact_path():
    assert _crowd_far_from_the_origin(touching=False).check_invariant(atol=0.0)
    assert _crowd_far_from_the_origin(touching=True).check_invariant(atol=0.0)  # touching is not overlapping
    assert not _crowd_far_from_the_origin(touching=False, overlap=2.0**-20).check_invariant(atol=0.0)


def test_check_invariant_touching_and_barely_overlapping_balls_far_from_the_origin():
    """Balls that touch exactly do not overlap; an overlap much smaller than the fast form's rounding bound (about
    0.1 at norm 2^20) is still found."""
    base = np.array([[2.0**20, 0.0]])
    for gap, expected in ((0.0, True), (-(2.0**-8), False)):
        mem = CertificationMemory()
        x = np.vstack([base, base + [2.0 + gap, 0.0]])
        mem._append(x, np.array([0, 1]), np.array([1.0, 1.0]), np.array([0.5, 0.5]), np.ones(2))
        assert mem.check_invariant(atol=0.0) is expected


def test_a_query_at_the_origin_sees_a_ball_at_the_origin():
    """Zero norms make the rounding bound of the fast form 0: its floor (1e-12) keeps the minimiser in the screen."""
    mem = CertificationMemory()
    mem.update(np.zeros((1, 2)), [0], [1.0])
    pred, radius = mem.query(np.zeros((1, 2)), [1], [0.5])
    assert list(pred) == [0] and list(radius) == [1.0]


@pytest.mark.parametrize("chunk_size", [1, 8192])
def test_a_tie_between_two_stored_balls_goes_to_the_first_stored(chunk_size):
    """Two same-label balls at equal ``g < 0``: the first stored decides the conservative radius, whether the two
    are in one chunk or in two (earlier chunks win ties)."""
    mem = CertificationMemory(chunk_size=chunk_size)
    mem.update(np.array([[0.0], [1.0]]), [1, 1], [1.0, 1.0], radius_conservative=[1.0, 0.5])
    pred, radius, conservative = mem.query(np.array([[0.5]]), [0], [0.1], radius_conservative=[0.1])
    assert list(pred) == [1] and radius[0] == 0.5 and conservative[0] == 0.5


def test_a_huge_radius_whose_ulp_swallows_the_screen_margin_is_still_found():
    """With R = 1e20 the row minimum g = ||x - x_j|| - R is about -1e20, whose ulp (16384) exceeds the screen's
    margin: the screen must keep values equal to the minimum plus margin (<=), or it would keep nothing."""
    mem = CertificationMemory()
    mem.update(np.zeros((1, 2)), [0], [1e20])
    pred, radius = mem.query(np.ones((1, 2)), [1], [0.5])
    assert list(pred) == [0] and radius[0] == 1e20 - np.sqrt(2)


def test_check_invariant_finds_an_overlap_among_the_last_rows_of_many_chunks():
    """Ten regions in chunks of two, the only overlapping pair (labels 0 and 1) the last two: every chunk of rows
    and of columns is visited (a loop over ``range(chunk_size)`` instead of the chunk starts misses them)."""
    x = np.stack([np.arange(10) * 10.0, np.zeros(10)], axis=1)
    x[9] = x[8] + [1.0, 0.0]
    labels, radii = np.array([0] * 9 + [1]), np.full(10, 0.75)
    mem = CertificationMemory(chunk_size=2)
    mem._append(x, labels, radii, radii / 2, np.ones(10))
    assert not mem.check_invariant(atol=0.0)
    mem = CertificationMemory(chunk_size=2)
    mem._append(x[:9], labels[:9], radii[:9], radii[:9] / 2, np.ones(9))  # without the last ball: no overlap
    assert mem.check_invariant(atol=0.0)


def test_the_buffers_grow_geometrically_only_when_full():
    """Regions of 4 features added one at a time: the capacity stays 1,024 until the 1,025th region, then doubles
    (growing on any other condition, e.g. more regions than features, would reallocate and double at each call)."""
    mem = CertificationMemory()
    for i in range(6):
        mem.update(np.full((1, 4), 10.0 * i), [i % 2], [1.0])
        assert mem._centers.shape == (1024, 4)
    mem.update(np.arange(1019 * 4, dtype=float).reshape(1019, 4) * 100 + 1e4, np.zeros(1019, dtype=int),
               np.full(1019, 1.0))  # fmt: skip
    assert len(mem) == 1025 and mem._centers.shape == (2048, 4)
