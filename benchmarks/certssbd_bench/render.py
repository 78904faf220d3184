"""Markdown and PNG views of :func:`certssbd_bench.mnist.run_mnist_benchmark`'s results."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from art_certssbd._io import atomic_open
from art_certssbd.report import markdown_table

logger = logging.getLogger(__name__)

#: (result key, label) of the four certified-accuracy variants of each ensemble.
VARIANTS = (
    ("certified_accuracy", "CP, paper radius"),
    ("certified_accuracy_conservative", "CP, conservative radius"),
    ("certified_accuracy_hoeffding", "Hoeffding, paper radius"),
    ("certified_accuracy_hoeffding_conservative", "Hoeffding, conservative radius"),
)


def _run_title(run: dict) -> str:
    cfg = run["config"]
    return f"{cfg['trigger']} trigger, sigma0 = {cfg['scale']:g}"


def render_mnist(results: dict) -> str:
    """The Markdown report: setting, headline table, one certified-accuracy table per run, machine and times."""
    data = results["data"]
    first = results["runs"][0]["config"] if results["runs"] else {}
    lines = [
        f"# {results['benchmark']}: {results['task']} ({results['model']}), RAB vs Cert-SSBD vs undefended",
        "",
        results.get("description", ""),
        "",
        f"Data: {data['train']} training and {data['test']} test images (test per class {data['test_per_class']}). "
        f"Per run: {first.get('poison_rate', 0) * 100:g}% of the training set poisoned towards class "
        f"{first.get('target')}, trigger L2 norm delta = {first.get('delta')}; M = {first.get('nb_models')} models "
        f"per ensemble and {first.get('nb_epochs')} epoch(s) for every method (batch {first.get('batch_size')}, "
        f"Adam lr {first.get('lr')}); alpha = {first.get('alpha')}; random_state = {first.get('random_state')}.",
        "",
        "## Summary",
        "",
        "| trigger | sigma0 | method | clean acc. | triggered acc. | ASR | abstain | triggered abstain | "
        "cert. acc. r=0.25 | cert. acc. r=0.5 | cert. acc. r=1 |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in results["runs"]:
        cfg, radii = run["config"], [float(r) for r in run["config"]["radii"]]
        for name, m in run["methods"].items():
            cells = []
            for r in (0.25, 0.5, 1.0):
                curve = m.get("certified_accuracy", {}).get("clean")
                cells.append(f"{curve[radii.index(r)]:.3f}" if curve is not None and r in radii else "-")
            abstain = f"{m['abstain_rate']:.3f}" if "abstain_rate" in m else "-"
            trig_abstain = f"{m['triggered_abstain_rate']:.3f}" if "triggered_abstain_rate" in m else "-"
            lines.append(
                f"| {cfg['trigger']} | {cfg['scale']:g} | {name} | {m['clean_accuracy']:.3f} | "
                f"{m['triggered_accuracy']:.3f} | {m['attack_success_rate']:.3f} | {abstain} | {trig_abstain} | "
                + " | ".join(cells)
                + " |"
            )
    lines += [
        "",
        "Clean / triggered accuracy are against the true labels (abstentions count as errors); ASR = fraction of "
        "triggered non-target test images classified as the target (an abstention is not); *abstain* / *triggered "
        "abstain* = fraction of the clean / triggered test set abstained on (files written before issue 26 lack the "
        "triggered column: '-'), so that a low ASR that is only abstention shows. Certified accuracy = fraction of "
        "test images classified correctly with a certified radius >= r (clean test set, Clopper-Pearson, paper "
        "radius).",
    ]
    lines += _comparison(results["runs"])
    for run in results["runs"]:
        radii = [float(r) for r in run["config"]["radii"]]
        rows = {}
        for name in ("rab", "cert-ssbd"):
            m = run["methods"].get(name)
            if m is None:
                continue
            for key, label in VARIANTS:
                if name == "rab" and "conservative" in key:
                    continue  # identical to the paper radius for RAB (sigma_x = sigma_j = sigma0)
                for split, values in m.get(key, {}).items():
                    rows[f"{name}, {split}, {label}"] = values
        t = run["timings_s"]
        times = ", ".join(
            f"{k} {v:.0f} s" if isinstance(v, float) else f"{k} fit {v['fit']:.0f} s + certify {v['certify']:.0f} s"
            for k, v in t.items()
        )
        sigma = run["methods"].get("cert-ssbd", {})
        lines += ["", f"## {_run_title(run)}", "", markdown_table(rows, radii, first="method, test set, bound, radius")]
        if "sigma_test" in sigma:
            lines += [
                "",
                f"Cert-SSBD sigma (min/mean/max): training {_mmm(sigma['sigma_train'])}, "
                f"test {_mmm(sigma['sigma_test'])}; "
                f"storage update changed {sigma['memory_changed']} clean predictions.",
            ]
        lines += ["", f"{run['nb_poisoned']} poisoned training images. Time: {times}; run {run['wall_time_s']:.0f} s."]
    from certssbd_bench.defences_report import environment_lines

    lines += ["", "## Machine", "", f"Total wall time {results.get('wall_time_s', 0.0) / 60:.1f} min."]
    lines += ["", *environment_lines(results)]
    return "\n".join(lines)


def _verdict(ours: list[float], theirs: list[float], radii: list[float], tol: float = 0.005) -> str:
    """``ahead`` / ``behind`` / ``tied`` / ``mixed`` (curve ``ours`` against ``theirs`` at every radius, differences up
    to ``tol`` counting as ties), with the largest gain and the largest loss and where they are."""
    diff = [a - b for a, b in zip(ours, theirs)]
    up, down = any(d > tol for d in diff), any(d < -tol for d in diff)
    word = "mixed" if up and down else "ahead" if up else "behind" if down else "tied"
    gain, loss = max(range(len(diff)), key=diff.__getitem__), min(range(len(diff)), key=diff.__getitem__)
    return f"{word} ({diff[gain]:+.3f} at r={radii[gain]:g}, {diff[loss]:+.3f} at r={radii[loss]:g})"


def _largest_radius(curve: list[float], radii: list[float], level: float = 0.9) -> str:
    """The largest radius at which the certified accuracy is at least ``level`` (``-`` if none)."""
    reached = [r for r, v in zip(radii, curve) if v >= level]
    return f"{max(reached):g}" if reached else "-"


def _cell(curve: list[float], radii: list[float]) -> str:
    return f"{_largest_radius(curve, radii)} / {sum(curve) / len(curve):.3f}"


def _comparison(runs: list[dict]) -> list[str]:
    """Cert-SSBD against RAB per run, computed from the clean Clopper-Pearson curves (so it regenerates with them):
    the largest radius certified for 90% of the test set, the mean certified accuracy over the radii, and whether
    Cert-SSBD's curve is above, below or on RAB's at every radius, with the paper and with the conservative radius."""
    lines = [
        "",
        "## Cert-SSBD against RAB",
        "",
        "Clean test set, Clopper-Pearson. *r90* = largest radius with certified accuracy >= 0.9; *mean* = mean "
        "certified accuracy over the radii; *verdict* = Cert-SSBD's curve against RAB's at every radius (ahead: "
        "nowhere below and somewhere above, by more than 0.005, about 10 of 2,115 test images; smaller differences "
        "count as ties, one seed being run), with the largest gain and the largest loss and their radii.",
        "",
        "| trigger | sigma0 | RAB r90 / mean | Cert-SSBD paper r90 / mean | verdict | Cert-SSBD conservative r90 / "
        "mean | verdict |",
        "|---|---:|---|---|---|---|---|",
    ]
    for run in runs:
        methods, radii = run["methods"], [float(r) for r in run["config"]["radii"]]
        if "rab" not in methods or "cert-ssbd" not in methods:
            continue
        rab = methods["rab"]["certified_accuracy"]["clean"]
        paper = methods["cert-ssbd"]["certified_accuracy"]["clean"]
        conservative = methods["cert-ssbd"]["certified_accuracy_conservative"]["clean"]
        rab_c, paper_c, cons_c = (_cell(curve, radii) for curve in (rab, paper, conservative))
        lines.append(
            f"| {run['config']['trigger']} | {run['config']['scale']:g} | {rab_c} | {paper_c} | "
            f"{_verdict(paper, rab, radii)} | {cons_c} | {_verdict(conservative, rab, radii)} |"
        )
    return lines


def _mmm(summary: dict) -> str:
    return f"{summary['min']:.3f}/{summary['mean']:.3f}/{summary['max']:.3f}"


def plot_mnist(results: dict, path: str | os.PathLike) -> Path | None:
    """One panel per run: certified accuracy against radius for RAB and Cert-SSBD (paper and conservative radius,
    Clopper-Pearson), clean (solid) and triggered (dashed). Needs matplotlib; without it returns ``None``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no plot written to %s", path)
        return None
    runs = results["runs"]
    cols = min(3, max(1, len(runs)))
    rows = -(-len(runs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    styles = {
        ("rab", "certified_accuracy"): ("tab:blue", "RAB"),
        ("cert-ssbd", "certified_accuracy"): ("tab:red", "Cert-SSBD (paper radius)"),
        ("cert-ssbd", "certified_accuracy_conservative"): ("tab:orange", "Cert-SSBD (conservative)"),
    }
    for ax, run in zip(axes.flat, runs):
        radii = [float(r) for r in run["config"]["radii"]]
        for (name, key), (color, label) in styles.items():
            curves = run["methods"].get(name, {}).get(key, {})
            for split, values in curves.items():
                dashed = split != "clean"
                ax.plot(
                    radii,
                    values,
                    color=color,
                    linestyle="--" if dashed else "-",
                    marker="o",
                    markersize=2.5,
                    label=f"{label}, {split}",
                )
        ax.set_title(_run_title(run), fontsize=9)
        ax.set_xlabel("L2 radius r", fontsize=8)
        ax.set_ylabel("certified accuracy", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(runs) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.suptitle(
        f"{results['benchmark']}: {results['task']}, M = {runs[0]['config']['nb_models']}" if runs else "", fontsize=10
    )
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)
    return Path(path)
