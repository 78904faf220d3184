"""Early-stopped sigma optimisation against today's full run (issue 16, part 4), side by side in one run.

On scikit-learn's 8x8 digits (1,347 training samples, offline) a :class:`DigitsCNN` base model is warmed up at
sigma0 as ``CertSSBDEstimator.fit`` does, then the training-set sigmas are optimised with the estimator's defaults
(30 steps x 16 draws, ``lr = 5e-3``, bounds ``[sigma0, 4 sigma0]``), once with every sample running all steps and once
per early-stopping setting. Reported: noisy images through the model (counted by a wrapping module), model calls,
wall and process CPU time (best of ``--repeats``), and the largest and mean ``|sigma - sigma_full|``.

Usage, from the repository root (about three minutes on 2 CPU cores; timings taken while another heavy job runs are
worthless, hence the lock)::

    flock /tmp/certssbd-heavy.lock .venv/bin/python benchmarks/sigma_early_stop.py
    .venv/bin/python benchmarks/sigma_early_stop.py --smoke --out /tmp/es    # seconds: checks the script

writes ``benchmarks/results/sigma-early-stop.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from art_certssbd.datasets import load_digits
from art_certssbd.experiment import environment
from art_certssbd.models import DigitsCNN
from art_certssbd.noise import derive_seed
from art_certssbd.sigma import optimize_sigma
from art_certssbd.training import fit_model

SIGMA0 = 0.25


class Tally:
    """Call and row counts, shared (not copied) by the channels-last copy ``optimize_sigma`` makes of the model."""

    def __init__(self) -> None:
        self.calls = 0
        self.rows = 0

    def __deepcopy__(self, memo):
        return self


class Counting(torch.nn.Module):
    """Wraps a model and counts its calls and the rows (noisy images) it is given."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.tally = Tally()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.tally.calls += 1
        self.tally.rows += x.shape[0]
        return self.net(x)


def base_model(x: torch.Tensor, y: torch.Tensor, epochs: int) -> torch.nn.Module:
    """The warm-up model of ``CertSSBDEstimator.fit``: DigitsCNN trained ``epochs`` epochs on ``x + sigma0 * eps``."""
    torch.manual_seed(0)
    net = DigitsCNN(10)
    fit_model(
        net,
        x,
        y,
        SIGMA0,
        loss_fn=torch.nn.CrossEntropyLoss(),
        optimizer=torch.optim.Adam(net.parameters(), lr=3e-3),
        random_state=derive_seed(0, "init"),
        nb_epochs=epochs,
        batch_size=64,
    )
    return net.eval()


def run(net, x, settings, update, steps, repeats):
    """Every setting ``repeats`` times, interleaved (so that a busy machine slows them alike); best times kept."""
    best = {name: [float("inf"), float("inf")] for name, _ in settings}
    out = {}
    for _ in range(repeats):
        for name, kwargs in settings:
            counter = Counting(net)
            start, start_cpu = time.perf_counter(), time.process_time()
            sigma = optimize_sigma(counter, x, SIGMA0, steps=steps, update=update, random_state=7, **kwargs)
            wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
            best[name] = [min(best[name][0], wall), min(best[name][1], cpu)]
            out[name] = (sigma, counter.tally)
    rows = []
    ref, ref_tally = out[settings[0][0]]
    ref_wall = best[settings[0][0]][0]
    for name, kwargs in settings:
        sigma, tally = out[name]
        diff = (sigma - ref).abs()
        rows.append(
            {
                "setting": name,
                "update": update,
                **kwargs,
                "noisy_images": tally.rows,
                "model_calls": tally.calls,
                "mean_steps_per_sample": round(tally.rows / (x.shape[0] * 16), 2),
                "seconds": round(best[name][0], 3),
                "cpu_seconds": round(best[name][1], 3),
                "passes_ratio": round(tally.rows / ref_tally.rows, 4),
                "time_ratio": round(best[name][0] / ref_wall, 4),
                "max_abs_sigma_diff": float(diff.max()),
                "mean_abs_sigma_diff": float(diff.mean()),
                "max_rel_sigma_diff": float((diff / ref).max()),
                "frac_at_sigma_min": float((sigma <= SIGMA0 + 1e-7).float().mean()),
                "frac_at_sigma_max": float((sigma >= 4 * SIGMA0 - 1e-7).float().mean()),
                "mean_sigma": float(sigma.mean()),
            }
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script in seconds")
    parser.add_argument("--out", default="benchmarks/results", help="output folder")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    x_train, y_train, _, _ = load_digits()
    x, y = torch.from_numpy(x_train), torch.from_numpy(y_train)
    steps, epochs, repeats = 30, 5, args.repeats
    if args.smoke:
        x, y, steps, epochs, repeats = x[:64], y[:64], 6, 1, 1
    net = base_model(x, y, epochs)
    for p in net.parameters():
        p.requires_grad_(False)

    settings = [
        ("full (today)", {}),
        ("early_stop tol=1e-3 patience=3 (proposed defaults)", {"early_stop": True, "tol": 1e-3, "patience": 3}),
        ("early_stop tol=0 patience=3 (bound rule only)", {"early_stop": True, "tol": 0.0, "patience": 3}),
        ("early_stop tol=1e-2 patience=3", {"early_stop": True, "tol": 1e-2, "patience": 3}),
    ]
    load_before = os.getloadavg()[0]
    rows = run(net, x, settings, "gradient", steps, repeats)
    rows += run(net, x, settings[:2], "reference", steps, repeats)
    load_after = os.getloadavg()[0]

    result = {
        "what": "training-set sigma optimisation, full vs early-stopped (issue 16 part 4)",
        "data": f"sklearn digits train split, {x.shape[0]} samples, 1x8x8",
        "model": f"DigitsCNN warmed up {epochs} epochs at sigma0={SIGMA0}",
        "sga": {"steps": steps, "n_samples": 16, "lr": 5e-3, "bounds": [SIGMA0, 4 * SIGMA0], "seed": 7},
        "timing": f"best of {repeats}, settings interleaved",
        "load_average_1min": {"before": load_before, "after": load_after, "cores": os.cpu_count()},
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads(), "torch": torch.__version__},
        "environment": environment(),
        "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sigma-early-stop.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Early-stopped sigma optimisation vs today's full run",
        "",
        f"{result['data']}; {result['model']}; SGA {steps} steps x 16 draws, lr 5e-3, bounds "
        f"[{SIGMA0}, {4 * SIGMA0}]; wall time {result['timing']} on {result['machine']['threads']} threads. "
        "Noisy images = rows given to the model (counted by a wrapping module); differences are against the full "
        "run with the same update.",
        "",
        f"1-minute load average {load_before:.1f} before and {load_after:.1f} after the timed runs on "
        f"{os.cpu_count()} cores; this run accounts for about {torch.get_num_threads()}, and more means another job "
        "shared the machine and inflated the times unevenly (passes and sigmas are deterministic).",
        "",
        "| update | setting | noisy images | ratio | steps per sample | model calls | seconds | CPU seconds "
        "| time ratio | max abs sigma diff | mean abs diff | max rel diff | at sigma_min | at sigma_max |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['update']} | {r['setting']} | {r['noisy_images']:,} | {r['passes_ratio']:.3f} "
            f"| {r['mean_steps_per_sample']:.1f} | {r['model_calls']} "
            f"| {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | {r['time_ratio']:.3f} | {r['max_abs_sigma_diff']:.2e} "
            f"| {r['mean_abs_sigma_diff']:.2e} | {r['max_rel_sigma_diff']:.2e} | {r['frac_at_sigma_min']:.3f} "
            f"| {r['frac_at_sigma_max']:.3f} |"
        )
    (out / "sigma-early-stop.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
