"""Baselines and shared pieces of ``benchmarks/speed.py``: data, ensembles, the official Cert-SSB evaluation loop
re-created, ART's randomized smoothing, the raw forward-pass bound, timing and peak-memory helpers."""

from __future__ import annotations

import hashlib
import os
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from scipy.stats import beta

from art_certssbd.ensemble import StackedEnsemble, resolve_backend
from art_certssbd.models import MnistCNN
from art_certssbd.noise import derive_seed, gaussian, make_generator
from art_certssbd.training import init_member


# --------------------------------------------------------------------------------------------------- timing
def sync(device: torch.device) -> None:
    """Wait for queued CUDA work (timings end when the work is done, not when it is queued)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    runs: dict[str, Callable[[], object]], repeats: int, device: torch.device, warmup: bool = True
) -> dict[str, dict]:
    """Time each callable ``repeats`` times, alternating between them (A B A B ...) so that a change in machine load
    hits all of them alike; one untimed warm-up call each first (``warmup=False`` for runs of many seconds, where
    first-call costs are noise). Returns best and median wall seconds and the best process CPU seconds. The best is
    the figure to compare: on a shared machine other jobs only ever slow a run down."""
    for fn in runs.values() if warmup else ():
        fn()
        sync(device)
    times: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {
        name: {"best_s": min(t), "median_s": statistics.median(t), "all_s": t, "cpu_best_s": min(c), "cpu_all_s": c}
        for (name, t), c in zip(times.items(), cpu.values())
    }


def loadavg() -> list[float]:
    """``os.getloadavg()`` (1, 5 and 15 minutes)."""
    return [round(v, 2) for v in os.getloadavg()]


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux ``clear_refs``); ``False`` where that is impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident set size since the last :func:`reset_peak_rss` (Linux ``VmHWM``), else since the start
    (``resource.getrusage``, KiB on Linux), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Current resident set size, in MiB (Linux ``/proc``; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


# ----------------------------------------------------------------------------------------------------- data
def mnist_like(n_train: int, n_test: int, seed: int = 0) -> dict:
    """MNIST 1-vs-0 (the paper's task) when the IDX files are in the cache, else scikit-learn's digits 0/1 scaled
    to 28x28 (so that the MNIST CNN applies). Float32 images in [0, 1], shape ``(N, 1, 28, 28)``."""
    try:
        from art_certssbd.datasets import load_task

        x_train, y_train = load_task("mnist-1v0", "train")
        x_test, y_test = load_task("mnist-1v0", "test")
        source = "MNIST 1-vs-0"
    except (OSError, ValueError):
        from art_certssbd.datasets import load_digits

        x_tr, y_tr, x_te, y_te = load_digits(random_state=seed)
        x = np.concatenate([x_tr, x_te])
        y = np.concatenate([y_tr, y_te])
        keep = y <= 1
        x = np.kron(x[keep], np.ones((1, 1, 3, 3), dtype=np.float32))  # 8x8 -> 24x24
        x = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
        y = y[keep]
        half = len(x) // 2
        x_train, y_train, x_test, y_test = x[:half], y[:half], x[half:], y[half:]
        source = "scikit-learn digits 0/1 upscaled to 28x28 (MNIST not found)"
    rng = np.random.default_rng(seed)
    tr = rng.permutation(len(x_train))[:n_train]
    te = np.resize(np.arange(len(x_test)), n_test)  # test inputs in file order, repeated if more are asked for
    return {
        "x_train": np.ascontiguousarray(x_train[tr]),
        "y_train": y_train[tr].astype(np.int64),
        "x_test": np.ascontiguousarray(x_test[te]),
        "y_test": y_test[te].astype(np.int64),
        "source": source,
    }


def random_ensemble(nb_models: int, nb_classes: int = 2, seed: int = 0) -> list[torch.nn.Module]:
    """``nb_models`` MNIST CNNs, each initialised from its own seed (random weights: enough for throughput)."""
    return [init_member(MnistCNN(nb_classes), derive_seed(seed, "init", k)) for k in range(nb_models)]


def noise_fn(nb_models: int, device: torch.device, seed: int = 0):
    """The estimator's test noise: member ``k`` draws from its own generator on the device."""
    seeds = [derive_seed(seed, "test_noise", k) for k in range(nb_models)]

    def fn(members, draws, shape):
        return torch.stack([gaussian((draws, *shape), make_generator(seeds[k], device)) for k in members])

    return fn


def raw_forward(ensemble: StackedEnsemble, x: torch.Tensor, batch_size: int, chunk_images: int) -> None:
    """The physical bound: every member's forward pass on clean inputs, with the backend and per-member batches that
    :func:`~art_certssbd.ensemble.vote` uses, and nothing else (no noise, no argmax, no counting)."""
    backend = resolve_backend("auto", x.device)
    m = ensemble.nb_models
    with torch.inference_mode():
        if backend == "sequential":
            fn, cl = ensemble._function("sequential", False), x.device.type == "cpu"
            chunk = max(1, chunk_images // batch_size)
            for m0 in range(0, m, chunk):
                states = [ensemble.member_state(k, cl) for k in range(m0, min(m0 + chunk, m))]
                for n0 in range(0, x.shape[0], batch_size):
                    for state in states:
                        fn(*state, x[n0 : n0 + batch_size])
        else:
            fn, chunk = ensemble._function("vmap", False), max(1, chunk_images // batch_size)
            for m0 in range(0, m, chunk):
                params, buffers = ensemble._chunk(m0, min(m0 + chunk, m))
                for n0 in range(0, x.shape[0], batch_size):
                    xb = x[n0 : n0 + batch_size]
                    fn(params, buffers, xb.unsqueeze(0).expand((params["conv1.weight"].shape[0],) + xb.shape))


# ------------------------------------------------------------------------------------- the official loop
def save_official_checkpoints(directory: Path, nb_models: int, seed: int = 0) -> list[Path]:
    """``smoothed_k.model`` files as the official code stores them: ``torch.save`` of the one-logit MNIST CNN's
    ``state_dict``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, module in enumerate(random_ensemble(nb_models, nb_classes=1, seed=seed)):
        path = directory / f"smoothed_{k}.model"
        torch.save(module.state_dict(), path)
        paths.append(path)
    return paths


def official_loop(
    paths, x_cpu: torch.Tensor, sigma0: float, device: torch.device, batch_size: int = 128, grad: bool = True
) -> np.ndarray:
    """The official Cert-SSB ``eval.py`` ``certificate_over_dataset`` loop, re-created: one model object; for every
    checkpoint file: ``torch.load`` it, hash the file (sha256 mod 2**32, which seeds the model's fixed test
    perturbation, RAB's ``fix_pert``), then predict the test set in batches of 128 (the MNIST test loader), sigmoid
    scores to numpy, concatenated; finally the mean over models. ``grad=True`` keeps autograd on, as ``eval.py`` does
    (it never enters ``no_grad``); ``grad=False`` is the same loop under ``inference_mode``. Inputs are given as one
    CPU tensor and copied per batch (a DataLoader without image decoding: generous to the baseline)."""
    model = MnistCNN(1).to(device)
    model.eval()
    model_preds = []
    with torch.inference_mode(not grad):
        for path in paths:
            model.load_state_dict(torch.load(path, map_location=device))
            with open(path, "rb") as handle:
                hashval = int(hashlib.sha256(handle.read()).hexdigest(), 16) % (2**32)
            g = torch.Generator(device).manual_seed(hashval)
            pert = sigma0 * torch.randn((1,) + tuple(x_cpu.shape[2:]), generator=g, device=device)
            all_pred = np.zeros((0, 2))
            for n0 in range(0, x_cpu.shape[0], batch_size):
                x_in = x_cpu[n0 : n0 + batch_size].to(device)
                pred = torch.sigmoid(model(x_in + pert).squeeze(1)).detach().cpu().numpy()
                all_pred = np.concatenate([all_pred, np.stack((1 - pred, pred), axis=1)], axis=0)
            model_preds.append(all_pred)
    return np.array(model_preds).mean(0)


class LazyCheckpoints(Sequence):
    """The official one-logit checkpoints as two-logit state dicts (``[0, z]``, as :class:`BinaryLogitAdapter`),
    each file loaded only when its member is stacked (so only one is held besides the stack)."""

    def __init__(self, paths, device: torch.device):
        self.paths, self.device = list(paths), device

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, k: int) -> dict:
        state = torch.load(self.paths[k], map_location=self.device)
        weight, bias = state["output.weight"], state["output.bias"]
        state["output.weight"] = torch.cat([torch.zeros_like(weight), weight])
        state["output.bias"] = torch.cat([torch.zeros_like(bias), bias])
        return state


# ---------------------------------------------------------------------------------------------- ART's RS
def art_smoother(device_type: str, sample_size: int, scale: float, alpha: float):
    """ART's ``PyTorchRandomizedSmoothing`` around one MNIST CNN. ART's ``_lower_confidence_bound`` imports
    statsmodels (not a dependency of this project); it is replaced by the same one-sided Clopper-Pearson bound in
    scipy, which costs microseconds per input and does not change what is timed (the forward passes)."""
    from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing

    net = random_ensemble(1)[0]
    smoother = PyTorchRandomizedSmoothing(
        model=net,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=(1, 28, 28),
        nb_classes=2,
        clip_values=(0.0, 1.0),
        device_type=device_type,
        sample_size=sample_size,
        scale=scale,
        alpha=alpha,
    )

    def lower_bound(counts, n_total):
        return float(beta.ppf(alpha, counts, n_total - counts + 1)) if counts > 0 else 0.0

    smoother._lower_confidence_bound = lower_bound
    return smoother
