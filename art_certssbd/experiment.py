"""One backdoor-certification experiment, end to end: poison, train an undefended model, RAB and Cert-SSBD
ensembles, certify the clean and the triggered test sets, and tabulate certified accuracy against radius.

The demo (``certssbd demo``) and the benchmark harness both run this pipeline; only the data and sizes differ.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from art.attacks.poisoning import PoisoningAttackBackdoor
from art.estimators.classification import PyTorchClassifier

from art_certssbd._validation import check_bool, check_choice, check_int, check_positive, check_probability
from art_certssbd._version import __version__
from art_certssbd.attacks import attack_success_rate, blending, four_pixel, one_pixel, poison_dataset
from art_certssbd.estimator import CertSSBDEstimator, RABEstimator
from art_certssbd.report import certified_accuracy_rows
from art_certssbd.sigma import SIGMA_UPDATES
from art_certssbd.stats import BOUNDS

logger = logging.getLogger(__name__)

TRIGGERS = {"one-pixel": one_pixel, "four-pixel": four_pixel, "blending": blending}


@dataclass
class ExperimentConfig:
    """Sizes and hyper-parameters of one experiment (all recorded in the results)."""

    trigger: str = "one-pixel"
    delta: float = 1.0
    poison_rate: float = 0.02
    target: int = 0
    nb_models: int = 32
    nb_epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    scale: float = 0.25
    alpha: float = 0.001
    bound: str = "clopper-pearson"
    warmup_epochs: int = 5
    sigma_steps: int = 30
    sigma_lr: float = 5e-3
    sigma_samples: int = 16
    sigma_update: str = "gradient"
    radii: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0)
    random_state: int = 0
    device_type: str = "cpu"
    vectorize: bool = True
    methods: tuple[str, ...] = ("undefended", "rab", "cert-ssbd")
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {tuple(TRIGGERS)}, got {self.trigger!r}")
        unknown = set(self.methods) - {"undefended", "rab", "cert-ssbd"}
        if unknown:
            raise ValueError(f"methods must be among ('undefended', 'rab', 'cert-ssbd'), got {sorted(unknown)}")
        # everything the estimators would refuse, refused here, before hours of compute on the earlier runs
        for key in ("nb_models", "nb_epochs", "batch_size", "sigma_samples"):
            check_int(getattr(self, key), key)
        for key in ("target", "warmup_epochs", "sigma_steps", "random_state"):
            check_int(getattr(self, key), key, minimum=0)
        for key in ("delta", "lr", "scale", "sigma_lr"):
            check_positive(getattr(self, key), key)
        check_probability(self.alpha, "alpha")
        rate = self.poison_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise ValueError(f"poison_rate must be in [0, 1], got {rate!r}")
        check_choice(self.bound, "bound", BOUNDS)
        check_choice(self.sigma_update, "sigma_update", SIGMA_UPDATES)
        check_choice(self.device_type, "device_type", ("cpu", "gpu"))
        check_bool(self.vectorize, "vectorize")
        if not self.radii or not all(isinstance(r, int | float) and np.isfinite(r) and r >= 0 for r in self.radii):
            raise ValueError(f"radii must be a non-empty sequence of finite numbers >= 0, got {self.radii!r}")


def _seeded_model(factory: Callable[[], torch.nn.Module], seed: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def run_experiment(
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    model_factory: Callable[[], torch.nn.Module],
    nb_classes: int,
    config: ExperimentConfig,
    verbose: bool = True,
    on_result: Callable[[str, dict, object], None] | None = None,
) -> dict:
    """Run the whole pipeline and return a JSON-ready dict of results.

    :param data: ``(x_train, y_train, x_test, y_test)``, inputs in [0, 1], integer labels.
    :param model_factory: Builds a fresh network returning ``nb_classes`` logits.
    :param nb_classes: Number of classes.
    :param config: The experiment's settings.
    :param verbose: Progress bars.
    :param on_result: Called as ``on_result(name, {"clean": result, "triggered": result}, estimator)`` after each
           ensemble is certified, with the per-sample :class:`~art_certssbd.result.CertificationResult` objects
           (e.g. to derive other bounds from the same votes).
    """
    x_train, y_train, x_test, y_test = data
    start = time.perf_counter()
    trigger = TRIGGERS[config.trigger](delta=config.delta)
    # Step 1: poison the training set through ART's PoisoningAttackBackdoor, and trigger the test set.
    x_poison, y_poison, is_poison = poison_dataset(
        x_train, y_train, trigger, rate=config.poison_rate, target=config.target, random_state=config.random_state
    )
    x_test_trigger, _ = PoisoningAttackBackdoor(trigger).poison(x_test, y=y_test)
    non_target = y_test != config.target
    # The blending trigger is added without clipping (as in RAB and the official code), so its inputs leave [0, 1].
    clip_values = None if config.trigger == "blending" else (0.0, 1.0)
    results: dict = {"config": asdict(config), "nb_poisoned": int(is_poison.sum()), "timings_s": {}, "methods": {}}
    radii = list(config.radii)

    # Step 2: the undefended model, trained on the poisoned set with ART.
    if "undefended" in config.methods:
        tic = time.perf_counter()
        net = _seeded_model(model_factory, config.random_state)
        clf = PyTorchClassifier(
            net,
            torch.nn.CrossEntropyLoss(),
            x_train.shape[1:],
            nb_classes,
            optimizer=torch.optim.Adam(net.parameters(), lr=config.lr),
            clip_values=(0.0, 1.0),
            device_type=config.device_type,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.random_state)
            clf.fit(x_poison, y_poison, batch_size=config.batch_size, nb_epochs=config.nb_epochs, verbose=verbose)
        pred_clean = clf.predict(x_test).argmax(1)
        pred_trig = clf.predict(x_test_trigger).argmax(1)
        results["methods"]["undefended"] = {
            "clean_accuracy": float(np.mean(pred_clean == y_test)),
            "triggered_accuracy": float(np.mean(pred_trig == y_test)),
            "triggered_abstain_rate": 0.0,  # a plain classifier always answers
            "attack_success_rate": attack_success_rate(pred_trig[non_target], y_test[non_target], config.target),
        }
        results["timings_s"]["undefended"] = time.perf_counter() - tic

    # Step 3: RAB and Cert-SSBD ensembles on the same poisoned set, same members, epochs and seed.
    for name in [m for m in config.methods if m != "undefended"]:
        tic = time.perf_counter()
        net = _seeded_model(model_factory, config.random_state)
        common = dict(
            optimizer=torch.optim.Adam(net.parameters(), lr=config.lr),
            clip_values=clip_values,
            device_type=config.device_type,
            vectorize=config.vectorize,
            nb_models=config.nb_models,
            scale=config.scale,
            alpha=config.alpha,
            bound=config.bound,
            random_state=config.random_state,
            verbose=verbose,
        )
        if name == "rab":
            est = RABEstimator(net, torch.nn.CrossEntropyLoss(), x_train.shape[1:], nb_classes, **common)
        else:
            est = CertSSBDEstimator(
                net,
                torch.nn.CrossEntropyLoss(),
                x_train.shape[1:],
                nb_classes,
                **common,
                warmup_epochs=config.warmup_epochs,
                sigma_steps=config.sigma_steps,
                sigma_lr=config.sigma_lr,
                sigma_samples=config.sigma_samples,
                sigma_update=config.sigma_update,
            )
        est.fit(x_poison, y_poison, batch_size=config.batch_size, nb_epochs=config.nb_epochs)
        fit_s = time.perf_counter() - tic
        # Step 4: certify the clean test set, then the triggered one (trimmed against, not added to, the memory).
        clean = est.certify(x_test, return_details=True)
        triggered = est.certify(x_test_trigger, return_details=True, update_memory=False)
        curves = {"clean": clean, "triggered": triggered}
        if on_result is not None:
            on_result(name, curves, est)
        results["methods"][name] = {
            "clean_accuracy": float(np.mean(clean.pred == y_test)),
            "abstain_rate": float(np.mean(clean.abstained)),
            "triggered_accuracy": float(np.mean(triggered.pred == y_test)),
            # beside the ASR, so that "ASR 0" cannot hide "abstains on the triggered inputs"
            "triggered_abstain_rate": float(np.mean(triggered.abstained)),
            "attack_success_rate": attack_success_rate(triggered.pred[non_target], y_test[non_target], config.target),
            "certified_accuracy": certified_accuracy_rows(curves, y_test, radii),
            "certified_accuracy_conservative": certified_accuracy_rows(curves, y_test, radii, conservative=True),
            "sigma_test": _summary(clean.sigma),
            "sigma_train": _summary(est.train_sigma_),
            "memory_changed": int(np.sum(clean.pred != clean.pred_before_memory)),
        }
        results["timings_s"][name] = {"fit": fit_s, "certify": time.perf_counter() - tic - fit_s}
    results["wall_time_s"] = time.perf_counter() - start
    results["environment"] = environment()
    return results


def _summary(values: np.ndarray) -> dict[str, float]:
    return {"min": float(np.min(values)), "mean": float(np.mean(values)), "max": float(np.max(values))}


def environment() -> dict[str, str]:
    """The machine, versions and settings a run depends on, recorded with every result so that it can be reproduced.

    Besides the versions: ``torch_threads`` (the intra-op thread count; a different count changes the rounding of
    convolutions and so the trained weights, see ``benchmarks/README.md``), ``cpu_count`` (kept for older files: the
    same value), ``logical_cpus``, ``cpu_model`` (``/proc/cpuinfo``), the thread variables of the environment
    (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``ART_CERTSSBD_NATIVE_BF16``), ``deterministic_algorithms`` and, when
    the package runs from a git checkout, ``git_commit`` (with ``+dirty`` for uncommitted changes).
    """
    import os

    import art
    import scipy

    try:
        import sklearn

        sklearn_version = sklearn.__version__
    except ImportError:  # pragma: no cover - ART depends on scikit-learn
        sklearn_version = "none"
    threads = str(torch.get_num_threads())
    return {
        "art_certssbd": __version__,
        "git_commit": _git_commit(),
        "art": art.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "sklearn": sklearn_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "logical_cpus": str(os.cpu_count()),
        "torch_threads": threads,
        "cpu_count": threads,
        "thread_env": ", ".join(
            f"{k}={os.environ[k]}"
            for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ART_CERTSSBD_NATIVE_BF16")
            if k in os.environ
        )
        or "unset",
        "deterministic_algorithms": str(torch.are_deterministic_algorithms_enabled()),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }


def _cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else the platform's processor string."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str:
    """The commit of the git checkout the package runs from (``+dirty`` with uncommitted changes), or ``"unknown"``."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return "unknown"
    try:
        run = dict(cwd=root, capture_output=True, text=True, timeout=10, check=True)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], **run).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], **run).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")
