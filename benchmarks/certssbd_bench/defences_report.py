"""Tables and plot of the defences benchmark (:mod:`certssbd_bench.defences`): Markdown and PNG."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from certssbd_bench.command import reproduce

logger = logging.getLogger(__name__)


def environment_lines(results: dict) -> list[str]:
    """The machine and versions of a run, and the command that reproduces it with the same thread count (older files
    lack some keys: they show as ``?``)."""
    env = results.get("environment", {})
    get = lambda key: env.get(key, "?")  # noqa: E731
    threads = env.get("torch_threads", env.get("cpu_count", "?"))
    lines = [
        f"Machine: {get('cpu_model') if 'cpu_model' in env else get('processor')}, {threads} torch threads "
        f"({get('logical_cpus')} logical CPUs; thread variables: {get('thread_env')}), CUDA: {get('cuda')}. "
        f"Python {get('python')}, torch {get('torch')}, ART {get('art')}, numpy {get('numpy')}, scipy {get('scipy')}, "
        f"scikit-learn {get('sklearn')}, art-certssbd {get('art_certssbd')} (commit {get('git_commit')})."
    ]
    if results.get("command"):
        lines += [
            "",
            f"Reproduce with: `OMP_NUM_THREADS={threads} {reproduce(results['command'])}` at that commit, on the same "
            "kind of CPU (the seeds are in the configuration; a different thread count or CPU changes the rounding of "
            "the training and with it the trained networks).",
        ]
    return lines


def _fmt(values) -> str:
    return " / ".join(f"{v:.3f}" for v in values) if values else "-"


def _summary(runs: list[dict]) -> list[str]:
    """One line per defence, one column per setting and trigger: clean accuracy / attack success rate."""
    if not runs:
        return []
    names = list(dict.fromkeys(name for run in runs for name in run["methods"]))
    head = " | ".join(f"{run['task']} {run['trigger']}" for run in runs)
    lines = ["", "## Summary: clean accuracy / attack success rate", "", f"| defence | {head} |"]
    lines.append("|---|" + "---:|" * len(runs))
    for name in names:
        cells = []
        for run in runs:
            m = run["methods"].get(name)
            cells.append(f"{m['clean_accuracy']:.2f} / {m['attack_success_rate']:.2f}" if m else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def budget_rows(run: dict) -> list[tuple[int, float, bool, int]]:
    """The distinct budgets of a run, each once in the order of first appearance: ``(k, delta, attack, j)`` with
    ``attack`` true for the attack's own budget (``k`` = the number of poisoned samples, ``delta`` = their largest
    trigger norm) and ``j`` the budget's index in the run's ``budget_certified_accuracy`` lists. A config may name the
    same budget twice (``[1, 1.0]`` and ``[1, "trigger"]`` where the trigger's norm is 1): one row."""
    attack = (run["nb_poisoned"], float(run["trigger_l2_max_poisoned"]))
    first: dict[tuple[int, float], int] = {}
    for j, (k, delta) in enumerate(run["budgets"]):
        first.setdefault((int(k), float(delta)), j)
    return [(k, delta, (k, delta) == attack, j) for (k, delta), j in first.items()]


def _budget_table(run: dict) -> list[str]:
    """Certified accuracy in the attacker's units (k poisoned samples, trigger norm delta), for the methods that
    recorded it, one row per distinct budget (the attack's own labelled); empty for results written before it was
    recorded."""
    names = [name for name, m in run["methods"].items() if "budget_certified_accuracy" in m]
    if not names or "budgets" not in run:
        return []
    lines = [
        "",
        f"In the attacker's units (the attack itself: k = {run['nb_poisoned']}, largest trigger norm "
        f"{run['trigger_l2_max_poisoned']:.3f}). RAB and Cert-SSBD: certified against k training samples with "
        "feature triggers of L2 norm <= delta and the same norm on the test input, labels as observed. DPA: "
        "certified against arbitrary changes (features and labels) to k training samples, whatever delta.",
        "",
        "| k | delta | " + " | ".join(names) + " |",
        "|---:|---:|" + "---:|" * len(names),
    ]
    for k, delta, attack, j in budget_rows(run):
        label = " (the attack)" if attack else ""
        cells = " | ".join(f"{run['methods'][n]['budget_certified_accuracy'][j]:.3f}" for n in names)
        lines.append(f"| {k}{label} | {delta:.3g}{label} | {cells} |")
    return lines


def render_defences(results: dict) -> str:
    """The Markdown report: one table per setting and trigger."""
    cfg = results["config"]
    lines = [
        f"# Cert-SSBD beside ART's defences: {cfg['name']}",
        "",
        f"Poison rate {cfg['poison_rate']}, trigger L2 norm {cfg['delta']} (ART's pattern: set pixels, norm below), "
        f"target class {cfg['target']}; {cfg['nb_epochs']} epochs (unless a setting says otherwise); "
        f"M = {cfg['nb_models']} (RAB, Cert-SSBD), "
        f"{cfg['dpa_partitions']} DPA partitions ({cfg['dpa_epochs']} epochs), sigma0 = {cfg['scale']}, "
        f"alpha = {cfg['alpha']}, randomized smoothing n = {cfg['rs_sample_size']}.",
        f"Certified accuracy at L2 radius {_fmt(cfg['radii'])}; DPA: at {cfg['dpa_counts']} inserted/deleted "
        "training samples (a replaced sample counts 2). Smoothing rows: abstentions count as wrong in the accuracies "
        "and as failures of the attack in the ASR; *triggered acc / abstain* shows how much of a low ASR is "
        'abstention (files written before issue 26: "-").',
    ]
    lines += _summary(results["runs"])
    for run in results["runs"]:
        epochs = run.get("nb_epochs", cfg["nb_epochs"])
        lines += [
            "",
            f"## {run['task']}, {run['trigger']} (mean L2 norm {run['trigger_l2']:.2f}): {run['nb_poisoned']} of "
            f"{run['nb_train']} training samples poisoned, {run['nb_test']} test samples, {epochs} epochs",
            "",
            "| defence | clean acc | ASR | triggered acc / abstain | certified acc (L2 radii) | DPA certified acc "
            "(counts) | caught / false alarms | wall s |",
            "|---|---:|---:|---|---|---|---|---:|",
        ]
        for name, m in run["methods"].items():
            cert = _fmt(m.get("certified_accuracy"))
            if "certified_accuracy_conservative" in m:
                cert += f" (conservative {_fmt(m['certified_accuracy_conservative'])})"
            caught = f"{m['poisons_caught']} / {m['false_alarms']}" if "poisons_caught" in m else "-"
            trig = (
                f"{m['triggered_accuracy']:.3f} / {m['triggered_abstain_rate']:.3f}"
                if "triggered_abstain_rate" in m
                else "-"
            )
            lines.append(
                f"| {name} | {m['clean_accuracy']:.3f} | {m['attack_success_rate']:.3f} | {trig} | {cert} | "
                f"{_fmt(m.get('dpa_certified_accuracy'))} | {caught} | {m['wall_time_s']:.0f} |"
            )
        lines += _budget_table(run)
        notes = {m.get("note") for m in run["methods"].values() if m.get("note")}
        lines += [f"\nNote: {note}." for note in sorted(notes)]
    lines += ["", f"Total wall time {results.get('wall_time_s', 0.0):.0f} s.", "", *environment_lines(results)]
    if results.get("partial"):
        lines += ["", f"**Partial:** {results['partial']}"]
    return "\n".join(lines)


def plot_defences(results: dict, path: str | os.PathLike) -> Path | None:
    """Clean accuracy and attack success rate of every defence, one panel per setting and trigger (needs
    matplotlib; without it, a warning and None)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed (pip install 'art-certssbd[plots]'): no plot written to %s", path)
        return None
    runs = results["runs"]
    fig, axes = _grid(plt, len(runs), 3.2, 3.4)
    for ax, run in zip(axes.flat, runs):
        names = list(run["methods"])
        pos = np.arange(len(names))
        ax.bar(pos - 0.2, [run["methods"][n]["clean_accuracy"] for n in names], 0.4, label="clean accuracy")
        ax.bar(pos + 0.2, [run["methods"][n]["attack_success_rate"] for n in names], 0.4, label="ASR")
        ax.set_xticks(pos, names, rotation=70, fontsize=7)
        ax.set_title(f"{run['task']}\n{run['trigger']}", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_budget(results: dict, path: str | os.PathLike) -> Path | None:
    """Certified accuracy against the number k of poisoned training samples, one panel per setting and trigger: RAB
    and Cert-SSBD at the attack's largest trigger norm (feature triggers), DPA's count certificate (any change to k
    samples) on the same axis. ``None`` (nothing written) without matplotlib or when no run recorded the curves."""
    runs = [run for run in results["runs"] if "budget_k" in run]
    if not runs:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed (pip install 'art-certssbd[plots]'): no plot written to %s", path)
        return None
    fig, axes = _grid(plt, len(runs), 3.4, 3.2)
    for ax, run in zip(axes.flat, runs):
        for name, m in run["methods"].items():
            if "certified_accuracy_by_k" in m:
                label = (
                    f"{name} (any change)" if name == "dpa" else f"{name} (delta {run['trigger_l2_max_poisoned']:.2g})"
                )
                ax.plot(run["budget_k"], m["certified_accuracy_by_k"], marker="o", markersize=3, label=label)
        ax.axvline(run["nb_poisoned"], color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("symlog")
        ax.set_xlim(left=0)
        ax.set_xlabel("k poisoned training samples", fontsize=8)
        ax.set_title(f"{run['task']}\n{run['trigger']}", fontsize=8)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("certified accuracy")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _grid(plt, nb_panels: int, width: float, height: float):
    """Up to four panels a row sharing the y axis (``width`` x ``height`` inches each), the spare ones hidden."""
    ncols = min(4, nb_panels)
    nrows = -(-nb_panels // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, sharey=True)
    for ax in axes.flat[nb_panels:]:
        ax.set_visible(False)
    return fig, axes
