"""ART estimators: :class:`CertSSBDEstimator` (sample-specific sigma) and :class:`RABEstimator` (fixed sigma).

Both are ART randomized-smoothing classifiers (``RandomizedSmoothingMixin`` + ``PyTorchClassifier``) over the
shared shell :mod:`art_certssbd._shell` (the layout is drawn there): :class:`RABEstimator` is the shell itself (one
fixed sigma, ``scale``), :class:`CertSSBDEstimator` adds the sigma optimiser's parameters and the memory. The
algorithm lives in :mod:`art_certssbd.chains`, the fitted state in :class:`~art_certssbd.fitted.FittedEnsemble`.

| Paper link: https://arxiv.org/abs/2504.21730 (Cert-SSBD), https://arxiv.org/abs/2003.08904 (RAB)
"""

from __future__ import annotations

import inspect
import os
import warnings

import numpy as np
import torch

from art_certssbd._art import SIGMA_PARAMS
from art_certssbd._certifiable import caller_level
from art_certssbd._shell import SmoothedEnsembleEstimator
from art_certssbd._validation import check_choice, check_int, check_nonnegative, check_pair, check_positive
from art_certssbd.ensemble import StackedEnsemble
from art_certssbd.fitted import FittedEnsemble
from art_certssbd.memory import CertificationMemory
from art_certssbd.models import BinaryLogitAdapter, MnistCNN
from art_certssbd.official.files import load_official_ensemble
from art_certssbd.sigma import SIGMA_UPDATES


class CertSSBDEstimator(SmoothedEnsembleEstimator):
    """Cert-SSBD: a certified backdoor defence by randomized smoothing with sample-specific noise (Qiao et al.).

    ``fit`` warms up the wrapped model at ``scale``, optimises one sigma per training sample by stochastic gradient
    ascent on a radius surrogate, and trains ``nb_models`` models from scratch on ``x_i + sigma_i * b_k``.
    ``certify`` optimises ``sigma_x`` per test input, lets every member vote on ``x + sigma_x * e_k``, bounds the top
    class's probability and returns the radius, trimmed by the storage-update memory.

    :param model: PyTorch model returning logits ``(N, nb_classes)``: the architecture of every member. ``fit``
           re-initialises each copy by its modules' ``reset_parameters`` under seeds drawn from ``random_state`` (so
           incoming weights are not used, as in scikit-learn); afterwards ``base_model`` holds the base model,
           warmed up for ``warmup_epochs`` at ``scale``, that the sigma optimiser uses, and ``model`` is the fitted
           ensemble as one differentiable module, for ART's attacks that read it (``get_activations``, which ART's
           poison detectors read, uses a trained member; see the user guide, "ART conventions").
    :param loss: Training loss on ``(logits, labels)``, e.g. ``torch.nn.CrossEntropyLoss()``.
    :param input_shape: Shape of one input, e.g. ``(1, 28, 28)``.
    :param nb_classes: Number of classes (2 or more).
    :param optimizer: Optimiser of ``model``; each member gets a new one of the same type and defaults.
    :param channels_first: ART's layout flag.
    :param clip_values: ``(min, max)`` of valid inputs; inputs outside are refused.
    :param preprocessing_defences: Not supported (``None``).
    :param postprocessing_defences: Not supported (``None``).
    :param preprocessing: Only the identity ``(0, 1)``: normalise inside the model.
    :param device_type: ``"gpu"`` (CUDA when available, else CPU, as in ART) or ``"cpu"``.
    :param nb_models: Ensemble size M.
    :param scale: sigma0, the starting (and minimum) noise magnitude.
    :param alpha: Failure probability of the certificate.
    :param bound: ``"clopper-pearson"`` (default) or ``"hoeffding"``.
    :param draws_per_model: Test noise draws per member (votes = ``nb_models * draws_per_model``).
    :param noise: ``"fixed"`` training noise per member (default, RAB / the paper) or ``"fresh"`` per batch.
    :param warmup_epochs: Epochs of the base model at ``scale`` before the sigma optimisation.
    :param vectorize: Train and vote with ``torch.func.vmap`` over stacked members (default) or loop over them.
    :param memory_budget: Bytes of fixed training noise held at once (sets how many members train together), and,
           for an ensemble loaded with ``load_ensemble(..., stream=True)``, of member weights held while voting.
    :param amp: Mixed precision of every forward pass: the warm-up, the sigma optimiser, the members' training
           (``fit``) and the votes (``certify``, ``predict``, ``certify_adaptive``): ``"bf16"`` or ``"fp16"``
           autocast on CUDA, and ``"bf16"`` on a CPU with native bfloat16 (AVX512-BF16 or AMX, detected from
           ``/proc/cpuinfo``, overridable with ``ART_CERTSSBD_NATIVE_BF16=0|1``; elsewhere a ``ValueError`` says
           why); ``None`` (default) is float32. Reduced precision changes the trained weights slightly and can flip
           near-tie votes; a checkpoint records it, so a resume never mixes float32 and bfloat16 members. To train in
           float32 and vote in bfloat16, fit with ``amp=None`` and ``set_params(amp="bf16")`` after (the fitted
           ensemble is kept).
    :param compile: ``torch.compile`` the members' forward pass for the votes (CUDA or CPU; the first call compiles,
           for a few seconds, and needs a C++ compiler on CPU). Votes equal the eager ones up to float rounding.
    :param executor: Where the work runs: ``"local"`` (default), or ``"ray"`` / a
           :class:`~art_certssbd.ray_backend.RayExecutor` to train the members, optimise the sigmas and vote as Ray
           tasks (``pip install 'art-certssbd[ray]'``; the same ensemble, sigmas and certificates, see
           ``docs/cluster.md``).
    :param random_state: Seed of everything random; ``None`` draws one (stored in ``random_state_``).
    :param verbose: Progress bars.
    :param sample_size: Only ``None``: ART's name for the noise draws per input, which here are the votes
           ``nb_models * draws_per_model`` (the read-only attribute ``sample_size``); any other value raises a
           ``ValueError`` pointing to ``nb_models``.
    :param sigma_steps: SGA steps T per sample (0 = fixed sigma, RAB).
    :param sigma_lr: SGA step size.
    :param sigma_samples: Noise draws S per SGA step.
    :param sigma_bounds: ``(low, high)`` bounds on sigma (default ``(scale, 4 * scale)``).
    :param sigma_update: ``"gradient"`` (true gradient) or ``"reference"`` (the official detached update).
    :param sigma_tol: Stop each sample's SGA early once its sigma has settled (``None``, the default: every sample
           runs all ``sigma_steps`` steps). A step is settled when it moves the sample's sigma by less than
           ``sigma_tol * scale``, or when a bound of ``sigma_bounds`` holds the sigma against the step; a sample
           stops after ``sigma_patience`` settled steps in a row and costs no pass after that
           (:func:`~art_certssbd.sigma.optimize_sigma` with ``early_stop=True``). It applies to the training and the
           test sigmas alike. ``0`` stops only samples held at a bound. What it saves depends on the task: with
           ``1e-2``, 54 % of the SGA passes on the 8x8 digits (mean sigma change 0.09 ``scale``,
           ``benchmarks/results/sigma-early-stop.md``), 0.5 % on MNIST 1 vs 0, where the sigmas still climb at the
           last step (``sigma-cost-cpu.md``; there ``sigma_samples=4`` is the cheap setting). The certificate
           conditions on the sigmas, so it stays valid whatever the rule.
    :param sigma_patience: Settled steps in a row after which a sample stops (with ``sigma_tol`` only).
    :param use_memory: The storage-update memory of certified regions, consulted by ``certify``, ``certify_adaptive``
           and ``predict`` (``docs/guarantees.md``, "The memory on every answer").

    | Paper link: https://arxiv.org/abs/2504.21730
    """

    estimator_params = SmoothedEnsembleEstimator.estimator_params + SIGMA_PARAMS

    def __init__(
        self,
        *args,
        warmup_epochs=2,
        sigma_steps=30,
        sigma_lr=5e-3,
        sigma_samples=16,
        sigma_bounds=None,
        sigma_update="gradient",
        sigma_tol=None,
        sigma_patience=3,
        use_memory=True,
        **kwargs,
    ):
        # the sigma parameters first: the shell's constructor ends with _check_params, which reads them
        self.sigma_steps, self.sigma_lr, self.sigma_samples = sigma_steps, sigma_lr, sigma_samples
        self.sigma_bounds, self.sigma_update, self.sigma_tol = sigma_bounds, sigma_update, sigma_tol
        self.sigma_patience, self.use_memory = sigma_patience, use_memory
        super().__init__(*args, warmup_epochs=warmup_epochs, **kwargs)

    def _check_sigma_params(self) -> None:
        """Check the sigma optimiser's parameters (called by ``_check_params``)."""
        check_choice(self.sigma_update, "sigma_update", SIGMA_UPDATES)
        check_int(self.sigma_steps, "sigma_steps", minimum=0)
        check_int(self.sigma_samples, "sigma_samples")
        if self.sigma_steps:
            check_positive(self.sigma_lr, "sigma_lr")
        if self.sigma_tol is not None:
            check_nonnegative(self.sigma_tol, "sigma_tol")
        check_int(self.sigma_patience, "sigma_patience")
        if self.sigma_bounds is not None:
            low, high = check_pair(self.sigma_bounds, "sigma_bounds")
            if not (check_positive(low, "sigma_bounds[0]") <= self.scale <= check_positive(high, "sigma_bounds[1]")):
                raise ValueError(f"sigma_bounds must satisfy low <= scale <= high, got {self.sigma_bounds!r}")
            if self.sigma_steps and low < self.scale:
                warnings.warn(
                    f"sigma_bounds={self.sigma_bounds!r} starts below scale={self.scale!r}: the sigma optimiser may "
                    "give samples less noise than sigma0 (by default sigma0 is the minimum), which shrinks the "
                    "conservative radius and weakens the smoothing of a trigger",
                    UserWarning,
                    stacklevel=caller_level(),
                )

    @classmethod
    def from_official(
        cls,
        directory: str | os.PathLike,
        nb_models: int | None = None,
        scale: float = 0.12,
        *,
        alpha: float = 0.001,
        bound: str = "clopper-pearson",
        clip_values: tuple[float, float] | None = (0.0, 1.0),
        device_type: str = "gpu",
        random_state: int = 0,
        use_memory: bool = True,
        train_noise_copies: int = 1,
        memory_budget: int = 2**30,
        amp: str | None = None,
        compile: bool = False,
        executor="local",
        verbose: bool = False,
        **sigma_params,
    ) -> CertSSBDEstimator:
        """A *fitted* estimator holding the official MNIST ensemble (the released Cert-SSB checkpoints).

        The members are the official one-logit CNNs behind :class:`~art_certssbd.models.BinaryLogitAdapter`
        (``nb_classes=2``, ``input_shape=(1, 28, 28)``; softmax = ``[1 - sigmoid, sigmoid]``, class 1 = digit 1).
        The fitted state is set as ``fit`` would set it:

        * ``ensemble_``: the checkpoints ``smoothed_0.model`` ... in numeric order, stacked;
        * ``test_noise_seeds_``: the official per-model seeds ``sha256(file) mod 2**32``
          (:func:`~art_certssbd.official.files.official_model_seed`); :meth:`certify` draws member ``k``'s test
          noise from a torch generator with that seed, :func:`~art_certssbd.official.evaluation.certify_reference`
          (``noise="official"``) from numpy's legacy generator as the official ``fix_pert``;
        * ``train_sigma_``: **a stand-in**, the one-element array ``[scale]``. The official training sigmas are not
          released (nor is the training code). What is known: training starts every sample at sigma0 and the
          official update ``s += lr * |gap| / 2`` never decreases it, so the true ``min_j sigma_j`` is at least
          sigma0 = ``scale``. The conservative radius uses ``min(sigma_x, min_j sigma_j)``; with ``scale`` in place
          of ``min_j sigma_j`` it is never larger than with the true (unknown) value, so it stays conservative;
        * ``base_model``: member 0. No base model is released; it is used only by the sigma optimiser when
          ``sigma_steps > 0`` (``model`` is the ensemble as one module, as after ``fit``);
        * ``train_noise_copies_ = train_noise_copies``: **an assumption**, the number of noisy copies of each
          training sample one member was trained on (both radii are divided by its square root; ``noise`` is set to
          ``"fixed"`` for 1 and ``"fresh"`` above). The Cert-SSB repositories release no training code. RAB's
          released training code, which Cert-SSB builds on (``train.py`` with ``utils.SmoothedDataset``, commit
          ac0278d), draws each member's noise *once* per training sample, when the member's dataset is built (the
          per-item fresh-noise lines are commented out): one copy, the default. If the official models were in fact
          trained with new noise at every epoch, pass their number of epochs (20 for MNIST in the paper), which
          divides the radii by ``sqrt(20)``;
        * ``random_state_ = random_state`` (seeds the sigma optimiser's noise), ``memory_``: empty when
          ``use_memory``.

        With the default ``sigma_steps=0``, :meth:`certify` is our sound certificate on these models *given* the
        training noise assumed by ``train_noise_copies``: hard votes on ``x + scale * e_k``, ``bound``
        (Clopper-Pearson), radius with ``scale`` (RAB's certificate). See
        :func:`~art_certssbd.official.evaluation.certify_reference` for the official evaluation.

        :param directory: Folder with ``smoothed_{k}.model`` (e.g. ``model/mnist/onepixel/sigma0.12``).
        :param nb_models: Use the first ``nb_models`` checkpoints (default: all).
        :param scale: sigma0 of the checkpoints (0.12 for ``sigma0.12``).
        :param alpha: Failure probability of :meth:`certify`.
        :param bound: ``"clopper-pearson"`` (default) or ``"hoeffding"`` for :meth:`certify`.
        :param clip_values: Valid input range (``None`` for the blending trigger, whose inputs leave [0, 1]).
        :param device_type: ``"gpu"`` (CUDA when available) or ``"cpu"``.
        :param random_state: Seed of the sigma optimiser's noise (``random_state_``).
        :param use_memory: The storage-update memory (consulted by :meth:`certify`, ``certify_adaptive``, ``predict``).
        :param train_noise_copies: Noisy copies of each training sample one member saw (an integer >= 1; default 1,
            what RAB's released training code does; see ``train_noise_copies_`` above).
        :param memory_budget: Bytes of activations per vote chunk, as in :class:`CertSSBDEstimator`.
        :param amp: Mixed precision of the votes (``None``, ``"bf16"``, ``"fp16"``), as in :class:`CertSSBDEstimator`.
        :param compile: ``torch.compile`` the vote, as in :class:`CertSSBDEstimator`.
        :param executor: ``"local"`` or a Ray executor for the votes, as in :class:`CertSSBDEstimator`.
        :param verbose: Progress bars.
        :param sigma_params: ``sigma_steps`` (default 0), ``sigma_lr``, ``sigma_samples``, ``sigma_bounds``,
            ``sigma_update``, ``sigma_tol``, ``sigma_patience`` of :class:`CertSSBDEstimator`.
        :return: The fitted estimator.
        :raises FileNotFoundError: ``directory`` does not exist.
        :raises ValueError: No or malformed checkpoints, or a bad parameter.
        """
        unknown = sorted(set(sigma_params) - (set(SIGMA_PARAMS) - {"use_memory"}))
        if unknown:
            raise ValueError(f"unknown keyword arguments for from_official: {unknown}")
        sigma_params.setdefault("sigma_steps", 0)
        copies = check_int(train_noise_copies, "train_noise_copies")
        template, states, seeds, _ = load_official_ensemble(directory, nb_models=nb_models, nb_classes=2)
        model = BinaryLogitAdapter(MnistCNN(nb_classes=1))
        estimator = cls(
            model,
            torch.nn.CrossEntropyLoss(),
            input_shape=(1, 28, 28),
            nb_classes=2,
            clip_values=clip_values,
            device_type=device_type,
            nb_models=len(states),
            scale=scale,
            alpha=alpha,
            bound=bound,
            warmup_epochs=0,
            random_state=random_state,
            use_memory=use_memory,
            noise="fixed" if copies == 1 else "fresh",
            memory_budget=memory_budget,
            amp=amp,
            compile=compile,
            executor=executor,
            verbose=verbose,
            **sigma_params,
        )
        model.load_state_dict(states[0])
        model.to(estimator._device).eval()
        estimator.fitted_ = FittedEnsemble(
            StackedEnsemble.from_state_dicts(template, states).to(estimator._device),
            np.array([scale], dtype=np.float32),  # a stand-in (see above)
            random_state=random_state,
            train_noise_copies=copies,  # an assumption about the official training (see above)
            test_noise_seeds=list(seeds),
            memory=CertificationMemory() if use_memory else None,
        )
        return estimator


class RABEstimator(SmoothedEnsembleEstimator):
    """RAB (Weber et al.): the same smoothed ensemble with one fixed sigma (``scale``) for every training and test
    sample, and no memory; the baseline Cert-SSBD is compared with. Parameters as :class:`CertSSBDEstimator`
    without the ``sigma_*`` and ``use_memory`` ones; ``warmup_epochs`` defaults to 0 (no base model is needed).

    | Paper link: https://arxiv.org/abs/2003.08904
    """


def _signature(init, base) -> inspect.Signature:
    """``base``'s parameters with ``init``'s keyword-only ones over them (new defaults, new parameters at the end):
    the signature ``init`` forwards to ``base`` with, for ``inspect``, scikit-learn-style tools and the docs."""
    own = {p.name: p for p in inspect.signature(init).parameters.values() if p.kind is p.KEYWORD_ONLY}
    params = [own.pop(p.name, p) for p in inspect.signature(base).parameters.values()]
    return inspect.Signature(params + list(own.values()))


CertSSBDEstimator.__init__.__signature__ = _signature(CertSSBDEstimator.__init__, SmoothedEnsembleEstimator.__init__)
