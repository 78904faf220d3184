"""The shared ART shell of :class:`CertSSBDEstimator` and :class:`RABEstimator`: ART's API over the chains.

Both are ART randomized-smoothing classifiers (:class:`RandomizedSmoothingMixin` + :class:`PyTorchClassifier`). The
layout, from the framework down::

    estimator.py      CertSSBDEstimator (adds the sigma_* parameters), RABEstimator (this shell, fixed sigma)
    _shell.py         the parameters (one constructor), fit / predict / certify / certify_adaptive -> chains
    _art.py           the parameters' contract: checks, get/set_params, clone, fit_generator, pickle
    _networks.py      ART's calls on a network: model, loss_gradient, compute_loss, get_activations
    _persistence.py   save / save_ensemble / load_ensemble -> saved.py (the checkpoint format) <-> FittedEnsemble
    _certifiable.py   max_certifiable_radius and the "can never certify" warnings (after every _check_params)
    chains.py         the algorithm without ART: the fit, certify, predict and adaptive chains over the record
    execution.py      Executor (local / Ray / streamed, decided once per call), SigmaSearch, VoteSettings
    fitted.py         FittedEnsemble, the one fitted record (``fitted_``); the fitted attributes read it

The mixins share no private methods: each reads the fitted state through the record (``require_fitted(self)``) and
the parameters through their public attributes; ``_check_params`` is ART's cooperative hook.

The shell holds no algorithm: it checks ART's arguments, builds the chains' settings from its parameters and keeps
the record. Parameter names follow ART in the shell (``scale`` = sigma0, ``alpha``, ``nb_classes``, ``nb_models``)
and the paper in the core (``sigma``, ``n``, ``p_a_lower``).

| Paper link: https://arxiv.org/abs/2504.21730 (Cert-SSBD), https://arxiv.org/abs/2003.08904 (RAB)
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import torch
from art.estimators.certification.randomized_smoothing.randomized_smoothing import RandomizedSmoothingMixin
from art.estimators.classification.pytorch import PyTorchClassifier

from art_certssbd import chains
from art_certssbd._art import ENSEMBLE_PARAMS, SIGMA_PARAMS, ArtContractMixin
from art_certssbd._certifiable import CertifiableRadiusMixin
from art_certssbd._networks import NetworkMixin
from art_certssbd._persistence import PersistenceMixin
from art_certssbd._validation import check_bool, check_inputs, check_int, check_labels
from art_certssbd.budget import check_budgets
from art_certssbd.certification import check_options
from art_certssbd.checkpoint import EnsembleCheckpoint
from art_certssbd.execution import Executor, SigmaSearch, VoteSettings
from art_certssbd.fitted import fitted_attribute, require_fitted
from art_certssbd.growth import Growth, check_growth
from art_certssbd.sequential import AdaptiveResult, check_radius
from art_certssbd.training import optimizer_factory_from


class SmoothedEnsembleEstimator(
    CertifiableRadiusMixin,
    ArtContractMixin,
    NetworkMixin,
    PersistenceMixin,
    RandomizedSmoothingMixin,
    PyTorchClassifier,
):
    """The shared shell; see :class:`CertSSBDEstimator` for the parameters."""

    estimator_params = PyTorchClassifier.estimator_params + ENSEMBLE_PARAMS
    # fixed sigma unless a subclass exposes the sigma parameters
    sigma_steps, sigma_lr, sigma_samples, sigma_bounds, sigma_update, use_memory = 0, 0.0, 1, None, "gradient", False
    sigma_tol, sigma_patience = None, 3

    def __init__(
        self,
        model,
        loss,
        input_shape,
        nb_classes,
        optimizer=None,
        channels_first=True,
        clip_values=None,
        preprocessing_defences=None,
        postprocessing_defences=None,
        preprocessing=(0.0, 1.0),
        device_type="gpu",
        *,
        nb_models=100,
        scale=0.12,
        alpha=0.001,
        bound="clopper-pearson",
        draws_per_model=1,
        noise="fixed",
        warmup_epochs=0,
        vectorize=True,
        memory_budget=2**30,
        amp=None,
        compile=False,
        executor="local",
        random_state=None,
        verbose=False,
        sample_size=None,
    ):
        self.nb_models, self.draws_per_model, self.bound, self.noise = nb_models, draws_per_model, bound, noise
        self.warmup_epochs, self.vectorize, self.memory_budget = warmup_epochs, vectorize, memory_budget
        self.amp, self.compile, self.executor = amp, compile, executor
        self.random_state, self.verbose = random_state, verbose
        super().__init__(model=model, loss=loss, input_shape=input_shape, nb_classes=nb_classes, optimizer=optimizer,
                         channels_first=channels_first, clip_values=clip_values,
                         preprocessing_defences=preprocessing_defences, postprocessing_defences=postprocessing_defences,
                         preprocessing=preprocessing, device_type=device_type, sample_size=sample_size, scale=scale,
                         alpha=alpha)  # fmt: skip
        self._check_params()

    # -------------------------------------------------------------------------------------------- fitted state
    ensemble_ = fitted_attribute("members", "The members (a StackedEnsemble, or a SavedEnsemble read from disk).")
    train_sigma_ = fitted_attribute("train_sigma", "The training sigmas sigma_j.")
    random_state_ = fitted_attribute("random_state", "The run's seed.")
    test_noise_seeds_ = fitted_attribute("test_noise_seeds", "Member k's test-noise seed.")
    nb_models_ = fitted_attribute(
        "nb_models", "The fitted number of members (fewer than nb_models after a growth rule)."
    )
    growth_history_ = fitted_attribute("growth_history", "The growth rule's history (None: an ensemble of fixed size).")
    train_noise_copies_ = fitted_attribute("train_noise_copies", "Noisy copies of each training sample one member saw.")
    memory_ = fitted_attribute("memory", "The storage-update memory (None with use_memory=False).")

    def certificate_options(self) -> dict[str, Any]:
        """Step 6's options, from the parameters and the fitted state: the keyword arguments of
        :func:`art_certssbd.certification.certify_votes` (``alpha``, ``bound``, ``draws_per_model``,
        ``train_sigma_min``, ``noise_copies``; :meth:`FittedEnsemble.certificate_options
        <art_certssbd.fitted.FittedEnsemble.certificate_options>`), e.g. to certify stored vote counts again with
        another bound::

            certify_votes(result.votes, result.sigma, **{**est.certificate_options(), "bound": "hoeffding"})
        """
        return require_fitted(self).certificate_options(self.alpha, self.bound, self.draws_per_model)

    # ------------------------------------------------------------------------------------- the chains' settings
    def _checkpoint_config(
        self, random_state: int, x: np.ndarray, y: np.ndarray, batch_size: int, nb_epochs: int
    ) -> dict:
        """:func:`~art_certssbd.chains.checkpoint_config` of this estimator's parameters."""
        keys = ENSEMBLE_PARAMS + SIGMA_PARAMS + ["nb_classes", "input_shape"]
        params = {key: getattr(self, key) for key in keys}
        return chains.checkpoint_config(params, random_state=random_state, x=x, y=y, batch_size=batch_size,
                                        nb_epochs=nb_epochs, model=self.base_model,
                                        optimizer=self._optimizer)  # fmt: skip

    def _search(self, executor: Executor) -> SigmaSearch:
        """The sigma optimiser's settings, from the parameters."""
        return SigmaSearch(self.scale, self.sigma_steps, self.sigma_lr, self.sigma_samples, self.sigma_bounds,
                           self.sigma_update, self.sigma_tol, self.sigma_patience, self.amp, executor)  # fmt: skip

    def _vote_settings(self) -> VoteSettings:
        return VoteSettings(self.nb_classes, self.draws_per_model, self.vectorize, self.amp, self.compile)

    # ------------------------------------------------------------------------------------------------- fitting
    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int = 128,
        nb_epochs: int = 10,
        checkpoint_dir: str | os.PathLike | None = None,
        verbose: bool | None = None,
        growth: Growth | None = None,
        **kwargs,
    ) -> None:
        """Train the smoothed ensemble on a (possibly poisoned) training set.

        :param x: Training inputs, shape ``(N, *input_shape)``, within ``clip_values``.
        :param y: Labels in any format ART's ``PyTorchClassifier.fit`` accepts: indices ``(N,)`` or ``(N, 1)``
               (integers, or floats holding whole numbers), or a ``(N, nb_classes)`` matrix (one-hot, soft labels,
               all-zero rows) read as its row-wise argmax, as ART does; at least two classes.
        :param batch_size: Mini-batch size.
        :param nb_epochs: Epochs per ensemble member.
        :param checkpoint_dir: Directory where each finished member is stored; a second call with the same directory
               and configuration resumes and ends with the same ensemble as an uninterrupted run.
        :param verbose: Progress bars (default: the estimator's ``verbose``).
        :param growth: Grow the ensemble in waves and stop early by the rule of a
               :class:`~art_certssbd.growth.Growth` (certified accuracy at a radius on a validation set); needs
               ``bound="anytime"``, the only bound valid when the ensemble's size depends on its votes. The size
               reached is ``nb_models_`` and the rule's history ``growth_history_``.
        :param kwargs: ART's ``PyTorchClassifier.fit`` options (``training_mode``, ``drop_last``, ``scheduler``) are
               ignored with a ``UserWarning``: each member gets its own optimiser and shuffled mini-batches.
        """
        verbose = self.verbose if verbose is None else verbose
        if kwargs:
            warnings.warn(
                f"fit ignores the arguments {sorted(kwargs)} (options of ART's PyTorchClassifier.fit that the ensemble "
                "training does not use)",
                UserWarning,
                stacklevel=2,
            )
        x = check_inputs(x, self.input_shape, self.clip_values)
        y = check_labels(y, x.shape[0], self.nb_classes)
        if np.unique(y).size < 2:
            raise ValueError(f"y must hold at least two classes, got only class {int(y[0])}")
        batch_size, nb_epochs = check_int(batch_size, "batch_size"), check_int(nb_epochs, "nb_epochs")
        growth = check_growth(growth, self.bound, self.input_shape, self.clip_values, self.nb_classes)
        check_options(self.bound, self.draws_per_model)  # again: an attribute set directly skips _check_params
        if self._optimizer is None:
            raise ValueError("optimizer is None: an optimizer is needed to train the ensemble")
        chains.check_output(self.base_model, x[:1], self.nb_classes, self.input_shape, self._device)
        random_state = chains.run_seed(self.random_state, checkpoint_dir)  # None resolved: a checkpoint's or fresh
        store = (
            None
            if checkpoint_dir is None
            else EnsembleCheckpoint(checkpoint_dir, self._checkpoint_config(random_state, x, y, batch_size, nb_epochs))
        )
        x_t, y_t = torch.from_numpy(x).to(self._device), torch.from_numpy(y).to(self._device)
        base, record = chains.fit(
            self.base_model,
            x_t,
            y_t,
            random_state=random_state,
            search=self._search(Executor(self.executor)),
            votes=self._vote_settings(),
            nb_models=self.nb_models,
            noise=self.noise,
            warmup_epochs=self.warmup_epochs,
            loss_fn=self._loss,
            optimizer_factory=optimizer_factory_from(self._optimizer),
            nb_epochs=nb_epochs,
            batch_size=batch_size,
            members_per_chunk=max(1, self.memory_budget // max(1, x.nbytes)) if self.vectorize else 1,
            store=store,
            growth=growth,
            alpha=self.alpha,
            use_memory=self.use_memory,
            verbose=verbose,
        )
        # Everything succeeded: commit the fitted state.
        self.base_model.load_state_dict(base.state_dict())
        self.base_model.eval()
        self.fitted_ = record
        self.__dict__.pop("_reset_by", None)  # a set_params reset, now refitted

    # ---------------------------------------------------------------------------------------------- prediction
    def _test_sigma(self, x_t: torch.Tensor, verbose: bool, search: SigmaSearch) -> torch.Tensor:
        """Test step 4: the sigma of each test input (:func:`~art_certssbd.chains.test_sigma`)."""
        return chains.test_sigma(require_fitted(self), self.base_model, x_t, search, verbose)

    def _votes(self, x: np.ndarray, n: int | None, batch_size: int, verbose: bool):
        """Validate ``x`` and return ``(x, sigma_x, counts)`` as numpy arrays (test steps 4 and 5)."""
        record = require_fitted(self)
        x = check_inputs(x, self.input_shape, self.clip_values, allow_empty=True)
        chains.check_vote_count(n, self.sample_size, self.nb_models, self.draws_per_model)
        batch_size = check_int(batch_size, "batch_size")
        if len(x) == 0:  # an empty batch: empty results, as ART's
            return x, np.zeros(0), np.zeros((0, self.nb_classes), dtype=np.int64)
        executor = Executor(self.executor, record.members)  # decided once for both steps
        x_t = torch.from_numpy(x).to(self._device)
        sigma_x = self._test_sigma(x_t, verbose, self._search(executor))
        counts = chains.count_votes(record, x_t, sigma_x, executor, self._vote_settings(), nb_votes=n,
                                    batch_size=batch_size, verbose=verbose)  # fmt: skip
        return x, sigma_x.cpu().numpy().astype(np.float64), counts.cpu().numpy()

    def predict(self, x: np.ndarray, batch_size: int = 128, verbose: bool = False, **kwargs) -> np.ndarray:
        """Smoothed prediction, in ART's format: one-hot rows, all-zero rows where the ensemble abstains.

        :param x: Inputs, shape ``(N, *input_shape)``.
        :param batch_size: Inputs per pass.
        :param verbose: Progress bars.
        :param is_abstain: ``False`` to return the majority vote even where the bound does not allow a decision.
        :return: Array of shape ``(N, nb_classes)``.

        With ``use_memory=True`` the answer agrees with the stored regions: it is the class :meth:`certify` would
        return with ``update_memory=False`` at this moment (an input inside a stored region of another label gets
        that region's label), and ``predict`` stores nothing. With ``is_abstain=False``, the majority vote, except
        inside a stored region of another label, which gives that region's label.
        """
        is_abstain = kwargs.get("is_abstain")  # None: True; anything else but a bool raises, as in ART
        is_abstain = True if is_abstain is None else check_bool(is_abstain, "is_abstain")
        x, sigma_x, counts = self._votes(x, None, batch_size, verbose)
        return chains.predict(self.fitted_, x, sigma_x, counts, alpha=self.alpha, bound=self.bound,
                              draws_per_model=self.draws_per_model, is_abstain=is_abstain,
                              nb_classes=self.nb_classes)  # fmt: skip

    def certify(
        self,
        x: np.ndarray,
        n: int | None = None,
        batch_size: int = 128,
        *,
        return_details: bool = False,
        update_memory: bool = True,
        verbose: bool | None = None,
        budgets=None,
    ):
        """Certify each input: the smoothed prediction and the L2 radius within which no backdoor can change it.

        The certificate is :func:`art_certssbd.certification.certify_votes` (then the storage-update step). What it
        conditions on: the training sigmas ``sigma_j`` are computed from the (possibly poisoned) training data through
        a base model trained on it, so a trigger can move them; like the paper, the certificate holds *conditionally on
        the realised training sigmas* (and on ``sigma_x``, chosen from the test input), with probability at least
        ``1 - alpha`` over the members' training and test noise. Given them, ``radius_conservative`` (``min(sigma_x,
        min_j sigma_j) * Phi^-1(p_a_lower)``) covers any stacked training + test trigger of smaller total L2 norm;
        ``radius`` (``sigma_x * Phi^-1(p_a_lower)``, the paper's) covers a test-time trigger of that norm alone, and
        in general the anisotropic ball ``sum_j ||delta_j||^2 / sigma_j^2 + ||delta_x||^2 / sigma_x^2 <
        (radius / sigma_x)^2``. With ``noise="fresh"`` both radii are divided by ``sqrt(nb_epochs)`` (each member saw
        every training sample ``nb_epochs`` times). Details: ``docs/guarantees.md``.

        In the attacker's units (:mod:`art_certssbd.budget`): the prediction is certified against ``k`` poisoned
        training samples with triggers of L2 norm at most ``delta`` each and a test trigger of norm at most
        ``delta_x`` iff ``delta^2 S_k + delta_x^2 / sigma_x^2 < (radius / sigma_x)^2``, ``S_k`` the sum of the ``k``
        largest ``1 / sigma_j^2`` over the training sigmas ``train_sigma_`` (all ``scale`` for RAB: ``delta <
        radius / sqrt(k + 1)``), or when the stacked budget ``k delta^2 + delta_x^2`` is below
        ``radius_conservative^2``. The detailed result answers it for any budget (``certified_at_budget``,
        ``certified_accuracy_at_budget``, ``k_max``, ``delta_max``) and holds the decisions for ``budgets``.

        :param x: Inputs, shape ``(N, *input_shape)``.
        :param n: Number of votes (default: all ``nb_models * draws_per_model``).
        :param batch_size: Inputs per pass.
        :param return_details: Return a :class:`CertificationResult` instead of ``(pred, radius)``.
        :param update_memory: Store the certified regions in the memory (``use_memory=True`` only); ``False`` only
               trims against it.
        :param verbose: Progress bars (default: the estimator's ``verbose``).
        :param budgets: Attacker budgets to decide per input (``return_details`` only): each a
               :class:`~art_certssbd.budget.Budget`, ``(k, delta)``, ``(k, delta, delta_x)`` or a dict with those keys
               (``delta_x`` defaults to ``delta``); the decisions are ``result.budget_certified``, ``(N, B)``. A ``k``
               above the training set's size is refused before any work.
        :return: ``(pred, radius)`` with ``pred = -1`` and ``radius = 0`` on abstain, or a :class:`CertificationResult`
                 (holding the training sigmas, for the budget certificate).
        """
        verbose = self.verbose if verbose is None else verbose
        require_fitted(self)
        budgets = check_budgets(budgets, len(self.train_sigma_))  # before any work: a refused call changes nothing
        if budgets and not return_details:
            raise ValueError("budgets needs return_details=True (the decisions are result.budget_certified)")
        x, sigma_x, counts = self._votes(x, n, batch_size, verbose)
        self._warn_if_never_certifies(n, "certify: ")
        result = chains.certify(self.fitted_, x, sigma_x, counts, alpha=self.alpha, bound=self.bound,
                                draws_per_model=self.draws_per_model, n=n, update_memory=update_memory,
                                budgets=budgets, details=return_details)  # fmt: skip
        return result if return_details else (result.pred, result.radius)

    def certify_adaptive(
        self,
        x: np.ndarray,
        radius: float,
        *,
        alpha: float | None = None,
        looks=None,
        first_look: int = 32,
        growth: float = 2.0,
        spending="uniform",
        futility_alpha: float | None = 0.01,
        conservative: bool = False,
        batch_size: int = 128,
        update_memory: bool = True,
        verbose: bool | None = None,
    ) -> AdaptiveResult:
        """Decide per input "certified at ``radius``" or "abstain" with as few votes as a valid sequential test
        allows: the members vote in looks, each look only on the inputs still undecided, and each look is certified
        by :meth:`certify`'s certificate (its ``bound``, ``draws_per_model``, training sigmas and training noise
        copies) at that look's level (guarantee, schedule and spending rules in :mod:`art_certssbd.sequential`).
        With ``draws_per_model > 1`` the looks are multiples of ``draws_per_model``. With ``bound="anytime"`` the
        members vote one at a time and every look uses the whole level (a confidence sequence holds at every number
        of votes at once), so an input stops as soon as its votes allow.

        With ``use_memory=True`` each answer then goes through the storage-update step, in input order
        (:func:`~art_certssbd.sequential.apply_memory_adaptive`): a certified answer is trimmed against the stored
        regions like a :meth:`certify` certificate (with the radii of its deciding look); it stays certified only if
        the trimmed radius still reaches ``radius`` (inside a stored region of another label, with that region's
        label), and then, with ``update_memory``, its ball is stored; otherwise it becomes an abstention.

        :param x: Inputs, shape ``(N, *input_shape)``.
        :param radius: The radius ``r`` to certify.
        :param alpha: Overall error probability (default: the estimator's ``alpha``).
        :param looks: Cumulative vote counts of the looks, multiples of ``draws_per_model`` (default
               :func:`~art_certssbd.sequential.look_schedule` from ``first_look`` and ``growth``; every vote with
               ``bound="anytime"``).
        :param first_look: Votes of the first look (rounded up to whole members).
        :param growth: Ratio between consecutive looks.
        :param spending: Split of ``alpha`` over the looks (:func:`~art_certssbd.sequential.spending_levels`).
        :param futility_alpha: Level of the early-abstention bound (``None``: only when certification is impossible).
        :param conservative: Test the conservative radius (``min(sigma_x, min_j sigma_j)`` in place of ``sigma_x``);
               :attr:`AdaptiveResult.radius_bound` is then the conservative radius.
        :param batch_size: Inputs per pass.
        :param update_memory: Store the regions of the certified answers (``use_memory=True`` only); ``False`` only
               trims against the stored regions.
        :param verbose: Progress bars (default: the estimator's ``verbose``).
        :return: An :class:`~art_certssbd.sequential.AdaptiveResult` (``certified``, ``pred``, ``votes_used``, ...).
        """
        record = require_fitted(self)
        radius = check_radius(radius)
        update_memory = check_bool(update_memory, "update_memory")
        verbose = self.verbose if verbose is None else verbose
        record.check_bound(self.bound)  # a grown ensemble refuses any bound but "anytime", before any work
        alpha = self.alpha if alpha is None else alpha
        x = check_inputs(x, self.input_shape, self.clip_values, allow_empty=True)
        batch_size = check_int(batch_size, "batch_size")
        looks = chains.adaptive_looks(looks, record.nb_models, self.draws_per_model, self.bound, first_look, growth)
        executor = Executor(self.executor, record.members)  # decided once for every look
        x_t = torch.from_numpy(x).to(self._device)
        sigma_t = self._test_sigma(x_t, verbose, self._search(executor))
        self._warn_if_out_of_reach(sigma_t.cpu().numpy().astype(np.float64), radius, int(looks[-1]), alpha)
        return chains.certify_adaptive(record, x, x_t, sigma_t, executor, self._vote_settings(), radius=radius,
                                       alpha=alpha, bound=self.bound, looks=looks, spending=spending,
                                       futility_alpha=futility_alpha, conservative=conservative,
                                       batch_size=batch_size, update_memory=update_memory)  # fmt: skip
