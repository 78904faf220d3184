"""ART's estimator contract for the smoothed ensemble, beyond fit / predict / certify: a mixin of the estimator shell.

ART's ``PyTorchClassifier`` assumes one network; this mixin gives each call its meaning for an ensemble of
``nb_models`` members (the "ART conventions" section of the user guide says where and why it differs from ART):

* ``set_params`` sets the public attribute of each estimator parameter (ART's version writes ``_<key>`` whenever
  such an attribute exists, which overwrote the method ``_bound``), rolls back on a validation error and resets the
  fitted state when a parameter the fitted ensemble depends on changes (:data:`KEEPS_FIT` lists those that do not);
* ``fit_generator`` collects the generator's data once and fits once (ART's loop calls ``fit`` per batch);
* ``loss_gradient`` / ``compute_loss``: the ensemble's expected loss under its fixed test noise at ``scale``;
  ``class_gradient`` is not available (as in ART's ``PyTorchRandomizedSmoothing``);
* ``model`` (ART's network, which some attacks wrap in a classifier of their own) is, once fitted, the smoothed
  ensemble as one differentiable module (:class:`~art_certssbd.smoothed_module.SmoothedEnsembleModule`); before
  ``fit`` it is the base network, with a warning. ``base_model`` is always the base network (of the sigma
  optimiser; untrained for RAB), and it is what ``get_params``, ``set_params``, ``clone_for_refitting`` and
  ``sklearn.base.clone`` see as the parameter ``model``;
* ``get_activations`` reads a trained member (``base_model`` is untrained for RAB);
* pickle and ``copy.deepcopy`` work before and after use and write no files (ART's pickling writes the model under
  ``ART_DATA_PATH``); an estimator pickled before the fitted record (``fitted_``) loads into one.

It reads the fitted state only through the record ``fitted_`` (:class:`~art_certssbd.fitted.FittedEnsemble`).
"""

from __future__ import annotations

import copy
import inspect
import numbers

import numpy as np
import torch

from art_certssbd import stats
from art_certssbd._validation import (
    check_bool,
    check_choice,
    check_input_shape,
    check_int,
    check_positive,
    check_probability,
)
from art_certssbd.accelerators import check_accelerators
from art_certssbd.certification import check_options
from art_certssbd.datasets.generators import read_generator
from art_certssbd.execution import Executor
from art_certssbd.fitted import record_from_attributes
from art_certssbd.memory import CertificationMemory
from art_certssbd.training import NOISE_MODES

#: Estimator parameters the fitted ensemble does not depend on: ``set_params`` of them keeps the fitted state.
#: Changing any other one (``model``, ``loss``, ``optimizer``, ``input_shape``, ``nb_classes``, ``preprocessing``,
#: ``nb_models``, ``scale``, ``noise``, ``warmup_epochs``, ``random_state``, ``sigma_*``) resets it: the members
#: were trained with the old value, so certificates would silently be wrong; call ``fit`` again.
KEEPS_FIT = frozenset(
    {
        "alpha",  # the bound's level, applied to the votes at certification
        "bound",
        "draws_per_model",  # test-time draws per member (the members' test-noise seeds do not depend on it)
        "verbose",
        "vectorize",
        "memory_budget",
        "amp",
        "compile",
        "executor",  # where the work runs; the same ensemble and votes
        "use_memory",  # the memory is created or dropped
        "device_type",  # the fitted state moves to the new device
        "clip_values",  # the range inputs are checked against (and ART's attacks clip to)
        "channels_first",  # a layout flag for ART's attacks and defences; the members see the same tensors
        "use_amp",  # ART's apex options, unused here
        "opt_level",
        "loss_scale",
    }
)


ENSEMBLE_PARAMS = [
    "nb_models",
    "scale",
    "alpha",
    "bound",
    "draws_per_model",
    "noise",
    "warmup_epochs",
    "vectorize",
    "memory_budget",
    "amp",
    "compile",
    "executor",
    "random_state",
    "verbose",
]
SIGMA_PARAMS = [
    "sigma_steps",
    "sigma_lr",
    "sigma_samples",
    "sigma_bounds",
    "sigma_update",
    "sigma_tol",
    "sigma_patience",
    "use_memory",
]


def _same(a, b) -> bool:
    """Whether a parameter keeps its value (identity, or equal values of numbers, strings, tuples and arrays)."""
    if a is b:
        return True
    if isinstance(a, torch.nn.Module | torch.optim.Optimizer) or isinstance(b, torch.nn.Module | torch.optim.Optimizer):
        return False
    try:
        if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
            return np.shape(a) == np.shape(b) and bool(np.all(np.asarray(a) == np.asarray(b)))
        numbers_ = all(isinstance(v, numbers.Number) and not isinstance(v, bool | np.bool_) for v in (a, b))
        return (numbers_ or type(a) is type(b)) and bool(a == b)
    except (TypeError, ValueError):
        return False


def _numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


class ArtContractMixin:
    """The ART calls of :class:`~art_certssbd._shell.SmoothedEnsembleEstimator` beyond fit / predict / certify."""

    # ------------------------------------------------------------------------------------------------- networks
    @property
    def base_model(self) -> torch.nn.Module:
        """The base network: the architecture of every member, the network of the sigma optimiser (warmed up at
        ``scale`` by Cert-SSBD's ``fit``, never trained by RAB's), and the parameter ``model`` of ``get_params``."""
        return self._model._model

    # ---------------------------------------------------------------------------------------------- parameters
    def _param(self, key: str):
        """The value of estimator parameter ``key`` (``model``: the base network)."""
        return self.base_model if key == "model" else getattr(self, key)

    def get_params(self, deep: bool = True) -> dict:
        """The estimator parameters, ``model`` being the base network (:attr:`base_model`).

        :param deep: Accepted for scikit-learn (``sklearn.base.clone``); the parameters hold no nested estimators,
               so it changes nothing.
        """
        return {key: self._param(key) for key in self.estimator_params}

    def clone_for_refitting(self):
        """An unfitted estimator of the same parameters, on a copy of the base network re-initialised by its
        layers' ``reset_parameters`` and a new optimiser of the same type and defaults (ART's
        ``clone_for_refitting``, on :attr:`base_model` rather than ``model``)."""
        if self._optimizer is None:
            raise ValueError("An optimizer is needed to train the model, but none is provided.")
        model = copy.deepcopy(self.base_model)
        optimizer = type(self._optimizer)(model.parameters(), **self._optimizer.defaults)
        clone = type(self)(model, self._loss, self.input_shape, self.nb_classes, optimizer=optimizer)
        clone.reset()
        params = self.get_params()
        del params["model"], params["optimizer"]
        clone.set_params(**params)
        return clone

    def __sklearn_clone__(self):
        """``sklearn.base.clone(estimator)``: :meth:`clone_for_refitting` (an unfitted estimator of the same
        parameters; ``fit`` re-initialises every network from ``random_state``, so the copy's weights do not matter).
        scikit-learn's default clone would pass ``get_params()`` to the constructor, which does not take ART's apex
        options (``use_amp``, ``opt_level``, ``loss_scale``)."""
        return self.clone_for_refitting()

    def reset(self) -> None:
        """Re-initialise the base network's layers (ART's ``reset``; the fitted state, if any, is kept)."""

        def weight_reset(module) -> None:
            if callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()

        self.base_model.apply(weight_reset)  # ART's order (children first), so the same draws as ART's reset

    def set_params(self, **kwargs) -> None:
        """Set estimator parameters (ART's ``set_params``; ``clone_for_refitting`` relies on it).

        Each key of ``estimator_params`` sets the parameter itself (through its setter, or the attribute behind a
        read-only ART property such as ``loss``); methods and other private state are never touched. On a
        validation error the estimator is left exactly as it was. When a parameter the fitted ensemble depends on
        changes value (any parameter not in :data:`KEEPS_FIT`, e.g. ``scale``, ``nb_models``, ``random_state``,
        ``sigma_*``), the fitted state is reset: ``certify`` / ``predict`` then raise a ``NotFittedError`` naming
        the parameter, until ``fit`` is called again. Setting a parameter to its current value changes nothing.

        :raises ValueError: For an unknown parameter or an invalid value.
        """
        unknown = sorted(key for key in kwargs if key not in self.estimator_params)
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown} of {type(self).__name__}: {self.estimator_params}")
        changed = {key: value for key, value in kwargs.items() if not _same(self._param(key), value)}
        snapshot = dict(self.__dict__)
        snapshot["preprocessing_operations"] = list(self.preprocessing_operations)  # mutated in place below
        try:
            for key, value in changed.items():
                self._set_param(key, value)
            self._update_preprocessing_operations()
            self._check_params()
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(snapshot)
            raise
        # validated: now the side effects on the model and the fitted state
        if "model" in changed or "device_type" in changed:
            self._model.to(self._device)
        record = self.__dict__.get("fitted_")
        if record is None:
            return
        reset = sorted(key for key in changed if key not in KEEPS_FIT)
        if reset:
            del self.fitted_
            self._reset_by = reset
            return
        if "device_type" in changed:
            record.members.to(self._device)
        if "use_memory" in changed:
            self.fitted_ = record.replace(memory=CertificationMemory() if self.use_memory else None)

    def _set_param(self, key: str, value) -> None:
        """Set one parameter: through its property setter, the instance attribute behind a read-only property, ART's
        converters (``preprocessing*``), or a plain attribute; never a method or a class attribute."""
        attribute = inspect.getattr_static(type(self), key, None)
        if key == "model":
            self._model = self._make_model_wrapper(value)
            self._layer_names = self._model.get_layers
        elif key == "device_type":
            self._device_type = value
            cuda = value == "gpu" and torch.cuda.is_available()
            self._device = torch.device(f"cuda:{torch.cuda.current_device()}" if cuda else "cpu")
        elif isinstance(attribute, property) and attribute.fset is not None:
            setattr(self, key, value)
        elif isinstance(attribute, property):
            if "_" + key not in self.__dict__:  # a read-only property without instance state behind it
                raise ValueError(f"{key} of {type(self).__name__} cannot be set")
            self.__dict__["_" + key] = value
        elif key == "preprocessing":
            self.preprocessing = self._set_preprocessing(value)
        elif key == "preprocessing_defences":
            self.preprocessing_defences = self._set_preprocessing_defences(value)
        elif key == "postprocessing_defences":
            self.postprocessing_defences = self._set_postprocessing_defences(value)
        else:
            setattr(self, key, value)

    # ------------------------------------------------------------------------------------------ parameter checks
    @property
    def sample_size(self) -> int:
        """Votes per input, ``nb_models * draws_per_model`` (read-only; ART's name for ``n``); once fitted, with the
        fitted number of members (fewer than ``nb_models`` when a growth rule stopped the ensemble)."""
        fitted = self.__dict__.get("fitted_")
        return (self.nb_models if fitted is None else fitted.nb_models) * self.draws_per_model

    @sample_size.setter
    def sample_size(self, value) -> None:
        if value is not None:  # ART's constructor argument: refused with a pointer to nb_models
            raise ValueError(
                f"sample_size={value!r} cannot be set: ART's sample size (noise draws per input) is, for a smoothed "
                "ensemble, its number of votes nb_models * draws_per_model (each member votes on its own fixed noise): "
                "set nb_models (and draws_per_model) instead"
            )

    def _check_params(self) -> None:
        super()._check_params()
        check_int(self.nb_classes, "nb_classes", minimum=2)
        check_input_shape(self.input_shape)
        check_choice(self.device_type, "device_type", ("cpu", "gpu"))
        check_bool(self.vectorize, "vectorize")
        check_bool(self.use_memory, "use_memory")
        check_int(self.nb_models, "nb_models")
        check_int(self.draws_per_model, "draws_per_model")
        check_positive(self.scale, "scale")
        check_probability(self.alpha, "alpha")
        check_choice(self.bound, "bound", stats.BOUNDS)
        check_options(self.bound, self.draws_per_model)  # draws_per_model > 1 needs bound="hoeffding"
        check_choice(self.noise, "noise", NOISE_MODES)
        check_int(self.warmup_epochs, "warmup_epochs", minimum=0)
        check_int(self.memory_budget, "memory_budget")
        Executor(self.executor)  # refuses an unknown executor
        check_accelerators(self._device, self.amp, self.compile)
        self._check_sigma_params()  # RAB: fixed sigma; CertSSBDEstimator checks its sigma_* parameters
        if self.random_state is not None:
            check_int(self.random_state, "random_state", minimum=0)
        if self._use_amp:
            raise ValueError("use_amp=True (ART's apex mixed precision) is not supported: use amp='bf16' or 'fp16'")
        if self.preprocessing_defences or self.postprocessing_defences:
            raise ValueError(
                "preprocessing_defences and postprocessing_defences are not supported: the smoothing noise must reach "
                "the model unchanged for the certificate to hold"
            )
        for op in self.preprocessing_operations:
            if not (np.all(np.asarray(getattr(op, "mean", 1)) == 0) and np.all(np.asarray(getattr(op, "std", 0)) == 1)):
                raise ValueError(
                    f"preprocessing={op!r} is not supported: the noise is added to the raw input, so put any "
                    "normalisation inside the model (e.g. as its first layer)"
                )

    def _check_sigma_params(self) -> None:
        """Check the sigma optimiser's parameters (none here: RAB's sigma is ``scale``)."""

    # ------------------------------------------------------------------------------------------------- fitting
    def fit_generator(self, generator, nb_epochs: int = 20, verbose: bool | None = None, **kwargs) -> None:
        """Fit the ensemble on all the data of an ART ``DataGenerator``, collected once (one call of :meth:`fit`).

        ART's base ``fit_generator`` calls ``fit`` once per batch, which here would retrain the whole ensemble on
        each batch. Instead the data is read once: ``NumpyDataGenerator``: its arrays ``x`` and ``y`` (in order);
        ``PyTorchDataGenerator``: one pass over its ``DataLoader`` (a map-style dataset under a sequential or plain
        shuffling sampler is read in index order, so the fit depends on ``random_state`` only); any other generator:
        ``get_batch()`` until ``generator.size`` samples.

        :param generator: An ``art.data_generators.DataGenerator``.
        :param nb_epochs: Epochs per ensemble member (ART's default, 20).
        :param verbose: Progress bars (default: the estimator's ``verbose``).
        :param kwargs: Further arguments of :meth:`fit` (``batch_size`` defaults to the generator's).
        """
        from art.data_generators import DataGenerator

        if not isinstance(generator, DataGenerator):
            raise ValueError(f"generator must be an art.data_generators.DataGenerator, got {type(generator).__name__}")
        x, y = read_generator(generator)
        kwargs.setdefault("batch_size", int(generator.batch_size))
        self.fit(x, y, nb_epochs=nb_epochs, verbose=verbose, **kwargs)

    # ------------------------------------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict:
        """Pickle the estimator in memory, members included (ART's version writes the model under
        ``ART_DATA_PATH`` and reloads it from there); the model wrapper, a local class, is rebuilt on unpickling."""
        state = self.__dict__.copy()
        state["_model"] = self._model._model  # the plain network
        state.pop("_model_wrapper", None)
        state["_device"] = str(self._device)
        return state

    def __setstate__(self, state: dict) -> None:
        if "ensemble_" in state:  # pickled before the fitted record: the same fitted state, as one record
            state = record_from_attributes(state)
        self.__dict__.update(state)
        self._device = torch.device(state["_device"])
        self._model = self._make_model_wrapper(state["_model"])
