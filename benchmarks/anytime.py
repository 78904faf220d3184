"""Anytime-valid certification and the wave-grown ensemble (issue 16), measured on MNIST 1 vs 0.

Usage, from the repository root (MNIST in the cache, see ``benchmarks/README.md``; about 15 minutes on 2 cores)::

    flock /tmp/certssbd-heavy.lock python benchmarks/anytime.py        # --quick: a smaller run, seconds
    python benchmarks/anytime.py --only-a      # rerun (a) only (--only-b: (b) only), keeping the other's results

writes ``benchmarks/results/anytime-cpu.{json,md}``:

(a) **passes per input**: a RAB ensemble of M = 1000 MNIST CNNs (sigma 0.12, alpha 1e-3, 256 training images, 2
    epochs; the speed preset's section (e)); for 500 test images and r = 0, 0.25, 0.5, 1, 1.5, 2 sigma: the mean votes
    per input of ``certify_adaptive`` with ``bound="anytime"`` (a look after every vote) and with today's fixed
    schedule (Clopper-Pearson, uniform spending), against the unanimous-vote floor of a fixed-n Clopper-Pearson test
    (the fewest votes any valid fixed-n test needs), and the certified accuracy each loses against ``certify``;
(b) **members trained**: ``fit(..., growth=Growth(...))`` (waves of 25, tol 0.005, patience 2, watching r = 0.5 on
    500 held-out training images) against a fixed M = 1000 ensemble (sigma 0.5 and 1.0), certified accuracy at
    r = 0.25 and 0.5 on the test images (the grown ensemble with its anytime bound, the fixed one with
    Clopper-Pearson), and the fixed ensemble's first 100 / 250 / 500 / 1000 members under the anytime bound (the best
    any stopping rule could reach at that size). At sigma
    0.25, r = 0.5 is 2 sigma, which needs at least 408 unanimous votes under the anytime bound (331 under a fixed-n
    one): no quarter of 1000 members can reach it, whatever the rule.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import norm

from art_certssbd import RABEstimator
from art_certssbd.datasets import load_task
from art_certssbd.growth import Growth
from art_certssbd.models import MnistCNN
from art_certssbd.stats import certified_accuracy, clopper_pearson_lower

HERE = Path(__file__).resolve().parent
ALPHA = 1e-3
FUTILITY = (0.1, 0.5)  # (a): futility levels besides certify_adaptive's default 0.01
SIGMAS_B = (0.5, 1.0)  # (b): r = 0.25 and 0.5 are 0.5 and 1 sigma, then 0.25 and 0.5 sigma


def _estimator(nb_models: int, scale: float, bound: str) -> RABEstimator:
    net = MnistCNN(2)
    return RABEstimator(net, torch.nn.CrossEntropyLoss(), (1, 28, 28), 2,
                        optimizer=torch.optim.Adam(net.parameters(), lr=1e-3), clip_values=(0.0, 1.0),
                        device_type="cpu", nb_models=nb_models, scale=scale, alpha=ALPHA, bound=bound,
                        random_state=0)  # fmt: skip


def _floor(r_over_sigma: float, level: float, bound) -> int:
    """Votes a unanimous input needs before the lower bound passes max(Phi(r / sigma), 1/2)."""
    p_r = max(norm.cdf(r_over_sigma), 0.5)
    return next((n for n in range(1, 20000) if bound(n, n, level) > p_r), 20000)


def section_a(data, m: int, n_inputs: int, n_train: int) -> dict:
    from art_certssbd import confseq

    x, y, xt, yt = data
    sigma = 0.12
    est = _estimator(m, sigma, "clopper-pearson")
    tic = time.perf_counter()
    est.fit(x[:n_train], y[:n_train], nb_epochs=2, batch_size=64)
    train_s = time.perf_counter() - tic
    xt, yt = xt[:n_inputs], yt[:n_inputs]
    fixed = est.certify(xt, return_details=True, update_memory=False)
    rows = []
    for factor in (0.0, 0.25, 0.5, 1.0, 1.5, 2.0):
        r = factor * sigma
        fixed_acc = float(certified_accuracy(fixed.pred, fixed.radius, yt, [r])[0])
        row = {"r_over_sigma": factor, "fixed_certified_accuracy": fixed_acc}
        variants = [("schedule", "clopper-pearson", 0.01), ("anytime", "anytime", 0.01)]
        variants += [(f"anytime_futility_{f:g}", "anytime", f) for f in FUTILITY]
        for name, bound, futility in variants:
            est.set_params(bound=bound)
            tic = time.perf_counter()
            res = est.certify_adaptive(xt, r, futility_alpha=futility)
            early = res.votes_used < m  # decided before the votes ran out
            row[name] = {
                "futility_alpha": futility,
                "mean_votes": float(res.votes_used.mean()),
                "mean_votes_certified": float(res.votes_used[res.certified].mean()) if res.certified.any() else None,
                "mean_votes_decided_early": float(res.votes_used[early].mean()) if early.any() else None,
                "nb_ran_to_budget": int((~early).sum()),
                "certified_accuracy": float(np.mean(res.certified & (res.pred == yt))),
                "wall_s": time.perf_counter() - tic,
            }
            row[name]["accuracy_lost"] = fixed_acc - row[name]["certified_accuracy"]
        est.set_params(bound="clopper-pearson")
        row["floor_clopper_pearson"] = _floor(factor, ALPHA / 2, clopper_pearson_lower)
        row["floor_anytime"] = _floor(factor, ALPHA / 2, confseq.lower)
        for name in ["anytime"] + [f"anytime_futility_{f:g}" for f in FUTILITY]:
            row[name]["over_floor"] = row[name]["mean_votes"] / row["floor_clopper_pearson"]
        row["anytime_over_floor"] = row["anytime"]["over_floor"]
        rows.append(row)
    return {"nb_models": m, "nb_inputs": len(xt), "sigma": sigma, "train_s": train_s, "rows": rows,
            "clean_accuracy": float(np.mean(fixed.pred == yt))}  # fmt: skip


def section_b(data, m: int, n_inputs: int, n_train: int, n_val: int, wave: int, sigma: float) -> dict:
    x, y, xt, yt = data
    radii = [0.25, 0.5]  # at sigma 0.5: 0.5 and 1 sigma (a quarter of 1000 members can certify them; 2 sigma needs 408)
    xt, yt = xt[:n_inputs], yt[:n_inputs]
    xv, yv = x[n_train : n_train + n_val], y[n_train : n_train + n_val]
    fixed = _estimator(m, sigma, "clopper-pearson")
    tic = time.perf_counter()
    fixed.fit(x[:n_train], y[:n_train], nb_epochs=2, batch_size=64)
    fixed_s = time.perf_counter() - tic
    fixed_res = fixed.certify(xt, return_details=True, update_memory=False)
    grown = _estimator(m, sigma, "anytime")
    tic = time.perf_counter()
    grown.fit(x[:n_train], y[:n_train], nb_epochs=2, batch_size=64,
              growth=Growth(xv, yv, radius=radii[-1], wave_size=wave, tol=0.005, patience=2))  # fmt: skip
    grown_s = time.perf_counter() - tic
    grown_res = grown.certify(xt, return_details=True, update_memory=False)
    fixed_acc = certified_accuracy(fixed_res.pred, fixed_res.radius, yt, radii).tolist()
    # the best any stopping rule could do: the fixed ensemble's first n members under the anytime bound
    prefix = {}
    fixed.set_params(bound="anytime")
    for n in sorted({m // 10, m // 4, m // 2, m}):
        res = fixed.certify(xt, n=n, return_details=True, update_memory=False)
        prefix[n] = certified_accuracy(res.pred, res.radius, yt, radii).tolist()
    fixed.set_params(bound="clopper-pearson")
    grown_acc = certified_accuracy(grown_res.pred, grown_res.radius, yt, radii).tolist()
    return {
        "nb_models": m,
        "sigma": sigma,
        "radii": radii,
        "wave_size": wave,
        "members_grown": grown.nb_models_,
        "history": grown.growth_history_,
        "fixed_certified_accuracy": fixed_acc,
        "prefix_anytime_certified_accuracy": prefix,
        "grown_certified_accuracy": grown_acc,
        "accuracy_lost": [f - g for f, g in zip(fixed_acc, grown_acc)],
        "fixed_fit_s": fixed_s,
        "grown_fit_s": grown_s,
    }


def _num(value, fmt: str = ".1f") -> str:
    """``value`` formatted, or ``-`` where there is none (e.g. no input certified)."""
    return "-" if value is None else format(value, fmt)


def _b_lines(b: dict) -> list[str]:
    m, sigma = b["nb_models"], b["sigma"]
    in_sigmas = " and ".join(f"{r / sigma:g}" for r in b["radii"])
    lines = [
        f"### sigma = {sigma} (r = {in_sigmas} sigma)",
        "",
        f"Waves of {b['wave_size']}, stopped at **{b['members_grown']} of {m}** members "
        f"({b['members_grown'] / m:.0%}); history (members: certified accuracy at r = {b['radii'][-1]} "
        f"on the validation images / projected at {m}): "
        + ", ".join(
            f"{h['nb_models']}: {h['certified_accuracy']:.3f} / {h.get('projected_accuracy', float('nan')):.3f}"
            for h in b["history"]
        )
        + ".",
        "",
        f"| r | fixed M = {m} (Clopper-Pearson) | grown (anytime) | lost | "
        + " | ".join(f"first {n} members (anytime)" for n in b["prefix_anytime_certified_accuracy"])
        + " |",
        "|---:|---:|---:|---:|" + "---:|" * len(b["prefix_anytime_certified_accuracy"]),
    ]
    for i, (r, f, g, lost) in enumerate(zip(b["radii"], b["fixed_certified_accuracy"], b["grown_certified_accuracy"],
                                            b["accuracy_lost"])):  # fmt: skip
        prefix = " | ".join(f"{acc[i]:.4f}" for acc in b["prefix_anytime_certified_accuracy"].values())
        lines.append(f"| {r} | {f:.4f} | {g:.4f} | {lost:.4f} | {prefix} |")
    lines += ["", f"Fit: fixed {b['fixed_fit_s']:.0f} s, grown {b['grown_fit_s']:.0f} s.", ""]
    return lines


def render(results: dict) -> str:
    a, bs = results["a"], results["b"]
    futility = [float(k.rsplit("_", 1)[1]) for k in a["rows"][0] if k.startswith("anytime_futility_")]
    lines = [
        "# Anytime-valid certification and the wave-grown ensemble (CPU)",
        "",
        f"Command: `{results['command']}`. MNIST 1 vs 0, RAB members (MnistCNN), alpha = {ALPHA}.",
        "",
        f"## (a) Votes per input, M = {a['nb_models']}, {a['nb_inputs']} test images, sigma = {a['sigma']}",
        "",
        "Mean votes per input over all inputs (every input is decided: certified or abstained, at the latest when "
        "the votes run out), in brackets over the certified inputs, and the number of inputs that ran to the end. "
        "The floor is the fewest unanimous votes a fixed-n Clopper-Pearson test needs (the anytime "
        f"sequence's own floor in brackets); accuracy lost is against `certify` with all {a['nb_models']} votes. "
        "The futility level only decides when a hopeless input abstains (power, never validity).",
        "",
        "| r / sigma | floor (anytime's) | schedule: votes | acc. lost | anytime: votes (certified inputs) | / floor "
        "| ran to the end | acc. lost |" + "".join(f" futility {f:g}: votes | / floor | acc. lost |" for f in futility),
        "|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|---:|---:|" * len(futility),
    ]
    for row in a["rows"]:
        any_, sch = row["anytime"], row["schedule"]
        line = (
            f"| {row['r_over_sigma']:g} | {row['floor_clopper_pearson']} ({row['floor_anytime']}) | "
            f"{sch['mean_votes']:.1f} | {sch['accuracy_lost']:.4f} | {any_['mean_votes']:.1f} "
            f"({_num(any_['mean_votes_certified'])}) | {any_['over_floor']:.3f} | {any_['nb_ran_to_budget']} | "
            f"{any_['accuracy_lost']:.4f} |"
        )
        for f in futility:
            fut = row[f"anytime_futility_{f:g}"]
            line += f" {fut['mean_votes']:.1f} | {fut['over_floor']:.3f} | {fut['accuracy_lost']:.4f} |"
        lines.append(line)
    lines += [
        "",
        f"Clean accuracy (fixed-n) {a['clean_accuracy']:.4f}; training {a['train_s']:.0f} s.",
        "",
        "## (b) Members trained",
        "",
        "The grown ensemble certifies with its anytime bound, the fixed one with Clopper-Pearson. The last columns "
        "certify with the fixed ensemble's first n members under the anytime bound: the best any stopping rule "
        "could reach at that size.",
        "",
    ]
    for b in bs:
        lines += _b_lines(b)
    return "\n".join(lines).rstrip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only-b", action="store_true", help="rerun (b), keep (a) from the existing results")
    parser.add_argument("--only-a", action="store_true", help="rerun (a), keep (b) from the existing results")
    args = parser.parse_args(argv)
    from art_certssbd.experiment import environment
    from art_certssbd.report import write_results

    x, y = load_task("mnist-1v0", "train", root=args.data_dir)
    xt, yt = load_task("mnist-1v0", "test", root=args.data_dir)
    data = (x, y, xt, yt)
    q = args.quick
    name = "anytime-quick" if q else "anytime-cpu"
    previous = json.loads((args.out / f"{name}.json").read_text()) if args.only_a or args.only_b else {}
    results = {
        "command": "python benchmarks/anytime.py" + (" --quick" if q else ""),
        "environment": environment(),
    }
    if args.only_b:
        results["a"] = previous["a"]
    else:
        results["a"] = section_a(data, 40 if q else 1000, 40 if q else 500, 128 if q else 256)
    if args.only_a:
        results["b"] = previous["b"]
    else:
        results["b"] = [section_b(data, 40 if q else 1000, 40 if q else 500, 128 if q else 256, 40 if q else 500,
                                  10 if q else 25, sigma) for sigma in SIGMAS_B]  # fmt: skip
    text = render(results)
    write_results(args.out, name, results, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
