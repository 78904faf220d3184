"""Adaptive certification through the estimator (``certify_adaptive``): agreement with the fixed-n certificate and
the votes saved. The sequential test itself is tested in tests/test_sequential.py; its error rate through the
estimator (every option) in tests/test_soundness.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import digits_estimator

from art_certssbd import RABEstimator
from art_certssbd.datasets import load_digits
from art_certssbd.sequential import AdaptiveResult


@pytest.fixture(scope="module")
def estimator():
    x_train, y_train, x_test, y_test = load_digits(random_state=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many small kernels: one thread is fastest, and robust to a busy machine
    est = digits_estimator(RABEstimator, lr=1e-2, nb_models=48, scale=0.1, alpha=0.01, random_state=1)
    try:
        est.fit(x_train[:500], y_train[:500], nb_epochs=4, batch_size=32)
        yield est, x_test[:80], y_test[:80]
    finally:
        torch.set_num_threads(threads)


def test_estimator_single_look_equals_certify(estimator):
    est, x, _ = estimator
    fixed = est.certify(x, return_details=True)
    res = est.certify_adaptive(x, 0.1, looks=[48])
    assert isinstance(res, AdaptiveResult)
    np.testing.assert_array_equal(res.counts, fixed.votes)
    np.testing.assert_array_equal(res.certified, (fixed.pred != -1) & (fixed.radius >= 0.1))
    np.testing.assert_array_equal(res.pred[res.certified], fixed.pred[res.certified])


def test_estimator_adaptive_saves_votes_and_agrees_on_clear_inputs(estimator):
    est, x, _ = estimator
    fixed = est.certify(x, return_details=True)
    res = est.certify_adaptive(x, 0.0, first_look=6, growth=2.0)
    np.testing.assert_array_equal(res.looks, [6, 12, 24, 48])
    assert res.total_votes < 0.6 * len(x) * 48
    assert np.mean(res.certified == (fixed.pred != -1)) >= 0.9
    # unanimous inputs are certified, for the same class, from the first 12 votes
    clear = fixed.votes.max(axis=1) == 48
    assert clear.sum() >= 20
    assert np.all(res.certified[clear])
    np.testing.assert_array_equal(res.pred[clear], fixed.pred[clear])
    assert np.all(res.votes_used[clear] <= 12)
