"""Speed benchmarks (issue 5): every figure is a ratio of two timings taken in the same run on the same machine.

Usage, from the repository root (the run takes the machine for ~15 minutes on 2 CPU cores; timings taken while
another heavy job runs are worthless, hence the lock)::

    flock /tmp/certssbd-heavy.lock python benchmarks/speed.py                      # CPU preset
    flock /tmp/certssbd-heavy.lock python benchmarks/speed.py --preset paper-gpu   # on a CUDA machine, as is
    python benchmarks/speed.py --preset smoke --out /tmp/speed                     # seconds: checks the script

writes ``benchmarks/results/speed-<preset>.{json,md}``. Sections (``--only a,b,...`` runs a subset):

a. certify throughput vs the official Cert-SSB evaluation loop re-created (load each checkpoint file, predict, next);
b. certify throughput vs the raw forward passes of the same stacked ensemble (no noise, no counting): the bound;
c. certify throughput vs ART's ``PyTorchRandomizedSmoothing.certify`` at an equal number of forward passes;
d. ensemble training, vmap (and the default backend) vs the loop twin;
e. adaptive vs fixed-n certification: forward passes and certified accuracy, on a trained MNIST-like ensemble;
f. storage-update memory: query time vs number of stored regions (10^3 .. 10^5), checked against brute force;
g. peak memory of certification (ours vs the official loop; RSS, tracemalloc, CUDA allocator), in subprocesses;
h. batched sigma optimisation: throughput vs the previous configuration, per-sample optimisation and the
   forward-only bound.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from speed_baselines import (  # noqa: E402
    LazyCheckpoints,
    art_smoother,
    current_rss_mb,
    interleaved,
    loadavg,
    mnist_like,
    noise_fn,
    official_loop,
    peak_rss_mb,
    random_ensemble,
    raw_forward,
    reset_peak_rss,
    save_official_checkpoints,
    sync,
)

from art_certssbd import RABEstimator, stats  # noqa: E402
from art_certssbd import _distances as distances_module  # noqa: E402
from art_certssbd.accelerators import check_accelerators  # noqa: E402
from art_certssbd.counts import certify_counts  # noqa: E402
from art_certssbd.ensemble import StackedEnsemble, resolve_backend, vote  # noqa: E402
from art_certssbd.experiment import environment  # noqa: E402
from art_certssbd.memory import CertificationMemory  # noqa: E402
from art_certssbd.models import MnistCNN  # noqa: E402
from art_certssbd.report import write_json, write_text  # noqa: E402
from art_certssbd.sequential import threshold_probability  # noqa: E402
from art_certssbd.sigma import optimize_sigma  # noqa: E402
from art_certssbd.training import train_members  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SIGMA0, ALPHA = 0.12, 1e-3
PRESETS = {
    "cpu": {
        "device": "cpu",
        "cert_models": 1000,  # (a), (b), (g): M
        "cert_inputs": 512,  # N test inputs
        "art_inputs": 128,  # (c)
        "art_selection": 100,  # ART's selection sample n0 (then n = M - n0)
        "train_models": 32,  # (d)
        "train_samples": 1024,
        "adaptive_models": 1000,  # (e)
        "adaptive_train": 256,
        "adaptive_epochs": 2,
        "adaptive_inputs": 500,
        "memory_sizes": [1000, 10000, 100000],  # (f)
        "memory_queries": 256,
        "sigma_inputs": 256,  # (h)
        "sigma_steps": 10,
        "batch_size": 256,
        "repeats": 3,
        "amp": [None, "bf16"],  # bf16 where the CPU has it natively (else recorded as skipped, with the reason)
    },
    "paper-gpu": {
        "device": "cuda",
        "cert_models": 1000,
        "cert_inputs": 2115,  # the paper's MNIST 1-vs-0 test set
        "art_inputs": 256,
        "art_selection": 100,
        "train_models": 100,
        "train_samples": 12665,  # the full MNIST 1-vs-0 training set, one epoch
        "adaptive_models": 1000,
        "adaptive_train": 12665,
        "adaptive_epochs": 2,
        "adaptive_inputs": 2115,
        "memory_sizes": [1000, 10000, 100000],
        "memory_queries": 1024,
        "sigma_inputs": 2115,
        "sigma_steps": 30,
        "batch_size": 1024,
        "repeats": 3,
        "amp": [None, "bf16", "fp16"],
    },
    "smoke": {
        "device": "cpu",
        "cert_models": 8,
        "cert_inputs": 16,
        "art_inputs": 4,
        "art_selection": 2,
        "train_models": 3,
        "train_samples": 64,
        "adaptive_models": 16,
        "adaptive_train": 64,
        "adaptive_epochs": 1,
        "adaptive_inputs": 16,
        "memory_sizes": [100, 1000],
        "memory_queries": 8,
        "sigma_inputs": 8,
        "sigma_steps": 2,
        "batch_size": 8,
        "repeats": 1,
        "amp": [None, "bf16"],
    },
}
TARGETS = {"a": 1.0, "a_gpu": 10.0, "b": 0.8, "c": 3.0, "d": 1.0, "d_gpu": 5.0, "e": 1 / 3}


def _cpu(times: dict, fast: str, slow: str) -> float:
    """The same ratio by process CPU time (all threads), less sensitive than wall time to other jobs on the machine."""
    return times[slow]["cpu_best_s"] / times[fast]["cpu_best_s"]


def _certify_counts(counts: torch.Tensor, sigma: np.ndarray) -> None:
    certify_counts(counts.cpu().numpy(), sigma, ALPHA)


# ------------------------------------------------------------------------------------- (a), (b), (c), (g)
def bench_certify(cfg: dict, ctx: dict) -> dict:
    """(a) ours vs the official loop, (b) ours vs the raw forward bound."""
    device, m, n, bs = ctx["device"], cfg["cert_models"], cfg["cert_inputs"], cfg["batch_size"]
    x_cpu = torch.from_numpy(ctx["data"]["x_test"][:n])
    x = x_cpu.to(device)
    sigma_np = np.full(n, SIGMA0)
    sigma = torch.full((n,), SIGMA0, device=device)
    paths = ctx["paths"]
    ensemble = StackedEnsemble.from_modules(random_ensemble(m)).to(device)
    noise = noise_fn(m, device)

    def ours(amp=None, compile=False):
        return lambda: _certify_counts(
            vote(ensemble, x, sigma, noise, 2, batch_size=bs, amp=amp, compile=compile), sigma_np
        )

    def ours_from_disk():
        ens = StackedEnsemble.from_state_dicts(MnistCNN(2), LazyCheckpoints(paths, device))
        _certify_counts(vote(ens, x, sigma, noise, 2, batch_size=bs), sigma_np)

    runs = {
        "ours": ours(),
        "ours_from_disk": ours_from_disk,
        "official_loop": lambda: official_loop(paths, x_cpu, SIGMA0, device),
        "official_loop_inference_mode": lambda: official_loop(paths, x_cpu, SIGMA0, device, grad=False),
        "raw_forward": lambda: raw_forward(ensemble, x, bs, 8192),
    }
    amp_skipped = {}
    for amp in cfg["amp"]:
        if amp is None:
            continue
        try:  # the estimator's own check: bf16 on CUDA or on a CPU with native bfloat16, fp16 on CUDA
            check_accelerators(device, amp, False)
        except ValueError as err:
            amp_skipped[amp] = str(err)
            continue
        runs[f"ours_{amp}"] = ours(amp)
    runs["ours_compile"] = ours(compile=True)
    runs["ours_compile"]()  # compiles (seconds, once per shape): not part of the timed throughput
    times = interleaved(runs, cfg["repeats"], device, warmup=m * n < 100_000)
    passes = m * n
    rate = {k: passes / v["best_s"] for k, v in times.items()}
    target_a = TARGETS["a_gpu"] if device.type == "cuda" else TARGETS["a"]
    out = {
        "config": {"nb_models": m, "nb_inputs": n, "batch_size": bs, "backend": resolve_backend("auto", device)},
        "passes_per_s": {k: round(v, 1) for k, v in rate.items()},
        "times": times,
        "a": {
            "ratio": rate["ours_from_disk"] / rate["official_loop"],
            "ratio_cpu": _cpu(times, "ours_from_disk", "official_loop"),
            "ratio_in_memory": rate["ours"] / rate["official_loop"],
            "ratio_compile": rate["ours_compile"] / rate["official_loop"],
            "ratio_vs_official_inference_mode": rate["ours_from_disk"] / rate["official_loop_inference_mode"],
            "target": target_a,
        },
        "b": {
            "ratio": rate["ours"] / rate["raw_forward"],
            "ratio_cpu": _cpu(times, "ours", "raw_forward"),
            "ratio_compile_vs_eager_raw": rate["ours_compile"] / rate["raw_forward"],
            "target": TARGETS["b"],
        },
    }
    for key in ("a", "b"):
        out[key]["met"] = bool(out[key]["ratio"] >= out[key]["target"])
    # mixed-precision votes against float32 (in memory), or why they were not measured on this machine
    out["amp"] = {
        "ratio_vs_float32": {a: rate[f"ours_{a}"] / rate["ours"] for a in cfg["amp"] if f"ours_{a}" in rate},
        "skipped": amp_skipped,
    }
    return out


def bench_art(cfg: dict, ctx: dict) -> dict:
    """(c) ours vs ART's PyTorchRandomizedSmoothing.certify, equal forward passes per input."""
    device, m, n, n0 = ctx["device"], cfg["cert_models"], cfg["art_inputs"], cfg["art_selection"]
    x_np = ctx["data"]["x_test"][:n]
    x = torch.from_numpy(x_np).to(device)
    sigma_np = np.full(n, SIGMA0)
    sigma = torch.full((n,), SIGMA0, device=device)
    ensemble = StackedEnsemble.from_modules(random_ensemble(m)).to(device)
    noise = noise_fn(m, device)
    smoother = art_smoother("gpu" if device.type == "cuda" else "cpu", n0, SIGMA0, ALPHA)

    def ours(compile=False):
        return lambda: _certify_counts(
            vote(ensemble, x, sigma, noise, 2, batch_size=cfg["batch_size"], compile=compile), sigma_np
        )

    runs = {
        "ours": ours(),
        "ours_compile": ours(compile=True),
        "art": lambda: smoother.certify(x_np, n=m - n0, batch_size=cfg["batch_size"]),
    }
    runs["ours_compile"]()  # compiles once, untimed
    times = interleaved(runs, cfg["repeats"], device)
    rate = {k: m * n / v["best_s"] for k, v in times.items()}  # both: M passes per input (ART: n0 + n)
    ratio = rate["ours"] / rate["art"]
    return {
        "config": {"passes_per_input": m, "nb_inputs": n, "art_selection_n0": n0, "art_estimation_n": m - n0},
        "passes_per_s": {k: round(v, 1) for k, v in rate.items()},
        "times": times,
        "c": {
            "ratio": ratio,
            "ratio_cpu": _cpu(times, "ours", "art"),
            "ratio_compile": rate["ours_compile"] / rate["art"],
            "target": TARGETS["c"],
            "met": bool(ratio >= TARGETS["c"]),
        },
    }


# ------------------------------------------------------------------------------------------------------ (d)
def bench_training(cfg: dict, ctx: dict) -> dict:
    device, m, n = ctx["device"], cfg["train_models"], cfg["train_samples"]
    data = ctx["data"]
    x = torch.from_numpy(data["x_train"][:n]).to(device)
    y = torch.from_numpy(data["y_train"][:n]).to(device)
    sigma = torch.full((len(x),), SIGMA0, device=device)
    kwargs = dict(
        loss_fn=torch.nn.CrossEntropyLoss(),
        optimizer_factory=lambda p: torch.optim.Adam(p, lr=1e-3),
        random_state=0,
        nb_epochs=1,
        batch_size=128,
    )

    def train(**opts):
        return lambda: train_members(MnistCNN(2), x, y, sigma, list(range(m)), **opts, **kwargs)

    runs = {"vmap": train(backend="vmap"), "sequential": train(backend="sequential"), "loop": train(vectorize=False)}
    auto = resolve_backend("auto", device)
    amp_skipped = {}
    for amp in cfg["amp"]:  # mixed-precision training at the default backend, where the estimator allows it
        if amp is None:
            continue
        try:
            check_accelerators(device, amp, False)
        except ValueError as err:
            amp_skipped[amp] = str(err)
            continue
        runs[f"{auto}_{amp}"] = train(backend=auto, amp=amp)
    times = interleaved(runs, cfg["repeats"], device)
    images = m * len(x)
    rate = {k: images / v["best_s"] for k, v in times.items()}
    target = TARGETS["d_gpu"] if device.type == "cuda" else TARGETS["d"]
    amp_ratio = {a: rate[f"{auto}_{a}"] / rate[auto] for a in cfg["amp"] if f"{auto}_{a}" in rate}
    return {
        "amp": {"ratio_vs_float32": amp_ratio, "skipped": amp_skipped},
        "config": {"nb_models": m, "nb_samples": len(x), "epochs": 1, "batch_size": 128, "auto_backend": auto},
        "images_per_s": {k: round(v, 1) for k, v in rate.items()},
        "times": times,
        "d": {
            "ratio": rate["vmap"] / rate["loop"],
            "ratio_cpu": _cpu(times, "vmap", "loop"),
            "ratio_default_backend": rate[auto] / rate["loop"],
            "ratio_default_backend_cpu": _cpu(times, auto, "loop"),
            "target": target,
            "met": bool(rate["vmap"] / rate["loop"] >= target),
            "met_default_backend": bool(rate[auto] / rate["loop"] >= target),
        },
    }


# ------------------------------------------------------------------------------------------------------ (e)
def bench_adaptive(cfg: dict, ctx: dict) -> dict:
    device, data = ctx["device"], ctx["data"]
    m, n = cfg["adaptive_models"], cfg["adaptive_inputs"]
    net = MnistCNN(2)
    est = RABEstimator(
        net,
        torch.nn.CrossEntropyLoss(),
        (1, 28, 28),
        2,
        optimizer=torch.optim.Adam(net.parameters(), lr=1e-3),
        clip_values=(0.0, 1.0),
        device_type="gpu" if device.type == "cuda" else "cpu",
        nb_models=m,
        scale=SIGMA0,
        alpha=ALPHA,
        random_state=0,
    )
    tic = time.perf_counter()
    est.fit(
        data["x_train"][: cfg["adaptive_train"]],
        data["y_train"][: cfg["adaptive_train"]],
        nb_epochs=cfg["adaptive_epochs"],
        batch_size=64,
    )
    train_s = time.perf_counter() - tic
    x, y = data["x_test"][:n], data["y_test"][:n]
    tic = time.perf_counter()
    fixed = est.certify(x, batch_size=cfg["batch_size"], return_details=True)
    fixed_s = time.perf_counter() - tic
    rows = []
    for factor in (0.0, 0.5, 1.0, 1.5, 2.0):
        r = factor * SIGMA0
        fixed_acc = float(stats.certified_accuracy(fixed.pred, fixed.radius, y, [r])[0])
        fixed_cert = (fixed.pred != -1) & (fixed.radius >= r)
        for spending in ("uniform", "final-half"):
            tic = time.perf_counter()
            res = est.certify_adaptive(x, r, spending=spending, batch_size=cfg["batch_size"])
            seconds = time.perf_counter() - tic
            # the floor: votes an input needs even if every vote goes to its class, at the schedule's levels
            p_r = float(threshold_probability(r, SIGMA0))
            reach = np.array([stats.clopper_pearson_lower(n_t, n_t, a_t) for n_t, a_t in zip(res.looks, res.levels)])
            reach = reach >= max(p_r, 0.5 + 1e-12)
            floor = int(res.looks[np.argmax(reach)]) if reach.any() else m
            rows.append(
                {
                    "radius": r,
                    "radius_over_sigma": factor,
                    "spending": spending,
                    "looks": res.looks.tolist(),
                    "passes_ratio": res.total_votes / (m * n),
                    "fixed_certified_accuracy": fixed_acc,
                    "adaptive_certified_accuracy": float(np.mean(res.certified & (res.pred == y))),
                    "certified_accuracy_lost": fixed_acc - float(np.mean(res.certified & (res.pred == y))),
                    "decisions_differ": int(np.sum(res.certified != fixed_cert)),
                    "floor_ratio": floor / m,
                    "wall_s": seconds,
                    "met": bool(res.total_votes / (m * n) <= TARGETS["e"]),
                }
            )
    return {
        "config": {
            "nb_models": m,
            "nb_inputs": n,
            "alpha": ALPHA,
            "sigma": SIGMA0,
            "train_samples": cfg["adaptive_train"],
            "epochs": cfg["adaptive_epochs"],
            "futility_alpha": 0.01,
        },
        "train_s": train_s,
        "fixed_certify_s": fixed_s,
        "clean_accuracy_fixed": float(np.mean(fixed.pred == y)),
        "e": {"rows": rows, "target": TARGETS["e"]},
    }


# ------------------------------------------------------------------------------------------------------ (f)
def _bruteforce_trim(x, c, r, centers, labels, radii):
    """The storage-update rule with exact numpy distances (the reference the memory must reproduce)."""
    if c == -1:
        return c, r
    g = np.sqrt(((centers - x) ** 2).sum(axis=1)) - radii
    g = np.where(labels != c, g, np.inf)
    j = int(np.argmin(g))
    if not g[j] < r:
        return c, r
    return (int(labels[j]), float(-g[j])) if g[j] < 0 else (c, float(g[j]))


def _cdist_screen(a, a_norm2, b, b_norm2):
    """The screen as it was before this issue: ``torch.cdist``'s matrix-product form, which recomputes the stored
    norms and builds augmented matrices at every call (patched into the memory for the ratio in (f))."""
    return torch.cdist(a, b, compute_mode="use_mm_for_euclid_dist")


def _with_cdist(memory: CertificationMemory, xq: torch.Tensor, cq: torch.Tensor):
    with mock.patch.object(distances_module, "_mm_dist", _cdist_screen):
        return memory._nearest_conflict(xq, cq)


def bench_memory(cfg: dict, ctx: dict) -> dict:
    data = ctx["data"]
    rng = np.random.default_rng(0)
    pool = data["x_train"].reshape(len(data["x_train"]), -1).astype(np.float64)
    q = cfg["memory_queries"]
    xq = data["x_test"][:q].reshape(q, -1).astype(np.float64)
    pq, rq = rng.integers(0, 2, q), np.full(q, 0.3)
    rows = []
    for size in cfg["memory_sizes"]:
        idx = rng.integers(0, len(pool), size)
        centers = np.clip(pool[idx] + rng.normal(0, 0.05, (size, pool.shape[1])), 0, 1)  # distinct, MNIST-like
        labels, radii = rng.integers(0, 2, size), rng.uniform(0.05, 0.5, size)
        memory = CertificationMemory(device=ctx["device"])
        memory._append(centers, labels, radii, radii, np.full(size, SIGMA0))  # conservative radii = paper radii
        xq_t, cq_t = torch.from_numpy(xq).to(ctx["device"]), torch.from_numpy(pq).to(ctx["device"])
        runs = {
            "query": lambda mem=memory: mem.query(xq, pq, rq),
            "screen_now": lambda mem=memory, a=xq_t, c=cq_t: mem._nearest_conflict(a, c),
            "screen_before": lambda mem=memory, a=xq_t, c=cq_t: _with_cdist(mem, a, c),
        }
        times = interleaved(runs, cfg["repeats"], ctx["device"])
        pred, rad = memory.query(xq, pq, rq)
        check = min(q, 16)
        ref = [_bruteforce_trim(xq[i], pq[i], rq[i], centers, labels, radii) for i in range(check)]
        same = all(pred[i] == c and abs(rad[i] - r) <= 1e-12 for i, (c, r) in enumerate(ref))
        rows.append(
            {
                "stored_regions": size,
                "queries": q,
                "query_s": times["query"]["median_s"],
                "ms_per_query": 1000 * times["query"]["median_s"] / q,
                "screen_speedup_vs_previous": times["screen_before"]["median_s"] / times["screen_now"]["median_s"],
                "matches_bruteforce_on_first": check,
                "matches_bruteforce": bool(same),
                "trimmed_or_relabelled": int(np.sum((pred != pq) | (rad != rq))),
            }
        )
        del memory
    return {"config": {"dim": int(pool.shape[1]), "chunk_size": 8192}, "f": {"rows": rows}}


# ------------------------------------------------------------------------------------------------------ (g)
def _peak_child(args) -> None:
    """Child process of (g): one certification, then its peak memory as one JSON line on stdout."""
    device = torch.device(args.device)
    n, m = args.inputs, args.models
    paths = sorted(Path(args.peak_dir).glob("smoothed_*.model"), key=lambda p: int(p.stem.split("_")[1]))[:m]
    x_cpu = torch.rand((n, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    baseline = current_rss_mb()
    reset_peak_rss()  # the peak of the certification itself, not of the imports before it
    tracemalloc.start()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if args.peak == "official":
        official_loop(paths, x_cpu, SIGMA0, device)
    else:
        ens = StackedEnsemble.from_state_dicts(MnistCNN(2), LazyCheckpoints(paths, device))
        x = x_cpu.to(device)
        counts = vote(ens, x, torch.full((n,), SIGMA0, device=device), noise_fn(m, device), 2, batch_size=args.batch)
        _certify_counts(counts, np.full(n, SIGMA0))
    sync(device)
    _, traced = tracemalloc.get_traced_memory()
    out = {"rss_before_mb": baseline, "peak_rss_mb": peak_rss_mb(), "tracemalloc_peak_mb": traced / 2**20}
    if device.type == "cuda":
        out["cuda_max_memory_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(json.dumps(out))


def bench_peak(cfg: dict, ctx: dict) -> dict:
    rows = {}
    for kind in ("ours", "official"):
        cmd = [
            sys.executable,
            __file__,
            "--peak",
            kind,
            "--peak-dir",
            str(ctx["paths"][0].parent),
            "--device",
            ctx["device"].type,
            "--inputs",
            str(cfg["cert_inputs"]),
            "--models",
            str(cfg["cert_models"]),
            "--batch",
            str(cfg["batch_size"]),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows[kind] = json.loads(done.stdout.strip().splitlines()[-1])
    params_mb = sum(p.numel() for p in MnistCNN(2).parameters()) * 4 / 2**20
    return {
        "config": {
            "nb_models": cfg["cert_models"],
            "nb_inputs": cfg["cert_inputs"],
            "stacked_parameters_mb": params_mb * cfg["cert_models"],
        },
        "g": rows,
    }


# ------------------------------------------------------------------------------------------------------ (h)
def bench_sigma(cfg: dict, ctx: dict) -> dict:
    device, n, steps, draws = ctx["device"], cfg["sigma_inputs"], cfg["sigma_steps"], 16
    x = torch.from_numpy(ctx["data"]["x_test"][:n]).to(device)
    model = random_ensemble(1)[0].to(device).eval()
    plain = lambda t: model(t)  # noqa: E731  (not a Module: no private channels-last copy)

    def forward_only():
        with torch.inference_mode():
            for _ in range(steps):
                for n0 in range(0, n, 16):
                    model(x[n0 : n0 + 16].repeat_interleave(draws, 0))

    runs = {
        "batched_default": lambda: optimize_sigma(model, x, SIGMA0, steps=steps, n_samples=draws),
        "previous_default": lambda: optimize_sigma(plain, x, SIGMA0, steps=steps, n_samples=draws, batch_size=256),
        "per_sample": lambda: optimize_sigma(model, x, SIGMA0, steps=steps, n_samples=draws, batch_size=1),
        "forward_only": forward_only,
    }
    if device.type == "cuda":
        runs.pop("per_sample")  # thousands of tiny launches: minutes, and says nothing new
    times = interleaved(runs, cfg["repeats"], device)
    rate = {k: n * steps * draws / v["best_s"] for k, v in times.items()}
    out = {
        "config": {"nb_inputs": n, "steps": steps, "draws": draws},
        "image_steps_per_s": {k: round(v, 1) for k, v in rate.items()},
        "times": times,
        "h": {
            "vs_previous_default": rate["batched_default"] / rate["previous_default"],
            "fraction_of_forward_only": rate["batched_default"] / rate["forward_only"],
        },
    }
    if "per_sample" in rate:
        out["h"]["vs_per_sample"] = rate["batched_default"] / rate["per_sample"]
    return out


# ---------------------------------------------------------------------------------------------------- driver
SECTIONS = {
    "a": bench_certify,
    "c": bench_art,
    "d": bench_training,
    "e": bench_adaptive,
    "f": bench_memory,
    "g": bench_peak,
    "h": bench_sigma,
}


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": __import__("os").cpu_count(),
    }
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line)
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--only", default="a,c,d,e,f,g,h", help="sections to run (b runs with a)")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own choice)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a preset value (JSON), e.g. --set cert_models=200",
    )
    parser.add_argument("--peak", choices=("ours", "official"), help=argparse.SUPPRESS)
    parser.add_argument("--peak-dir", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--models", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peak:
        _peak_child(args)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = dict(PRESETS[args.preset])
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in cfg:
            print(f"--set: unknown key {key!r}; keys: {sorted(cfg)}", file=sys.stderr)
            return 2
        cfg[key] = json.loads(value)
    device = torch.device(cfg["device"])
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"preset {args.preset!r} needs a CUDA device", file=sys.stderr)
        return 2
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        print(f"unknown sections {unknown}; choose from {sorted(SECTIONS)}", file=sys.stderr)
        return 2
    data = mnist_like(
        max(cfg["train_samples"], cfg["adaptive_train"]),
        max(cfg["cert_inputs"], cfg["adaptive_inputs"], cfg["sigma_inputs"], cfg["memory_queries"]),
    )
    report = {
        "preset": args.preset,
        "config": cfg,
        "machine": machine(),
        "environment": environment(),
        "data": data["source"],
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": time.strftime("%Y-%m-%d %H:%M"),
        "loadavg_start": loadavg(),
        "sections": {},
    }
    with tempfile.TemporaryDirectory(prefix="speed-ckpt-") as tmp:
        ctx = {"device": device, "data": data}
        if {"a", "g"} & set(only):
            ctx["paths"] = save_official_checkpoints(Path(tmp), cfg["cert_models"])
        for key in only:
            before, tic = loadavg(), time.perf_counter()
            print(f"[speed] section {key} ...", file=sys.stderr, flush=True)
            result = SECTIONS[key](cfg, ctx)
            result.update(loadavg_before=before, loadavg_after=loadavg(), section_s=time.perf_counter() - tic)
            report["sections"][key] = result
    report["loadavg_end"] = loadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"speed-{args.preset}"
    write_json(stem.with_suffix(".json"), report)
    write_text(stem.with_suffix(".md"), markdown(report))
    print(markdown(report))
    return 0


def _fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def markdown(report: dict) -> str:
    """The summary table: each ratio, its target and whether it is met, then the per-section details."""
    s, m = report["sections"], report["machine"]
    lines = [
        f"# Speed benchmarks, preset `{report['preset']}`",
        "",
        f"Machine: {m['cpu']}, {m['cpu_count']} cores, torch {m['torch']} ({m['torch_threads']} threads)"
        + (f", GPU {m['gpu']}" if "gpu" in m else ", no GPU (GPU figures not measured)")
        + ".",
        f"Data: {report['data']}. Started {report['started']}; load average at start {report['loadavg_start']}, "
        f"at end {report['loadavg_end']}.",
        "",
        "Ratios are of wall-clock throughputs (best of the interleaved repeats: other jobs on a shared machine only "
        "ever slow a run down); the CPU-time column gives the same ratio by process CPU time (all threads).",
        "",
        f"Regenerate with `{report.get('command', 'python benchmarks/speed.py')}`; what the figures mean, and why the "
        "missed targets are missed: `benchmarks/README.md`.",
        "",
        "| figure | ratio (wall) | ratio (CPU time) | target | met (wall) |",
        "|---|---|---|---|---|",
    ]

    def row(name, ratio, target, met, fmt=">=", cpu=None):
        cpu_text = "-" if cpu is None else f"{cpu:.3g}"
        lines.append(f"| {name} | {ratio:.3g} | {cpu_text} | {fmt} {target:.3g} | {'yes' if met else '**no**'} |")

    if "a" in s:
        a, b = s["a"]["a"], s["a"]["b"]
        row(
            "(a) certify vs official loop (files loaded, as eval.py)",
            a["ratio"],
            a["target"],
            a["met"],
            cpu=a["ratio_cpu"],
        )
        row(
            "(a') same, ensemble already in memory",
            a["ratio_in_memory"],
            a["target"],
            a["ratio_in_memory"] >= a["target"],
        )
        row(
            "(a') same with compile=True (in memory)",
            a["ratio_compile"],
            a["target"],
            a["ratio_compile"] >= a["target"],
        )
        row(
            "(a'') vs official loop under inference_mode",
            a["ratio_vs_official_inference_mode"],
            a["target"],
            a["ratio_vs_official_inference_mode"] >= a["target"],
        )
        for amp, ratio in s["a"].get("amp", {}).get("ratio_vs_float32", {}).items():
            lines.append(f"| (a3) votes with amp={amp!r} vs float32 (may flip near-ties) | {ratio:.3g} | - | - | - |")
        for amp, why in s["a"].get("amp", {}).get("skipped", {}).items():
            lines.append(f"| (a3) votes with amp={amp!r}: not measured here ({why}) | - | - | - | - |")
        row(
            "(b) certify vs raw forward passes of the stacked ensemble",
            b["ratio"],
            b["target"],
            b["met"],
            cpu=b["ratio_cpu"],
        )
        row(
            "(b') certify with compile=True vs the eager raw forward passes",
            b["ratio_compile_vs_eager_raw"],
            b["target"],
            b["ratio_compile_vs_eager_raw"] >= b["target"],
        )
    if "c" in s:
        c = s["c"]["c"]
        row(
            "(c) certify vs ART PyTorchRandomizedSmoothing.certify",
            c["ratio"],
            c["target"],
            c["met"],
            cpu=c["ratio_cpu"],
        )
        row("(c') same, compile=True", c["ratio_compile"], c["target"], c["ratio_compile"] >= c["target"])
    if "d" in s:
        d = s["d"]["d"]
        row("(d) training: vmap vs loop", d["ratio"], d["target"], d["met"], cpu=d["ratio_cpu"])
        row(
            f"(d') training: default backend ({s['d']['config']['auto_backend']}) vs loop",
            d["ratio_default_backend"],
            d["target"],
            d["met_default_backend"],
            cpu=d["ratio_default_backend_cpu"],
        )
        for amp, ratio in s["d"].get("amp", {}).get("ratio_vs_float32", {}).items():
            lines.append(f"| (d3) training with amp={amp!r} vs float32 (default backend) | {ratio:.3g} | - | - | - |")
        for amp, why in s["d"].get("amp", {}).get("skipped", {}).items():
            lines.append(f"| (d3) training with amp={amp!r}: not measured here ({why}) | - | - | - | - |")
    if "e" in s:
        for r in s["e"]["e"]["rows"]:
            row(
                f"(e) adaptive/fixed passes, r = {r['radius_over_sigma']:g} sigma, {r['spending']} (acc. lost "
                f"{r['certified_accuracy_lost']:.4f})",
                r["passes_ratio"],
                s["e"]["e"]["target"],
                r["met"],
                "<=",
            )
    if "h" in s:
        h = s["h"]["h"]
        lines.append(
            f"| (h) sigma SGA: batched default vs previous default | {h['vs_previous_default']:.3g} | - | - | - |"
        )
        lines.append(
            f"| (h) sigma SGA: fraction of forward-only throughput | {h['fraction_of_forward_only']:.3g} | - | - | - |"
        )
        if "vs_per_sample" in h:
            lines.append(f"| (h) sigma SGA: batched vs one sample at a time | {h['vs_per_sample']:.3g} | - | - | - |")
    lines += ["", "## Details", ""]
    for key in ("a", "c", "d", "h"):
        if key in s:
            rates = s[key].get("passes_per_s") or s[key].get("images_per_s") or s[key].get("image_steps_per_s")
            lines.append(
                f"- ({key}) config {s[key]['config']}; throughput (best of {report['config']['repeats']}, "
                f"per second) {rates}; load {s[key]['loadavg_before']} -> {s[key]['loadavg_after']}"
            )
    if "e" in s:
        e = s["e"]
        lines.append(
            f"- (e) config {e['config']}; training {e['train_s']:.0f} s, fixed certify "
            f"{e['fixed_certify_s']:.1f} s, clean accuracy {e['clean_accuracy_fixed']:.4f}"
        )
        lines += [
            "",
            "| r / sigma | spending | passes ratio | floor (every vote correct) | cert. acc. fixed | adaptive | "
            "decisions differ |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['radius_over_sigma']:g} | {r['spending']} | {r['passes_ratio']:.3f} | {r['floor_ratio']:.3f} | "
            f"{r['fixed_certified_accuracy']:.4f} | {r['adaptive_certified_accuracy']:.4f} | "
            f"{r['decisions_differ']} |"
            for r in e["e"]["rows"]
        ]
        lines.append("")
    if "f" in s:
        lines += [
            "| (f) stored regions | ms per query | screen speed-up vs previous | matches brute force |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['stored_regions']} | {r['ms_per_query']:.3g} | {r['screen_speedup_vs_previous']:.3g} | "
            f"{r['matches_bruteforce']} (first {r['matches_bruteforce_on_first']}) |"
            for r in s["f"]["f"]["rows"]
        ]
        lines.append("")
    if "g" in s:
        g = s["g"]
        lines += [
            f"(g) peak memory, M = {g['config']['nb_models']}, N = {g['config']['nb_inputs']} (stacked "
            f"parameters {g['config']['stacked_parameters_mb']:.0f} MiB):",
            "",
            "| run | RSS before (MiB) | peak RSS (MiB) | tracemalloc peak (MiB) | CUDA max allocated (MiB) |",
            "|---|---|---|---|---|",
        ]
        for kind, r in g["g"].items():
            lines.append(
                f"| {kind} | {r['rss_before_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
                f"{r['tracemalloc_peak_mb']:.1f} | {_fmt(r.get('cuda_max_memory_allocated_mb', '-'))} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
