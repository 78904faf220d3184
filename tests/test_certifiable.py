"""Settings that can never certify are said out loud (art_certssbd._certifiable, issue 24): the estimator's
``max_certifiable_radius`` and its warnings at construction, ``set_params``, ``certify`` and ``certify_adaptive``.
The ceiling itself is checked against closed forms in tests/test_certification.py."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import digits_estimator
from scipy.stats import norm

from art_certssbd import CertSSBDEstimator, RABEstimator
from art_certssbd.datasets import load_digits

NEVER = r"can never certify: even unanimous votes give p_a_lower <= 1/2.*max_certifiable_radius = 0.0"


@pytest.fixture(scope="module")
def fitted():
    x_train, y_train, x_test, _ = load_digits(random_state=0)
    est = digits_estimator(RABEstimator, nb_models=8, scale=0.25, alpha=0.1, random_state=0)
    est.fit(x_train[:120], y_train[:120], nb_epochs=1, batch_size=64)
    return est, x_test[:6]


@pytest.mark.parametrize("cls", [CertSSBDEstimator, RABEstimator])
def test_a_hopeless_ensemble_warns_at_construction(cls):
    # nb_models=4 at alpha=0.05: unanimous votes give 0.025 ** (1 / 4) = 0.40
    with pytest.warns(UserWarning, match=rf"{cls.__name__} with 4 member\(s\) .*alpha=0.05.*{NEVER}") as record:
        est = digits_estimator(cls, nb_models=4, alpha=0.05)
    assert "use at least nb_models=6 at this alpha" in str(record[0].message)
    assert record[0].filename.endswith("helpers.py")  # the line that built it, not the estimator's internals
    assert est.max_certifiable_radius == 0.0


def test_a_sufficient_ensemble_does_not_warn_and_reports_its_ceiling():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = digits_estimator(RABEstimator, nb_models=8, alpha=0.01, scale=0.5)
    assert est.max_certifiable_radius == pytest.approx(0.5 * norm.ppf(0.005 ** (1 / 8)), rel=1e-9)
    assert est.max_certifiable_radius == pytest.approx(0.0196, abs=1e-4)  # the "about 0.01-0.02"


def test_set_params_to_a_hopeless_setting_warns():
    est = digits_estimator(RABEstimator, nb_models=8, alpha=0.1)
    with pytest.warns(UserWarning, match=rf"with 8 member\(s\) .*alpha=0.001.*{NEVER}.*nb_models=11"):
        est.set_params(alpha=0.001)
    with pytest.warns(UserWarning, match=rf"draws_per_model=2 at alpha=0.1, bound='hoeffding' {NEVER}"):
        est.set_params(alpha=0.1, bound="hoeffding", draws_per_model=2)  # Hoeffding over 8 members at 0.1 / 10


def test_certify_with_too_few_votes_warns(fitted):
    est, x = fitted
    with pytest.warns(UserWarning, match=rf"certify: RABEstimator with 2 member\(s\) .*{NEVER}"):
        pred, _ = est.certify(x, n=2)
    assert np.all(pred == -1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est.certify(x)  # all 8 votes can certify at alpha = 0.1


def test_the_fitted_ceiling_matches_the_closed_form_and_bounds_every_radius(fitted):
    est, x = fitted
    expected = 0.25 * norm.ppf(0.05 ** (1 / 8))
    assert est.max_certifiable_radius == pytest.approx(expected, rel=1e-9)
    _, radius = est.certify(x)
    assert np.all(radius <= est.max_certifiable_radius + 1e-12)


def test_certify_adaptive_out_of_reach_warns(fitted):
    est, x = fitted
    out_of_reach = r"certify_adaptive: radius=1.0 is out of reach: 8 votes at alpha=0.1.*at most"
    with pytest.warns(UserWarning, match=out_of_reach):
        result = est.certify_adaptive(x, 1.0)
    assert not result.certified.any()
    reachable = 0.5 * est.max_certifiable_radius
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est.certify_adaptive(x, reachable)


def test_sigma_bounds_below_scale_warn_in_python_too():
    """Issue 24: the CLI said it; the Python API accepted it without a word."""
    with pytest.warns(UserWarning, match=r"sigma_bounds=\(0\.1, 0\.8\) starts below scale=0\.2"):
        digits_estimator(scale=0.2, sigma_steps=1, sigma_bounds=(0.1, 0.8), nb_models=20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sigma0 the minimum, or no optimiser to use the bounds: nothing to say
        digits_estimator(scale=0.2, sigma_steps=1, sigma_bounds=(0.2, 0.8), nb_models=20)
        digits_estimator(scale=0.2, sigma_steps=0, sigma_bounds=(0.1, 0.8), nb_models=20)
