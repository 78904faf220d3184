"""One command for a CUDA machine (issue 21): is every CUDA path right, and how fast is it?

Usage, from the repository root of a checkout (the package need not be installed; its dependencies must be, with a
CUDA build of torch)::

    python benchmarks/gpu_check.py                      # on a CUDA machine: about 5-8 minutes
    python benchmarks/gpu_check.py --dry-run --out DIR  # anywhere, on the CPU, tiny sizes: checks the script

Without CUDA (and without ``--dry-run``) it prints one line saying so and exits 0. Steps, each recorded:

1. the ``gpu`` tests (``pytest -m gpu``; the dry run only collects them);
2. CUDA against the CPU on the same inputs and the same noise (drawn on the CPU and moved): the votes of a fixed
   16-member MNIST-CNN ensemble (at most 1 % of the votes may move: cuDNN's TF32 convolutions round differently,
   which can flip near-ties) and the sigma optimiser's sigmas (at most 1e-2 relative);
3. timings, as ratios taken side by side in this run: certification (votes and the certificate) against the official
   Cert-SSB loop (one checkpoint file after the other) and against the raw forward passes of the same stacked
   ensemble (the bound); vmap training against the member loop at M = 100;
4. the paper-scale MNIST 1-vs-0 fit (12,665 training samples, M = 1000 members, 20 epochs, plus the sigma optimiser
   of every training sample): a slice of it is timed and the whole is extrapolated, labelled as such.

The data are MNIST-shaped synthetic images (``speed_baselines.mnist_like``): no download, and the timings do not
depend on the pixel values. Results: ``<out>/gpu-check.json`` and ``gpu-check.md`` (default ``benchmarks/results``
on CUDA). Exit status 1 when a check fails (the results are written first).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]  # speed_baselines, and the package from this checkout

import numpy as np  # noqa: E402
import torch  # noqa: E402
from speed_baselines import (  # noqa: E402
    interleaved,
    mnist_like,
    noise_fn,
    official_loop,
    random_ensemble,
    raw_forward,
    save_official_checkpoints,
)

from art_certssbd import sigma as sigma_module  # noqa: E402
from art_certssbd.counts import certify_counts  # noqa: E402
from art_certssbd.ensemble import StackedEnsemble, vote  # noqa: E402
from art_certssbd.models import MnistCNN  # noqa: E402
from art_certssbd.report import write_results  # noqa: E402
from art_certssbd.training import train_members  # noqa: E402

SIGMA0, ALPHA = 0.12, 1e-3
VOTE_TOLERANCE = 0.01  # fraction of the votes that may move between CUDA and the CPU
SIGMA_TOLERANCE = 1e-2  # relative difference of the sigmas
PAPER = {"nb_samples": 12665, "nb_models": 1000, "nb_epochs": 20, "sigma_steps": 30, "sigma_samples": 16}
SIZES = {
    "full": {"agree_models": 16, "agree_inputs": 256, "cert_models": 1000, "cert_inputs": 2115, "batch_size": 1024,
             "train_models": 100, "train_samples": 4096, "slice_models": 50, "slice_sigma": 2048, "sigma_steps": 30,
             "repeats": 2},
    "dry-run": {"agree_models": 3, "agree_inputs": 8, "cert_models": 4, "cert_inputs": 8, "batch_size": 8,
                "train_models": 3, "train_samples": 32, "slice_models": 2, "slice_sigma": 4, "sigma_steps": 2,
                "repeats": 1},
}  # fmt: skip


def run_gpu_tests(dry_run: bool) -> dict:
    """Step 1: ``pytest -m gpu`` in a subprocess (the dry run only collects the tests)."""
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", str(ROOT / "tests")]
    if dry_run:
        cmd.append("--collect-only")
    tic = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or [""]
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors|selected)", tail[0])}
    ok = proc.returncode == 0 and not counts.get("failed") and not counts.get("error") and not counts.get("errors")
    return {"command": " ".join(cmd[1:]), "summary": tail[0], "counts": counts, "ok": bool(ok),
            "seconds": round(time.perf_counter() - tic, 1)}  # fmt: skip


def _cpu_noise(nb_models: int, device: torch.device):
    """The test noise of ``speed_baselines.noise_fn`` drawn on the CPU and moved to ``device``: both runs see it."""
    draw = noise_fn(nb_models, torch.device("cpu"))
    return lambda members, draws, shape: draw(members, draws, shape).to(device)


def check_agreement(device: torch.device, sizes: dict, data: dict) -> dict:
    """Step 2: votes and sigmas on ``device`` against the CPU, on the same inputs and noise."""
    m, n = sizes["agree_models"], sizes["agree_inputs"]
    x = torch.from_numpy(data["x_test"][:n])
    sigma = torch.full((n,), SIGMA0)
    cpu_ens = StackedEnsemble.from_modules(random_ensemble(m))
    dev_ens = StackedEnsemble.from_modules(random_ensemble(m)).to(device)
    ref = vote(cpu_ens, x, sigma, _cpu_noise(m, torch.device("cpu")), 2).numpy()
    out = vote(dev_ens, x.to(device), sigma.to(device), _cpu_noise(m, device), 2).cpu().numpy()
    moved = float(np.abs(out - ref).sum() / 2 / ref.sum())

    draw = sigma_module.sigma_noise

    def cpu_sigma_noise(seed, steps, n_samples, shape, dev, dtype):  # the same draws on both devices
        return draw(seed, steps, n_samples, shape, "cpu", dtype).to(dev)

    model = random_ensemble(1)[0]
    with mock.patch.object(sigma_module, "sigma_noise", cpu_sigma_noise):
        s_cpu = sigma_module.optimize_sigma(model, x, SIGMA0, steps=5, n_samples=8, lr=5e-3, random_state=1)
        s_dev = sigma_module.optimize_sigma(model.to(device), x.to(device), SIGMA0, steps=5, n_samples=8, lr=5e-3,
                                            random_state=1).cpu()  # fmt: skip
    rel = float(((s_dev - s_cpu).abs() / s_cpu).max())
    return {
        "nb_models": m,
        "nb_inputs": n,
        "votes_moved_fraction": moved,
        "votes_tolerance": VOTE_TOLERANCE,
        "sigma_max_relative_difference": rel,
        "sigma_tolerance": SIGMA_TOLERANCE,
        "ok": bool(moved <= VOTE_TOLERANCE and rel <= SIGMA_TOLERANCE),
    }


def time_certify(device: torch.device, sizes: dict, data: dict, tmp: Path) -> dict:
    """Step 3a/b: certification vs the official loop and vs the raw forward passes (passes per second)."""
    m, n, bs = sizes["cert_models"], sizes["cert_inputs"], sizes["batch_size"]
    x_cpu = torch.from_numpy(data["x_test"][:n])
    x = x_cpu.to(device)
    sigma = torch.full((n,), SIGMA0, device=device)
    ensemble = StackedEnsemble.from_modules(random_ensemble(m)).to(device)
    paths = save_official_checkpoints(tmp, m)
    noise = noise_fn(m, device)

    def ours():
        counts = vote(ensemble, x, sigma, noise, 2, batch_size=bs).cpu().numpy()
        certify_counts(counts, np.full(n, SIGMA0), ALPHA)

    runs = {
        "ours": ours,
        "official_loop": lambda: official_loop(paths, x_cpu, SIGMA0, device),
        "raw_forward": lambda: raw_forward(ensemble, x, bs, 8192),
    }
    times = interleaved(runs, sizes["repeats"], device, warmup=True)
    rate = {k: m * n / v["best_s"] for k, v in times.items()}
    return {
        "nb_models": m,
        "nb_inputs": n,
        "passes_per_s": {k: round(v, 1) for k, v in rate.items()},
        "vs_official_loop": rate["ours"] / rate["official_loop"],
        "vs_raw_forward": rate["ours"] / rate["raw_forward"],
    }


def _train(device, x, y, members, nb_epochs=1, **opts):
    sigma = torch.full((len(x),), SIGMA0, device=device)
    return train_members(MnistCNN(2), x, y, sigma, members, loss_fn=torch.nn.CrossEntropyLoss(),
                         optimizer_factory=lambda p: torch.optim.Adam(p, lr=1e-3), random_state=0,
                         nb_epochs=nb_epochs, batch_size=128, **opts)  # fmt: skip


def time_training(device: torch.device, sizes: dict, data: dict) -> dict:
    """Step 3c: vmap training against the member loop (images per second, one epoch)."""
    m, n = sizes["train_models"], sizes["train_samples"]
    x = torch.from_numpy(data["x_train"][:n]).to(device)
    y = torch.from_numpy(data["y_train"][:n]).to(device)
    members = list(range(m))
    runs = {
        "vmap": lambda: _train(device, x, y, members, backend="vmap"),
        "loop": lambda: _train(device, x, y, members, vectorize=False),
    }
    times = interleaved(runs, 1, device, warmup=False)
    rate = {k: m * n / v["best_s"] for k, v in times.items()}
    return {"nb_models": m, "nb_samples": n, "images_per_s": {k: round(v, 1) for k, v in rate.items()},
            "vmap_vs_loop": rate["vmap"] / rate["loop"]}  # fmt: skip


def time_paper_fit(device: torch.device, sizes: dict, data: dict) -> dict:
    """Step 4: a slice of the paper-scale fit, timed, and the whole extrapolated (labelled so)."""
    x_all = torch.from_numpy(data["x_train"]).to(device)
    y_all = torch.from_numpy(data["y_train"]).to(device)
    members = list(range(sizes["slice_models"]))
    torch.cuda.synchronize() if device.type == "cuda" else None
    tic = time.perf_counter()
    _train(device, x_all, y_all, members, backend="auto")
    torch.cuda.synchronize() if device.type == "cuda" else None
    train_s = time.perf_counter() - tic
    k = sizes["slice_sigma"]
    tic = time.perf_counter()
    steps = sizes["sigma_steps"]
    sigma_module.optimize_sigma(random_ensemble(1)[0].to(device), x_all[:k], SIGMA0, steps=steps,
                                n_samples=PAPER["sigma_samples"])  # fmt: skip
    torch.cuda.synchronize() if device.type == "cuda" else None
    sigma_s = time.perf_counter() - tic
    n = len(x_all)
    train_total = train_s * (PAPER["nb_models"] / len(members)) * PAPER["nb_epochs"] * (PAPER["nb_samples"] / n)
    sigma_total = sigma_s * (PAPER["nb_samples"] / k) * (PAPER["sigma_steps"] / steps)
    return {
        "measured": {"members": len(members), "epochs": 1, "samples": n, "train_s": round(train_s, 2),
                     "sigma_samples": k, "sigma_steps": steps, "sigma_s": round(sigma_s, 2)},
        "paper": PAPER,
        "extrapolated_train_s": round(train_total, 1),
        "extrapolated_sigma_s": round(sigma_total, 1),
        "extrapolated_total_s": round(train_total + sigma_total, 1),
        "label": "extrapolated from the measured slice (linear in members, epochs, samples and steps)",
    }  # fmt: skip


def _tiled(data: dict, n_train: int | None) -> dict:
    """The training set repeated up to the paper's size (MNIST may be absent: then ~180 digits images), or cut to
    ``n_train``: throughput depends on the batch shapes, not on the pixel values."""
    size = PAPER["nb_samples"] if n_train is None else n_train
    idx = np.resize(np.arange(len(data["x_train"])), size)
    return {**data, "x_train": data["x_train"][idx], "y_train": data["y_train"][idx]}


def render(report: dict) -> str:
    a, c, t, p = report["agreement"], report["certify"], report["training"], report["paper_fit"]
    g = report["gpu_tests"]
    dry = " (dry run on the CPU: the figures check the script, nothing else)" if report["dry_run"] else ""
    lines = [
        f"# GPU check{dry}",
        "",
        f"Device: {report['device_name']}; torch {report['torch']}; {report['started']}; "
        f"{report['seconds']:.0f} s in all. Command: `{report['command']}`.",
        "",
        "| check | result | limit | ok |",
        "|---|---|---|---|",
        f"| `gpu` tests | {g['summary']} | all pass | {'yes' if g['ok'] else '**no**'} |",
        f"| votes moved, device vs CPU ({a['nb_models']} members, {a['nb_inputs']} inputs) | "
        f"{a['votes_moved_fraction']:.4f} | <= {a['votes_tolerance']} | {'yes' if a['ok'] else '**no**'} |",
        f"| sigma, max relative difference device vs CPU | {a['sigma_max_relative_difference']:.2e} | "
        f"<= {a['sigma_tolerance']} | {'yes' if a['ok'] else '**no**'} |",
        "",
        "| timing (ratio of two runs side by side) | ratio |",
        "|---|---|",
        f"| certify vs the official loop (M = {c['nb_models']}, {c['nb_inputs']} inputs) | "
        f"{c['vs_official_loop']:.3g} |",
        f"| certify vs the raw forward passes (the bound) | {c['vs_raw_forward']:.3g} |",
        f"| training: vmap vs the member loop (M = {t['nb_models']}, {t['nb_samples']} samples, 1 epoch) | "
        f"{t['vmap_vs_loop']:.3g} |",
        "",
        f"Paper-scale MNIST 1-vs-0 fit (N = {p['paper']['nb_samples']}, M = {p['paper']['nb_models']}, "
        f"{p['paper']['nb_epochs']} epochs, sigma optimiser {p['paper']['sigma_steps']} steps x "
        f"{p['paper']['sigma_samples']} draws), **{p['label']}**: training {p['extrapolated_train_s']:.0f} s, "
        f"sigmas {p['extrapolated_sigma_s']:.0f} s, total {p['extrapolated_total_s']:.0f} s "
        f"(measured: {p['measured']['members']} members x 1 epoch in {p['measured']['train_s']} s, "
        f"{p['measured']['sigma_samples']} sigmas x {p['measured']['sigma_steps']} steps in "
        f"{p['measured']['sigma_s']} s).",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU: checks the script itself")
    parser.add_argument("--out", help="results folder (default benchmarks/results; required with --dry-run)")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here, nothing to check (--dry-run runs the script on the CPU at tiny sizes)")
        return 0
    if args.dry_run and not args.out:
        parser.error("--dry-run needs --out (a dry run never writes into benchmarks/results)")
    device = torch.device("cpu" if args.dry_run else "cuda")
    sizes = SIZES["dry-run" if args.dry_run else "full"]
    started, tic = time.strftime("%Y-%m-%d %H:%M"), time.perf_counter()
    data = _tiled(mnist_like(PAPER["nb_samples"], max(sizes["cert_inputs"], 256)), 64 if args.dry_run else None)

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        report = {
            "dry_run": args.dry_run,
            "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU (dry run)",
            "torch": torch.__version__,
            "started": started,
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "data": data["source"],
            "gpu_tests": run_gpu_tests(args.dry_run),
            "agreement": check_agreement(device, sizes, data),
            "certify": time_certify(device, sizes, data, Path(tmp)),
            "training": time_training(device, sizes, data),
            "paper_fit": time_paper_fit(device, sizes, data),
        }
    report["seconds"] = time.perf_counter() - tic
    report["ok"] = bool(report["gpu_tests"]["ok"] and report["agreement"]["ok"])
    out = Path(args.out) if args.out else HERE / "results"
    json_path, md_path = write_results(out, "gpu-check", report, render(report))
    print(f"gpu_check: {'all checks passed' if report['ok'] else 'A CHECK FAILED'}; wrote {json_path} and {md_path}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
