"""The official Cert-SSB evaluation as a certification preset, beside our default (see
:mod:`art_certssbd.official.files` for the official pipeline, line by line, and
:meth:`art_certssbd.CertSSBDEstimator.from_official` for the official models).

It reads a fitted estimator through its public fitted state only (``ensemble_``, ``test_noise_seeds_``, ``scale``,
``input_shape``, ``clip_values``, ``nb_classes``, ``vectorize``), and imports no estimator.

Why the default is the sound one, in short (``docs/guarantees.md`` and ``docs/paper-setting.md`` say it at length):
randomized smoothing certifies the noise level that was actually drawn. The official evaluation draws the test
noise at sigma0 but puts the larger stored per-sample sigma into the radius, bounds soft scores with Hoeffding for an
assumed ``n = 1000``, and never abstains; each of these can only enlarge the reported radius.

| Paper link: https://arxiv.org/abs/2504.21730
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from scipy.special import ndtri

from art_certssbd._validation import NOT_FITTED, NotFittedError, check_inputs
from art_certssbd.ensemble import vote
from art_certssbd.noise import fixed_test_noise
from art_certssbd.result import CertificationResult

logger = logging.getLogger(__name__)

__all__ = [
    "NOISE_SOURCES",
    "certify_reference",
    "official_certified_accuracy",
    "official_noise_fn",
    "reference_certificate",
]

NOISE_SOURCES = ("official", "estimator")


def official_noise_fn(seeds: list[int]):
    """Unit-variance test noise as the official ``fix_pert`` seeds it: member ``k`` gets
    ``float32(RandomState(seeds[k]).randn(1, *shape))``, one tensor shared by all test inputs (a
    :data:`~art_certssbd.ensemble.NoiseFn`, one draw per member).

    :param seeds: One seed in ``[0, 2**32)`` per member (the official ``sha256(file) mod 2**32``).
    """
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s < 2**32]
    if bad:
        raise ValueError(f"seeds must be integers in [0, 2**32) for numpy's legacy generator, got {bad[:3]}")

    def noise(ks, draws, shape):
        if draws != 1:
            raise ValueError(f"the official test noise has one draw per model, got draws_per_model={draws}")
        return torch.stack([torch.from_numpy(np.random.RandomState(seeds[k]).randn(1, *shape)).float() for k in ks])

    return noise


def certify_reference(
    estimator,
    x: np.ndarray,
    sigma_stored,
    n_assumed: int | None = 1000,
    alpha: float = 0.001,
    *,
    noise: str = "official",
    batch_size: int = 256,
    verbose: bool = False,
) -> CertificationResult:
    """The official Cert-SSB evaluation (``eval.py``, see the module docstring), on a fitted estimator.

    Side by side, official preset | our default (:meth:`~art_certssbd.estimator.CertSSBDEstimator.certify`):

    * test noise: ``x + sigma0 * e_k`` | ``x + sigma_x * e_k``, the sigma that enters the radius;
    * votes: soft, the mean softmax (= sigmoid) score | hard vote counts;
    * bound: Hoeffding with ``n = n_assumed`` (official: 1000 whatever the number of models) | Clopper-Pearson (or
      Hoeffding) with the true ``n``;
    * radius: ``sigma_stored / 2 * (Phi^-1(pA_lower) - Phi^-1(pB_upper))`` | ``sigma_x * Phi^-1(pA_lower)``, and the
      conservative radius with ``min(sigma_x, min_j sigma_j)``;
    * abstain: never (argmax; the radius may be negative) | ``-1`` with radius 0 where ``pA_lower <= 1/2``;
    * certified at ``r``: ``radius > r`` (:func:`official_certified_accuracy`) | ``radius >= r``;
    * storage update: none | trims against the memory of certified regions.

    Only the default certifies the noise that was drawn. Randomized smoothing's radius holds for the noise level
    actually used: here the votes come from noise at sigma0 while the radius uses the larger stored sigma (0.22-0.29
    against 0.12 for MNIST one-pixel), which inflates it by ``sigma_stored / sigma0``; and Hoeffding with
    ``n = 1000`` inflates it again when fewer models vote (the official 224 px runs use 200). Soft votes are sound
    in themselves (Salman et al. 2019: ``Phi^-1`` of the mean of any [0, 1]-valued score is ``1/sigma``-Lipschitz);
    the default counts hard votes because the exact Clopper-Pearson bound needs counts. ``radius_conservative`` in
    the result is the official formula with sigma0 in place of the stored sigma: RAB's radius for the noise that
    was drawn.

    :param estimator: A fitted :class:`~art_certssbd.CertSSBDEstimator` or ``RABEstimator`` (e.g. from
        :meth:`~art_certssbd.CertSSBDEstimator.from_official`); sigma0 is its ``scale``.
    :param x: Test inputs ``(N, *input_shape)``, in file order (the stored sigmas are matched by position).
    :param sigma_stored: The per-test-sample sigmas of the official sigma file
        (:func:`~art_certssbd.official.files.load_sigma_file`), shape ``(N,)``, or one value for all.
    :param n_assumed: The ``n`` of the Hoeffding margin ``sqrt(ln(1 / alpha) / (2 n))``: the official code's
        hard-coded 1000 by default; ``None`` uses the true number of votes (``estimator.nb_models``).
    :param alpha: Failure probability.
    :param noise: ``"official"``: member ``k``'s noise is ``float32(RandomState(seed_k).randn(1, *shape))``, what the
        official hash seeding draws for 224 px inputs and means to draw for MNIST (whose official runs used unseeded
        noise, see :func:`official_test_noise`); ``"estimator"``: the estimator's own fixed test noise, the ``e_k``
        of :meth:`certify`.
    :param batch_size: Inputs per pass.
    :param verbose: Progress bar.
    :return: A :class:`~art_certssbd.result.CertificationResult`: ``pred`` the argmax (never -1), ``radius`` the
        official signed radius, ``radius_conservative`` the radius with sigma0, ``sigma`` sigma0 (the noise used),
        ``p_a_lower`` ``max(1e-8, pA - margin)``, ``votes`` the summed scores.
    """
    if getattr(estimator, "ensemble_", None) is None:
        raise NotFittedError(NOT_FITTED.format(name=type(estimator).__name__))
    x = check_inputs(x, estimator.input_shape, estimator.clip_values)
    sigma_stored = np.asarray(sigma_stored, dtype=np.float64)
    if sigma_stored.ndim > 1 or (sigma_stored.ndim == 1 and sigma_stored.shape[0] != len(x)):
        raise ValueError(f"sigma_stored must be a scalar or have shape ({len(x)},), got shape {sigma_stored.shape}")
    if not np.all(np.isfinite(sigma_stored) & (sigma_stored > 0)):
        raise ValueError(f"sigma_stored must be finite and > 0, got min {float(np.min(sigma_stored))!r}")
    nb_models = estimator.ensemble_.nb_models
    if n_assumed is None:
        n_assumed = nb_models
    if isinstance(n_assumed, bool) or not isinstance(n_assumed, (int, np.integer)) or n_assumed < 1:
        raise ValueError(f"n_assumed must be a positive integer or None, got {n_assumed!r}")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if noise not in NOISE_SOURCES:
        raise ValueError(f"noise must be one of {NOISE_SOURCES}, got {noise!r}")
    device = estimator.ensemble_.device
    seeds = estimator.test_noise_seeds_
    if noise == "official":
        noise_fn = official_noise_fn(seeds)
    else:  # the estimator's own fixed test noise (the e_k of certify)

        def noise_fn(ks, draws, shape):
            return fixed_test_noise(seeds, ks, draws, shape, device)

    sigma0 = float(estimator.scale)
    x_t = torch.from_numpy(x).to(device)
    # Step 1: every member scores x + sigma0 * e_k (soft votes: summed softmax = sigmoid scores).
    sums = vote(
        estimator.ensemble_,
        x_t,
        torch.full((len(x),), sigma0, device=x_t.device, dtype=x_t.dtype),
        noise_fn,
        estimator.nb_classes,
        soft=True,
        batch_size=batch_size,
        vectorize=estimator.vectorize,
        verbose=verbose,
    )
    votes = sums.cpu().numpy()
    pred, radius, radius_sigma0, p_a_lower = reference_certificate(
        votes / nb_models, sigma_stored, sigma0, n_assumed, alpha
    )
    logger.info("reference preset: %d inputs, %d models, n_assumed=%d", len(x), nb_models, n_assumed)
    return CertificationResult(
        pred=pred,
        radius=radius,
        radius_conservative=radius_sigma0,
        sigma=np.full(len(x), sigma0),
        p_a_lower=p_a_lower,
        votes=votes,
        pred_before_memory=pred.copy(),
    )


def reference_certificate(mean_scores, sigma_stored, sigma0: float, n_assumed: int, alpha: float):
    """Steps 2-4 of the official evaluation, from the mean scores (soft votes) of the models.

    This is the official rule, reproduced line by line for comparison; it is not a certificate of this package
    (every estimator path, and the "ours" rows of the official benchmark, use
    :func:`art_certssbd.certification.certify_votes`).

    :param mean_scores: ``(N, C)`` mean softmax scores over the models.
    :param sigma_stored: Per-input sigma of the radius, ``(N,)`` or a scalar.
    :param sigma0: The noise level of the votes (gives the second radius).
    :param n_assumed: ``n`` of the Hoeffding margin.
    :param alpha: Failure probability.
    :return: ``(pred, radius, radius_sigma0, p_a_lower)``: argmax (no abstain), the official signed radius with
        ``sigma_stored``, the same with ``sigma0``, and ``max(1e-8, pA - margin)``.
    """
    gx = np.asarray(mean_scores, dtype=np.float64)
    # Step 2: pA = top score, pB = runner-up, prediction = argmax (eval.py l. 108-115).
    pred = gx.argmax(axis=1)
    p_a = gx[np.arange(len(pred)), pred]
    p_b = np.where(np.arange(gx.shape[1])[None, :] == pred[:, None], -1.0, gx).max(axis=1)
    # Step 3: Hoeffding with n = n_assumed, clamped to [1e-8, 1 - 1e-8] (eval.py l. 39-41).
    margin = np.sqrt(np.log(1.0 / alpha) / 2.0 / n_assumed)
    p_a_lower = np.maximum(1e-8, p_a - margin)
    p_b_upper = np.minimum(1.0 - 1e-8, p_b + margin)
    # Step 4: the radius with the stored sigma (eval.py l. 45), and with sigma0; no abstain.
    gap = ndtri(p_a_lower) - ndtri(p_b_upper)
    radius = 0.5 * np.asarray(sigma_stored, dtype=np.float64) * gap * np.ones(len(pred))
    return pred.astype(np.int64), radius, 0.5 * float(sigma0) * gap, p_a_lower


def official_certified_accuracy(pred, radius, y, radii) -> np.ndarray:
    """Certified accuracy as the official ``eval.py`` counts it: ``mean((radius > r) & (pred == y))`` per ``r``
    (strict inequality, no abstain; a negative radius never counts).

    :param pred: Predictions ``(N,)``.
    :param radius: Signed radii ``(N,)`` (e.g. :func:`certify_reference`'s).
    :param y: Labels ``(N,)`` (the official triggered row uses the target class 0 for every input).
    :param radii: Radii to report at.
    :return: One fraction per radius.
    """
    pred, radius, y = np.asarray(pred), np.asarray(radius, dtype=float), np.asarray(y)
    if pred.ndim != 1 or radius.shape != pred.shape or y.shape != pred.shape or pred.size == 0:
        raise ValueError(
            f"pred, radius and y must be non-empty 1-D arrays of one length, got {pred.shape}, "
            f"{radius.shape}, {y.shape}"
        )
    radii = np.asarray(radii, dtype=float).reshape(-1)
    return ((radius[None, :] > radii[:, None]) & (pred == y)[None, :]).mean(axis=1)
