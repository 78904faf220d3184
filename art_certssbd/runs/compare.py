"""``certssbd report DIR...``: several certify runs side by side, in one table and one plot.

Each DIR is a certify output directory or a fit directory holding one (``DIR/certify``). Certified accuracy is
recomputed from every run's per-input results at one set of radii, so runs certified at different radii still line
up. The output directory (default under :func:`~art_certssbd.runs.outputs.runs_dir`, ``reports/``) receives
``report.md``, ``report.json`` and ``report.png``, written whole; the table is printed too.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from art_certssbd._version import __version__
from art_certssbd.runs.options import UsageError
from art_certssbd.runs.outputs import check_writable_parent, runs_dir, staged_directory
from art_certssbd.stats import certified_accuracy

logger = logging.getLogger(__name__)


def find_certify_dir(path: Path) -> Path:
    """``path`` itself when it holds certify results, else ``path/certify``; ``UsageError`` when neither does."""
    path = Path(path).expanduser().absolute()
    for candidate in (path, path / "certify"):
        if _kind(candidate / "summary.json") == "certify" and (candidate / "results.npz").is_file():
            return candidate
    if not path.exists():
        raise UsageError(f"DIR {str(path)!r}: no such directory")
    raise UsageError(
        f"DIR {str(path)!r}: no certify results in it or in its certify/ folder (run certssbd certify on the fit first)"
    )


def _kind(file: Path) -> str | None:
    try:
        return json.loads(file.read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def _labels(summaries: list[dict], dirs: list[Path], given: list[str] | None) -> list[str]:
    if given is not None:
        if len(given) != len(dirs):
            raise UsageError(f"--labels {','.join(given)!r}: {len(given)} labels for {len(dirs)} runs")
        twice = sorted({label for label in given if given.count(label) > 1})
        if twice:
            raise UsageError(f"--labels {','.join(given)!r}: labels must be distinct ({twice[0]!r} names two runs)")
        return list(given)
    methods = [s["method"] for s in summaries]
    names = [d.parent.name if d.name == "certify" else d.name for d in dirs]
    labels = [m if methods.count(m) == 1 else f"{m} [{n}]" for m, n in zip(methods, names)]
    return labels if len(set(labels)) == len(labels) else [f"{label} #{i + 1}" for i, label in enumerate(labels)]


def _warn_if_data_differ(summaries: list[dict], labels: list[str]) -> None:
    """Warn when the runs certified different data (source, split or classes): their curves do not compare."""

    def data(summary: dict) -> tuple:
        d = summary.get("data", {})
        return d.get("source"), d.get("split"), tuple(d.get("class_names") or ())

    first = data(summaries[0])
    for label, summary in zip(labels[1:], summaries[1:]):
        other = data(summary)
        if other != first:
            what = [name for name, a, b in zip(("source", "split", "classes"), first, other) if a != b]
            logger.warning(
                "%s certified other data than %s (%s: %s against %s): its figures do not compare with the others'",
                label,
                labels[0],
                ", ".join(what),
                " / ".join(str(v) for v, n in zip(other, ("source", "split", "classes")) if n in what),
                " / ".join(str(v) for v, n in zip(first, ("source", "split", "classes")) if n in what),
            )


def run_report(values: dict[str, Any], command: str = "certssbd report") -> tuple[Path, str]:
    """Run ``certssbd report`` with resolved options; return the output directory and the Markdown text."""
    runs = values.get("runs") or []
    if not runs:
        raise UsageError("give at least one certify (or fit) directory: certssbd report DIR [DIR ...]")
    dirs = [find_certify_dir(Path(p)) for p in runs]
    summaries = [json.loads((d / "summary.json").read_text(encoding="utf-8")) for d in dirs]
    labels = _labels(summaries, dirs, values.get("labels"))
    _warn_if_data_differ(summaries, labels)
    radii = values.get("radii") or sorted({float(r) for s in summaries for r in s["radii"]})
    key = hashlib.sha256("\n".join(map(str, dirs)).encode()).hexdigest()[:10]
    output = Path(values.get("output") or runs_dir() / "reports" / f"report-{key}").expanduser().absolute()
    check_writable_parent(output)
    if output.is_dir() and any(output.iterdir()) and _kind(output / "report.json") != "report":
        raise UsageError(f"--output {str(output)!r}: exists and is not a certssbd report directory; choose another")

    runs_out, curves, rows, conservative = [], [], {}, {}
    budget = _budget_curves(labels, dirs, summaries)
    labels_seen = None
    for label, directory, summary in zip(labels, dirs, summaries):
        with np.load(directory / "results.npz", allow_pickle=False) as arrays:
            y = arrays["label"]
            if labels_seen is not None and not np.array_equal(labels_seen, y):
                logger.warning("%s certified other inputs than the first run: compare with care", label)
            labels_seen = y
            entry = {
                "label": label,
                "directory": str(directory),
                "method": summary["method"],
                "nb_models": summary["nb_models"],
                "scale": summary["scale"],
                "alpha": summary["alpha"],
                "bound": summary["bound"],
                "max_certifiable_radius": summary.get(
                    "max_certifiable_radius"
                ),  # None: a run certified by an earlier version
                "source": summary["data"]["source"],
                "nb_inputs": len(y),
                "splits": {},
            }
            for split in summary["splits"]:
                pred = arrays[f"{split}_pred"]
                paper = certified_accuracy(pred, arrays[f"{split}_radius"], y, np.asarray(radii)).tolist()
                cons = certified_accuracy(pred, arrays[f"{split}_radius_conservative"], y, np.asarray(radii)).tolist()
                rows[f"{label} {split}"] = paper
                conservative[f"{label} {split}"] = cons
                curves.append((f"{label} ({split})", radii, paper, "-" if split == "clean" else "--"))
                if cons != paper:
                    curves.append((f"{label} ({split}, conservative)", radii, cons, ":"))
                entry["splits"][split] = {
                    **{k: summary["splits"][split].get(k) for k in ("accuracy", "abstain_rate", "attack_success_rate")},
                    "mean_sigma": float(np.mean(arrays[f"{split}_sigma"])),
                    "certified_accuracy": paper,
                    "certified_accuracy_conservative": cons,
                }
        runs_out.append(entry)
    result = {"kind": "report", "command": command, "art_certssbd": __version__, "radii": list(radii), "runs": runs_out}
    if budget is not None:
        result["budget"] = budget
    text = render_report(result, rows, conservative)
    from art_certssbd.report import plot_curves, write_json, write_text

    with staged_directory(output, replace=True) as tmp:
        write_json(tmp / "report.json", result)
        write_text(tmp / "report.md", text + "\n")
        plot_curves(curves, tmp / "report.png", title="certified accuracy: " + ", ".join(labels))
        if budget is not None:
            k_curves = [
                (name, *zip(*[(k, v) for k, v in zip(budget["k"], values) if v is not None]), "-")
                for name, values in budget["certified_accuracy"].items()
            ]
            plot_curves(
                k_curves,
                tmp / "report_budget.png",
                title="certified accuracy against k: " + ", ".join(labels),
                xlabel=f"k poisoned training samples (trigger norm delta = delta_x = {budget['delta']:g})",
                xscale="symlog",
            )
    return output, text


def _budget_curves(labels, dirs, summaries) -> dict[str, Any] | None:
    """Certified accuracy against the number ``k`` of poisoned training samples at the first run's trigger norm,
    recomputed for every run and split from its per-input results (:mod:`art_certssbd.budget`); ``None`` when a run
    was certified before the training sigmas were written."""
    from art_certssbd.budget import BudgetCertificate, k_grid

    delta = float(summaries[0]["data"].get("delta") or 1.0)
    certificates, sizes = {}, []
    for label, directory, summary in zip(labels, dirs, summaries):
        with np.load(directory / "results.npz", allow_pickle=False) as arrays:
            if "train_sigma" not in arrays:
                return None
            sizes.append(len(arrays["train_sigma"]))
            for split in summary["splits"]:
                pred = arrays[f"{split}_pred"]
                cert = BudgetCertificate(
                    arrays["train_sigma"],
                    arrays[f"{split}_sigma"],
                    arrays[f"{split}_radius"],
                    arrays[f"{split}_radius_conservative"],
                    pred != arrays[f"{split}_pred_before_memory"],
                )
                correct = (pred == arrays["label"]) & (pred != -1)
                certificates[f"{label} {split}"] = (cert.k_max(delta), correct, sizes[-1])
    ks = sorted({int(k) for n in sizes for k in k_grid(n)})
    accuracy = {
        name: [float(np.mean(correct & (k_max >= k))) if k <= n else None for k in ks]
        for name, (k_max, correct, n) in certificates.items()
    }
    return {"delta": delta, "k": ks, "certified_accuracy": accuracy}


def render_report(result: dict, rows: dict, conservative: dict) -> str:
    """The comparison as Markdown: one overview table, certified accuracy with the paper and conservative radii."""
    from art_certssbd.report import markdown_table

    def fmt(value) -> str:
        return "-" if value is None else f"{value:.4f}"

    lines = [
        "# certssbd report",
        "",
        "| run | method | M | sigma0 | alpha | max. certifiable r | inputs | clean acc. | triggered acc. "
        "| attack success | mean sigma |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in result["runs"]:
        clean, trig = run["splits"].get("clean", {}), run["splits"].get("triggered", {})
        lines.append(
            f"| {run['label']} | {run['method']} | {run['nb_models']} | {run['scale']:g} | {run['alpha']:g} | "
            f"{fmt(run['max_certifiable_radius'])} | {run['nb_inputs']} | {fmt(clean.get('accuracy'))} | "
            f"{fmt(trig.get('accuracy'))} | "
            f"{fmt(trig.get('attack_success_rate'))} | {fmt(clean.get('mean_sigma'))} |"
        )
    lines += ["", "Certified accuracy (paper radius): correct and certified at radius >= r", ""]
    lines.append(markdown_table(rows, result["radii"], "run"))
    if conservative != rows:
        lines += ["", "Certified accuracy (conservative radius, min(sigma_x, min_j sigma_j))", ""]
        lines.append(markdown_table(conservative, result["radii"], "run"))
    budget = result.get("budget")
    if budget is not None:
        lines += [
            "",
            f"Certified accuracy against k poisoned training samples, triggers of L2 norm <= {budget['delta']:g} "
            "(training and test input; art_certssbd.budget)",
            "",
            "| run | " + " | ".join(f"k={k}" for k in budget["k"]) + " |",
            "|---|" + "---:|" * len(budget["k"]),
        ]
        for name, values in budget["certified_accuracy"].items():
            cells = " | ".join("-" if v is None else f"{v:.3f}" for v in values)
            lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)
