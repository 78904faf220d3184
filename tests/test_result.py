"""The per-sample certification outcome (``art_certssbd.result``): certified accuracy, abstentions, JSON form."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from art_certssbd.result import CertificationResult

# Five inputs: two certified correct, one abstention (-1), one correct with a small conservative radius, one wrong.
Y = np.array([0, 1, 2, 2, 0])


def _result() -> CertificationResult:
    return CertificationResult(
        pred=np.array([0, 1, -1, 2, 1]),
        radius=np.array([0.5, 0.25, 0.0, 1.0, 0.7]),
        radius_conservative=np.array([0.4, 0.25, 0.0, 0.2, 0.7]),
        sigma=np.array([0.3, 0.2, 0.25, 0.5, 0.4]),
        p_a_lower=np.array([0.95, 0.9, 0.4, 0.98, 0.96]),
        votes=np.array([[19, 1, 0], [2, 18, 0], [8, 4, 8], [0, 0, 20], [1, 19, 0]]),
        pred_before_memory=np.array([0, 1, -1, 2, 1]),
    )


def test_certified_accuracy_by_hand():
    # Correct and not abstained: inputs 0, 1, 3. Paper radii 0.5, 0.25, 1.0; conservative 0.4, 0.25, 0.2.
    # r = 0.25 keeps input 1 (radius exactly 0.25: ">= r", not "> r"); the abstention stays in the denominator (5).
    radii = [0.0, 0.25, 0.5, 1.0, 1.5]
    np.testing.assert_allclose(_result().certified_accuracy(Y, radii), [3 / 5, 3 / 5, 2 / 5, 1 / 5, 0.0])
    np.testing.assert_allclose(_result().certified_accuracy(Y, radii, conservative=True), [3 / 5, 2 / 5, 0.0, 0.0, 0.0])


def test_certified_accuracy_takes_lists_and_a_scalar_radius():
    acc = _result().certified_accuracy(Y.tolist(), 0.5)
    assert acc.shape == (1,)
    assert acc[0] == pytest.approx(2 / 5)


def test_an_abstention_is_never_counted_even_against_a_matching_label():
    # A label of -1 must not turn an abstention into a correct prediction.
    res = _result()
    y = Y.copy()
    y[2] = -1
    np.testing.assert_allclose(res.certified_accuracy(y, [0.0]), [3 / 5])


def test_abstained_and_len():
    res = _result()
    assert len(res) == 5
    np.testing.assert_array_equal(res.abstained, [False, False, True, False, False])


def test_to_dict_is_plain_json_and_round_trips():
    res = _result()
    d = res.to_dict()
    assert list(d) == [f.name for f in dataclasses.fields(CertificationResult)]
    assert all(type(v) is list for v in d.values())
    assert type(d["pred"][0]) is int and type(d["radius"][0]) is float
    back = CertificationResult(**{k: np.asarray(v) for k, v in json.loads(json.dumps(d)).items()})
    for f in dataclasses.fields(CertificationResult):
        np.testing.assert_array_equal(getattr(back, f.name), getattr(res, f.name))
    assert d["votes"][2] == [8, 4, 8]


def test_result_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        _result().pred = np.zeros(5)
