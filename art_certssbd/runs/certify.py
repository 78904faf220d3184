"""``certssbd certify DIR``: certify a test split with a fitted ensemble, clean and (with a trigger) triggered.

The output directory (default ``DIR/certify``) is written whole, once everything is computed::

    config.toml               the resolved options (``certssbd certify --config THIS_FILE`` repeats the run)
    results.csv               one row per input and split: prediction, both radii, sigma, p_A lower bound, ...
    results.npz               the same as arrays (``clean_pred``, ``triggered_radius``, ..., ``label``, ``votes``)
    summary.json, summary.md  accuracy, attack success rate, certified accuracy against radius (both radii), and in
                              the attacker's units: at each --budget, and against k at the trigger's norm --delta
    certified_accuracy.png    certified accuracy against radius
    budget_accuracy.png       certified accuracy against k poisoned samples at the trigger's norm (art_certssbd.budget)
    sigma_histogram.png       Cert-SSBD only: the training and test sigmas

Options not given are the fit's (data source, classes, trigger, alpha, bound, ...); the test split of the fit's
data source is certified unless ``--data`` names another source.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from art_certssbd._version import __version__
from art_certssbd.budget import certified_accuracy_by_k, k_grid
from art_certssbd.checkpoint import CheckpointError
from art_certssbd.datasets.spec import Dataset, has_splits
from art_certssbd.result import CertificationResult
from art_certssbd.runs.build import build_estimator, build_model, estimator_params, load_data, make_trigger
from art_certssbd.runs.config import toml_text
from art_certssbd.runs.fit import stored_fit_options
from art_certssbd.runs.options import INHERITED, UsageError, options_of
from art_certssbd.runs.outputs import check_writable_parent, json_values, staged_directory

logger = logging.getLogger(__name__)

RADIUS_MULTIPLES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
FIELDS = ("pred", "radius", "radius_conservative", "sigma", "p_a_lower", "pred_before_memory")


def default_radii(scale: float) -> tuple[float, ...]:
    """Radii at multiples of sigma0 (0, sigma0 / 4, ..., 3 sigma0)."""
    return tuple(round(m * scale, 4) for m in RADIUS_MULTIPLES)


def open_fit(run: Path | None) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Check that ``run`` is a finished fit directory; return it (absolute), its options and its ``fit.json``."""
    if run is None:
        raise UsageError("the fit directory is required: certssbd certify DIR (or run = DIR in --config)")
    run = Path(run).expanduser().absolute()
    partial = run.with_name(run.name + ".partial")
    if not run.exists():
        if partial.is_dir():
            raise UsageError(
                f"DIR {str(run)!r}: the fit has not finished (its progress is in {str(partial)!r}); run the same "
                "certssbd fit command again to resume it"
            )
        raise UsageError(f"DIR {str(run)!r}: no such directory")
    missing = [name for name in ("config.toml", "fit.json", "ensemble") if not (run / name).exists()]
    if missing:
        raise UsageError(f"DIR {str(run)!r}: not a certssbd fit directory (no {', '.join(missing)})")
    try:
        info = json.loads((run / "fit.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UsageError(f"DIR {str(run)!r}: fit.json cannot be read ({err})") from None
    return run, stored_fit_options(run), info


def _check_classes(data: Dataset, fit_names: list[str], given: bool, spec) -> Dataset:
    """The test labels must mean what the training labels meant."""
    if data.class_names is None and not given:  # a source without names: labels are taken as the fit's
        if data.y.max(initial=0) >= len(fit_names):
            raise UsageError(
                f"--data {str(spec)!r}: label {int(data.y.max())} outside the fit's 0..{len(fit_names) - 1}"
            )
        return Dataset(data.x, data.y, list(fit_names))
    if data.names() != list(fit_names):
        option = "--classes" if given else "--data"
        raise UsageError(
            f"{option}: the test data's classes {data.names()} are not the fit's {list(fit_names)} (labels must mean "
            "the same classes, in the same order)"
        )
    return data


def run_certify(values: dict[str, Any], command: str = "certssbd certify") -> Path:
    """Run ``certssbd certify`` with resolved options; return the output directory."""
    run, fit_values, info = open_fit(values.get("run"))
    settings = dict(fit_values)
    settings.update({key: values[key] for key in INHERITED if values.get(key) is not None})
    settings.update(device=values["device"], quiet=values["quiet"], limit=values["limit"])
    settings.update(executor=values["executor"], ray_address=values["ray_address"])  # this command's, not the fit's
    spec = settings["data"].resolved()
    split = values["split"]
    if values.get("data") is None and split == "test" and not has_splits(spec):
        raise UsageError(f"--data: the fit's source {str(spec)!r} has no test split; name the test data with --data")
    fitted_shape = tuple(info["data"]["input_shape"])
    if spec.kind == "folder" and settings.get("channels") is None:  # the fit's images' channels, not a new guess
        settings["channels"] = fitted_shape[0]
    data, positions = load_data(spec, split, settings)
    data = _check_classes(data, info["data"]["class_names"], values.get("classes") is not None, spec)
    if tuple(data.x.shape[1:]) != fitted_shape:
        raise UsageError(
            f"--data {str(spec)!r}: images of shape {tuple(data.x.shape[1:])}, but the ensemble in {str(run)!r} was "
            f"fitted on {fitted_shape}"
        )
    trigger = make_trigger(settings["poison"], settings["delta"])
    if trigger is not None and not settings["target"] < data.nb_classes:
        raise UsageError(f"--target {settings['target']}: expected a label in 0..{data.nb_classes - 1}")
    net = build_model(settings["model"], data.nb_classes, fitted_shape, settings["model_args"], settings["seed"])
    params = estimator_params(settings)
    est = build_estimator(settings, params, net, data, settings["poison"])
    try:
        est.load_ensemble(run / "ensemble")
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        raise UsageError(
            f"DIR {str(run)!r}: its ensemble does not match its config.toml or is damaged ({err})"
        ) from None
    output = Path(values["output"] or run / "certify").expanduser().absolute()
    check_writable_parent(output)
    if output.is_dir() and any(output.iterdir()) and not _is_certify_output(output):
        raise UsageError(f"--output {str(output)!r}: exists and is not a certssbd certify directory; choose another")
    radii = tuple(values["radii"] or default_radii(params["scale"]))
    budgets = tuple(values.get("budget") or ())
    nb_train = len(est.train_sigma_)
    for budget in budgets:
        if budget.k > nb_train:
            raise UsageError(
                f"--budget {budget.label}: k={budget.k} is larger than the training set of {str(run)!r} "
                f"({nb_train} samples)"
            )
    resolved = {**values, **{key: settings[key] for key in INHERITED}, "run": run, "output": output, "radii": radii}
    resolved["data"], resolved["budget"] = spec, [budget.spec for budget in budgets] or None

    verbose = not values["quiet"]
    tic = time.perf_counter()
    logger.info("Certifying %d %s inputs of %s with %s", len(data.y), split, spec, run)
    results = {
        "clean": est.certify(
            data.x, batch_size=settings["batch_size"], return_details=True, verbose=verbose, budgets=budgets
        )
    }
    if trigger is not None:
        logger.info("Certifying the same inputs with the %s trigger", settings["poison"])
        results["triggered"] = est.certify(
            trigger(data.x),
            batch_size=settings["batch_size"],
            return_details=True,
            update_memory=False,
            verbose=verbose,
            budgets=budgets,
        )
    certify_s = time.perf_counter() - tic
    _warn_if_radii_out_of_reach(est, results, radii)
    summary = _summary(resolved, settings, info, command, data, results, est, radii, certify_s)
    with staged_directory(output, replace=True) as tmp:
        _write(tmp, resolved, command, data, positions, results, est, summary)
    logger.info("Certified in %.1f s: %s", certify_s, output)
    return output


def _radius_ceiling(est, result: CertificationResult) -> float:
    """The largest radius any of these inputs could be certified at: unanimous votes at the largest sigma in use
    (the paper radius is proportional to sigma, and ``max_certifiable_radius`` is the one at sigma0)."""
    return float(est.max_certifiable_radius * result.sigma.max() / est.scale) if len(result.sigma) else 0.0


def _warn_if_radii_out_of_reach(est, results: dict[str, CertificationResult], radii) -> None:
    """Warn when the smallest positive radius asked for is above every input's ceiling: those columns are 0 by
    construction, whatever the members learned (issue 24)."""
    asked = [r for r in radii if r > 0]
    ceiling = max(_radius_ceiling(est, result) for result in results.values())
    if asked and min(asked) > ceiling:
        warnings.warn(
            f"certify: no input can be certified at radius {min(asked):g} or more: the largest certifiable radius here "
            f"is {ceiling:.4g} (unanimous votes of {est.sample_size} at alpha={est.alpha:g}, {est.bound}, at the "
            "largest sigma in use), so every certified accuracy at r > 0 is 0 by construction; fit more members, or "
            "raise --alpha",
            UserWarning,
            stacklevel=2,
        )


def _is_certify_output(directory: Path) -> bool:
    try:
        return json.loads((directory / "summary.json").read_text(encoding="utf-8")).get("kind") == "certify"
    except (OSError, ValueError, AttributeError):
        return False


def _split_summary(
    result: CertificationResult, y: np.ndarray, radii, target: int | None, delta: float, ks
) -> dict[str, Any]:
    correct = (result.pred == y) & ~result.abstained
    out = {
        "accuracy": float(np.mean(result.pred == y)),
        "abstain_rate": float(np.mean(result.abstained)),
        "certified_accuracy": result.certified_accuracy(y, radii).tolist(),
        "certified_accuracy_conservative": result.certified_accuracy(y, radii, conservative=True).tolist(),
        "sigma": {
            "min": float(result.sigma.min()),
            "mean": float(result.sigma.mean()),
            "max": float(result.sigma.max()),
        },
        "memory_changed": int(np.sum(result.pred != result.pred_before_memory)),
        "budgets": [
            {
                "k": int(k),
                "delta": float(d),
                "delta_x": float(dx),
                "certified_accuracy": float(np.mean(correct & result.budget_certified[:, j])),
                "certified_rate": float(np.mean(result.budget_certified[:, j])),
            }
            for j, (k, d, dx) in enumerate(result.budgets)
        ],
        "certified_accuracy_by_k": certified_accuracy_by_k(result, y, delta, ks).tolist(),
    }
    if target is not None:
        others = y != target
        out["attack_success_rate"] = float(np.mean(result.pred[others] == target)) if others.any() else None
    return out


def _summary(resolved, settings, info, command, data, results, est, radii, certify_s) -> dict[str, Any]:
    from art_certssbd.experiment import environment

    target = settings["target"] if "triggered" in results else None
    ks = k_grid(len(est.train_sigma_)).tolist()
    delta = float(settings["delta"])
    splits = {
        name: _split_summary(r, data.y, radii, target if name == "triggered" else None, delta, ks)
        for name, r in results.items()
    }
    return {
        "kind": "certify",
        "command": command,
        "art_certssbd": __version__,
        "run": str(resolved["run"]),
        "method": settings["method"],
        "options": json_values(resolved),
        "fit_options": info.get("options", {}),
        "data": {
            "source": str(resolved["data"]),
            "split": resolved["split"],
            "nb_inputs": int(len(data.y)),
            "class_names": data.names(),
            "trigger": settings["poison"],
            "delta": settings["delta"],
            "target": target,
        },
        "nb_models": int(est.nb_models),
        "scale": float(est.scale),
        "alpha": float(est.alpha),
        "bound": est.bound,
        "radii": list(radii),
        # unanimous votes at sigma0 (at a Cert-SSBD input's own sigma_x it scales by sigma_x / sigma0)
        "max_certifiable_radius": float(est.max_certifiable_radius),
        "budget_delta": delta,
        "budget_k": ks,
        "splits": splits,
        "train_sigma": {
            k: float(f(est.train_sigma_)) for k, f in (("min", np.min), ("mean", np.mean), ("max", np.max))
        },
        "timings_s": {"certify": certify_s},
        "environment": environment(),
    }


def render_summary(summary: dict[str, Any]) -> str:
    """The Markdown summary of one certify run."""
    from art_certssbd.report import markdown_table

    data = summary["data"]
    trigger = (
        f"{data['trigger']} trigger (delta {data['delta']:g}) -> label {data['target']}"
        if data["target"] is not None
        else "no trigger"
    )
    lines = [
        f"# certssbd certify: {summary['method']} on {data['source']} ({data['split']}, {data['nb_inputs']} inputs)",
        "",
        f"M = {summary['nb_models']}, sigma0 = {summary['scale']:g}, alpha = {summary['alpha']:g}, {summary['bound']}; "
        f"{trigger}; classes {', '.join(data['class_names'])}.",
        "",
        f"Largest certifiable radius (unanimous votes at sigma0): {summary['max_certifiable_radius']:.4g}"
        + (
            " -- every input abstains: fit more members or raise alpha"
            if summary["max_certifiable_radius"] == 0
            else ""
        )
        + ".",
        "",
        "| split | accuracy | abstain | attack success | sigma (min / mean / max) |",
        "|---|---:|---:|---:|---|",
    ]
    for name, s in summary["splits"].items():
        asr = s.get("attack_success_rate")
        sigma = s["sigma"]
        lines.append(
            f"| {name} | {s['accuracy']:.4f} | {s['abstain_rate']:.4f} | {'-' if asr is None else f'{asr:.4f}'} | "
            f"{sigma['min']:.4f} / {sigma['mean']:.4f} / {sigma['max']:.4f} |"
        )
    for key, label in (
        ("certified_accuracy", "paper radius"),
        ("certified_accuracy_conservative", "conservative radius"),
    ):
        lines += ["", f"Certified accuracy ({label}): correct and certified at radius >= r", ""]
        lines.append(markdown_table({name: s[key] for name, s in summary["splits"].items()}, summary["radii"], "split"))
    lines += _budget_lines(summary)
    lines += ["", f"certify time {summary['timings_s']['certify']:.1f} s"]
    return "\n".join(lines)


def _budget_lines(summary: dict[str, Any]) -> list[str]:
    """The attacker's-units part of the summary: each --budget, and certified accuracy against k at --delta."""
    from art_certssbd.report import markdown_table

    splits = summary["splits"]
    if "budget_k" not in summary:  # written before the budget certificate
        return []
    lines = ["", "In the attacker's units (k poisoned training samples, triggers of L2 norm <= delta, test trigger <= "]
    lines[-1] += "delta_x; the smoothing certificate covers feature triggers with the training labels as observed)"
    first = next(iter(splits.values()))
    if first["budgets"]:
        lines += ["", "| budget | " + " | ".join(f"{name}: certified accuracy" for name in splits) + " |"]
        lines.append("|---|" + "---:|" * len(splits))
        for j, b in enumerate(first["budgets"]):
            row = " | ".join(f"{s['budgets'][j]['certified_accuracy']:.4f}" for s in splits.values())
            lines.append(f"| k={b['k']}, delta={b['delta']:g}, delta_x={b['delta_x']:g} | {row} |")
    lines += [
        "",
        f"Certified accuracy against k at the trigger's norm delta = delta_x = {summary['budget_delta']:g}",
        "",
    ]
    rows = {name: s["certified_accuracy_by_k"] for name, s in splits.items()}
    lines.append(markdown_table(rows, summary["budget_k"], "split").replace(" r=", " k="))
    return lines


def _write(tmp: Path, resolved, command, data, positions, results, est, summary) -> None:
    from art_certssbd.report import plot_curves, plot_sigma_histogram, write_csv, write_json, write_npz, write_text

    keys = ["run"] + [o.key for o in options_of("certify") if o.key != "quiet"]
    write_text(
        tmp / "config.toml",
        toml_text(
            "certify",
            {k: json_values({"v": resolved.get(k)})["v"] for k in keys},
            comment=f"Written by {command!r} (art-certssbd {__version__}): every option, resolved.\n"
            "Repeat the run with: certssbd certify --config THIS_FILE",
        ),
    )
    columns: dict[str, list] = {"split": [], "index": [], "label": [], "correct": []}
    columns.update({field: [] for field in FIELDS})
    arrays: dict[str, np.ndarray] = {"label": data.y, "index": positions, "train_sigma": est.train_sigma_}
    first = next(iter(results.values()))
    arrays["budgets"] = first.budgets  # (B, 3): k, delta, delta_x
    labels = [f"k={int(k)},delta={d:g},delta_x={dx:g}" for k, d, dx in first.budgets]
    columns.update({f"certified[{label}]": [] for label in labels})
    for name, result in results.items():
        for j, label in enumerate(labels):
            columns[f"certified[{label}]"] += result.budget_certified[:, j].astype(int).tolist()
        arrays[f"{name}_budget_certified"] = result.budget_certified
        columns["split"] += [name] * len(data.y)
        columns["index"] += positions.tolist()
        columns["label"] += data.y.tolist()
        columns["correct"] += (result.pred == data.y).astype(int).tolist()
        for field in FIELDS:
            columns[field] += np.asarray(getattr(result, field)).tolist()
        for field in (*FIELDS, "votes"):
            arrays[f"{name}_{field}"] = np.asarray(getattr(result, field))
    write_csv(tmp / "results.csv", columns)
    write_npz(tmp / "results.npz", arrays)
    write_json(tmp / "summary.json", summary)
    write_text(tmp / "summary.md", render_summary(summary) + "\n")
    radii = summary["radii"]
    curves = []
    for name, s in summary["splits"].items():
        curves.append((f"{name} (paper radius)", radii, s["certified_accuracy"], "-"))
        if s["certified_accuracy_conservative"] != s["certified_accuracy"]:
            curves.append((f"{name} (conservative radius)", radii, s["certified_accuracy_conservative"], ":"))
    title = f"{summary['method']}, {summary['data']['source']}, M={summary['nb_models']}, sigma0={summary['scale']:g}"
    plot_curves(curves, tmp / "certified_accuracy.png", title=title)
    by_k = [(name, summary["budget_k"], s["certified_accuracy_by_k"], "-") for name, s in summary["splits"].items()]
    plot_curves(
        by_k,
        tmp / "budget_accuracy.png",
        title=title,
        xlabel=f"k poisoned training samples (trigger norm delta = delta_x = {summary['budget_delta']:g})",
        xscale="symlog",
    )
    if summary["method"] == "cert-ssbd":
        sigmas = {"training": est.train_sigma_, "test (clean)": results["clean"].sigma}
        plot_sigma_histogram(sigmas, tmp / "sigma_histogram.png", scale=summary["scale"], title=title)
