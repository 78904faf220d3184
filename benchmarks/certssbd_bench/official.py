"""The official Cert-SSB MNIST 1-vs-0 models (one-pixel trigger, sigma0 = 0.12) under the official evaluation and ours.

Four certificates on the same 1000 released models and the 2,115 MNIST test images of digits 0 and 1, file order:

1. ``official``: :func:`~art_certssbd.official.certify_reference`: soft votes on ``x + sigma0 * e_k``,
   Hoeffding with ``n = 1000``, radius with the stored per-sample sigma, no abstain, ``radius > r``;
2. ``official votes, sigma0 radius``: the same votes and bound, radius with sigma0 (RAB's radius for the noise
   that was drawn);
3. ``ours, sigma0``: :meth:`certify` of :meth:`~art_certssbd.CertSSBDEstimator.from_official` (hard votes on
   ``x + sigma0 * e_k``, Clopper-Pearson, radius with sigma0, storage update), plus Hoeffding from the same counts;
4. ``ours, stored sigma``: hard votes on ``x + sigma_i * e_k`` with the stored sigma (the noise the official radius
   claims), Clopper-Pearson or Hoeffding, radius with ``sigma_i`` (paper) and with ``min(sigma_i, sigma0)``
   (conservative, since the training sigmas are unknown but at least sigma0).

The triggered set is the one-pixel trigger (delta 1.0) on every test image; rows are reported against the true
labels and, as the official ``Cert wm acc`` does, against the target label 0 for every image.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from art_certssbd import stats
from art_certssbd.attacks import apply_trigger, attack_success_rate, one_pixel
from art_certssbd.datasets import load_task
from art_certssbd.ensemble import vote
from art_certssbd.estimator import CertSSBDEstimator
from art_certssbd.experiment import environment
from art_certssbd.official import certify_reference, load_sigma_file, official_certified_accuracy
from art_certssbd.report import DEFAULT_RADII
from certssbd_bench.command import reproduce
from certssbd_bench.mnist import certify_with_bound

logger = logging.getLogger(__name__)

#: The official README's result for this setting (``python eval.py --dataset mnist --wm_shape onepixel --sigma 0.12``).
OFFICIAL_README = {
    "radii": [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5],
    "cert_acc": [0.99953, 0.99433, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    "cert_wm_acc": [0.46288, 0.46241, 0, 0, 0, 0, 0, 0, 0, 0, 0],
}


def _ours(pred, radius, y, radii) -> list[float]:
    return stats.certified_accuracy(pred, radius, y, radii).tolist()


def run_official_benchmark(
    checkpoints: str | os.PathLike,
    sigma_file: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    nb_models: int | None = None,
    scale: float = 0.12,
    alpha: float = 0.001,
    radii=DEFAULT_RADII,
    batch_size: int = 2115,
    verbose: bool = False,
) -> dict:
    """Evaluate the official models four ways (see the module docstring) and return a JSON-ready dict.

    :param checkpoints: Folder with ``smoothed_0.model`` ... (``model/mnist/onepixel/sigma0.12``).
    :param sigma_file: ``mnist_onepixel_sigma0.12.pth``.
    :param data_dir: MNIST IDX directory (default :func:`~art_certssbd.datasets.mnist_dir`).
    :param nb_models: First ``nb_models`` checkpoints (default all).
    :param scale: sigma0 of the checkpoints.
    :param alpha: Failure probability.
    :param radii: Radii of the tables.
    :param batch_size: Inputs per pass (all 2,115 at once is the fastest on a CPU).
    :param verbose: Progress bars.
    """
    start = time.perf_counter()
    radii = [float(r) for r in radii]
    x, y = load_task("mnist-1v0", "test", root=data_dir)
    sigma = load_sigma_file(sigma_file).astype(np.float64)
    if len(sigma) != len(x):
        raise ValueError(f"sigma_file {str(sigma_file)!r} has {len(sigma)} sigmas for {len(x)} test images")
    x_trig = apply_trigger(x, one_pixel(delta=1.0))
    y_wm = np.zeros_like(y)  # the official triggered labels: the target class for every image
    est = CertSSBDEstimator.from_official(checkpoints, nb_models=nb_models, scale=scale, alpha=alpha, device_type="cpu")
    est.set_params(vectorize=False)  # the member loop is the faster path on a CPU at this batch size
    m = est.ensemble_.nb_models
    out: dict = {"nb_models": m, "scale": scale, "alpha": alpha, "radii": radii, "timings_s": {}, "rows": {}}
    out["sigma_file"] = {"min": float(sigma.min()), "mean": float(sigma.mean()), "max": float(sigma.max())}
    rows = out["rows"]

    # 1-2: the official evaluation (soft votes at sigma0), radius with the stored sigma and with sigma0.
    tic = time.perf_counter()
    ref = {
        name: certify_reference(est, xs, sigma, 1000, alpha, batch_size=batch_size, verbose=verbose)
        for name, xs in (("clean", x), ("triggered", x_trig))
    }
    out["timings_s"]["official_votes"] = time.perf_counter() - tic
    for label, attr in (
        ("official (stored sigma)", "radius"),
        ("official votes, sigma0 radius", "radius_conservative"),
    ):
        rows[label] = {
            "clean": official_certified_accuracy(ref["clean"].pred, getattr(ref["clean"], attr), y, radii).tolist(),
            "triggered (true labels)": official_certified_accuracy(
                ref["triggered"].pred, getattr(ref["triggered"], attr), y, radii
            ).tolist(),
            "triggered (official labels, all 0)": official_certified_accuracy(
                ref["triggered"].pred, getattr(ref["triggered"], attr), y_wm, radii
            ).tolist(),
        }
    out["official_clean_accuracy"] = float(np.mean(ref["clean"].pred == y))
    out["official_attack_success_rate"] = attack_success_rate(ref["triggered"].pred[y != 0], y[y != 0], 0)
    if m != 1000:  # the official margin assumes n = 1000 whatever m is; with the true n it is wider
        true_n = certify_reference(est, x, sigma, None, alpha, batch_size=batch_size)
        rows["official, true n"] = {"clean": official_certified_accuracy(true_n.pred, true_n.radius, y, radii).tolist()}

    # 3: our default on these models: hard votes at sigma0, Clopper-Pearson, radius with sigma0, storage update.
    tic = time.perf_counter()
    clean = est.certify(x, batch_size=batch_size, return_details=True)
    trig = est.certify(x_trig, batch_size=batch_size, return_details=True, update_memory=False)
    out["timings_s"]["ours_sigma0"] = time.perf_counter() - tic
    rows["ours, sigma0, Clopper-Pearson"] = {
        "clean": _ours(clean.pred, clean.radius, y, radii),
        "triggered (true labels)": _ours(trig.pred, trig.radius, y, radii),
    }
    hoeff = {k: certify_with_bound(est, r.votes, r.sigma, "hoeffding") for k, r in (("c", clean), ("t", trig))}
    rows["ours, sigma0, Hoeffding (true n)"] = {
        "clean": _ours(hoeff["c"].pred, hoeff["c"].radius, y, radii),
        "triggered (true labels)": _ours(hoeff["t"].pred, hoeff["t"].radius, y, radii),
    }
    out["ours_clean_accuracy"] = float(np.mean(clean.pred == y))
    out["ours_abstain_rate"] = float(np.mean(clean.abstained))
    out["ours_attack_success_rate"] = attack_success_rate(trig.pred[y != 0], y[y != 0], 0)
    out["memory_changed"] = int(np.sum(clean.pred != clean.pred_before_memory))

    # 4: hard votes with the noise really drawn at the stored sigma.
    tic = time.perf_counter()
    sig_t = torch.from_numpy(sigma.astype(np.float32))
    for bound in ("clopper-pearson", "hoeffding"):
        rows[f"ours, stored sigma, {bound}"] = {}
        rows[f"ours, stored sigma, {bound}, conservative"] = {}
    for split, xs in (("clean", x), ("triggered (true labels)", x_trig)):
        counts = vote(
            est.ensemble_,
            torch.from_numpy(xs),
            sig_t,
            est.fitted_.test_noise(est._device),
            2,
            batch_size=batch_size,
            vectorize=False,
            verbose=verbose,
        ).numpy()
        for bound in ("clopper-pearson", "hoeffding"):
            # training sigmas: the stand-in [sigma0], so the conservative radius uses min(sigma_i, sigma0)
            result = certify_with_bound(est, counts, sigma, bound)
            rows[f"ours, stored sigma, {bound}"][split] = _ours(result.pred, result.radius, y, radii)
            rows[f"ours, stored sigma, {bound}, conservative"][split] = _ours(
                result.pred, result.radius_conservative, y, radii
            )
            if split == "clean" and bound == "clopper-pearson":
                out["stored_sigma_clean_accuracy"] = float(np.mean(result.pred == y))
                out["stored_sigma_abstain_rate"] = float(np.mean(result.abstained))
    out["timings_s"]["ours_stored_sigma"] = time.perf_counter() - tic
    unanimous = np.array([[0, m]])  # the largest radius m votes can certify, by each rule, at sigma0
    out["max_radius"] = {
        "official_hoeffding_sigma0": float(stats.max_radius(1000, alpha, scale, "hoeffding")),
        "ours_clopper_pearson_sigma0": float(certify_with_bound(est, unanimous, [scale], "clopper-pearson").radius[0]),
        "ours_hoeffding_sigma0": float(certify_with_bound(est, unanimous, [scale], "hoeffding").radius[0]),
    }
    out["official_readme"] = OFFICIAL_README
    out["wall_time_s"] = time.perf_counter() - start
    out["environment"] = environment()
    out["checkpoints"] = str(Path(checkpoints))
    return out


def render_official(results: dict) -> str:
    """Markdown summary of :func:`run_official_benchmark`'s results."""
    radii = results["radii"]
    lines = [
        f"# Official Cert-SSB models, MNIST 1 vs 0, one-pixel trigger, sigma0 = {results['scale']}",
        "",
        f"{results['nb_models']} released models, 2,115 test images, alpha = {results['alpha']}. Certified accuracy "
        "at radius r (official rows count `radius > r`, ours `radius >= r` and no abstention).",
        "",
    ]
    table = {}
    readme = results["official_readme"]
    if [float(r) for r in readme["radii"]] == radii:
        table["official README: clean"] = readme["cert_acc"]
        table["official README: triggered, labels all 0"] = readme["cert_wm_acc"]
    for name, splits in results["rows"].items():
        for split, values in splits.items():
            table[f"{name}: {split}"] = values
    lines.append(_table4(table, radii))
    t = results["timings_s"]
    lines += [
        "",
        f"Clean accuracy (argmax of the soft votes): {results['official_clean_accuracy']:.4f}; attack success rate on "
        f"triggered non-target images: {results['official_attack_success_rate']:.4f}.",
        f"Our default (hard votes at sigma0, Clopper-Pearson): clean accuracy {results['ours_clean_accuracy']:.4f}, "
        f"abstain rate {results['ours_abstain_rate']:.4f}, attack success rate "
        f"{results['ours_attack_success_rate']:.4f}; the storage-update step changed {results['memory_changed']} "
        "predictions.",
        f"Noise at the stored sigma: clean accuracy {results['stored_sigma_clean_accuracy']:.4f}, abstain rate "
        f"{results['stored_sigma_abstain_rate']:.4f}. Stored sigma: min {results['sigma_file']['min']:.4f}, mean "
        f"{results['sigma_file']['mean']:.4f}, max {results['sigma_file']['max']:.4f}.",
        f"Largest radius {results['nb_models']} votes can certify at sigma0: official Hoeffding (n = 1000, alpha) "
        f"{results['max_radius']['official_hoeffding_sigma0']:.3f}; ours (the top class bounded at alpha / 2): "
        f"Clopper-Pearson {results['max_radius']['ours_clopper_pearson_sigma0']:.3f}, Hoeffding "
        f"{results['max_radius']['ours_hoeffding_sigma0']:.3f}.",
        "",
        f"Wall time {results['wall_time_s']:.0f} s (official votes {t['official_votes']:.0f} s, ours at sigma0 "
        f"{t['ours_sigma0']:.0f} s, ours at the stored sigma {t['ours_stored_sigma']:.0f} s) on "
        f"{results['environment']['processor']} with {results['environment']['cpu_count']} threads, torch "
        f"{results['environment']['torch']}.",
    ]
    if results.get("command"):
        lines += ["", f"Command: `{reproduce(results['command'])}`"]
    return "\n".join(lines)


def _table4(rows: dict, radii) -> str:
    """A Markdown table with four decimals (the official figures differ in the fourth: 0.99953 = 2114 / 2115)."""
    lines = [
        "| certificate: test set | " + " | ".join(f"r={r:g}" for r in radii) + " |",
        "|---|" + "---:|" * len(radii),
    ]
    lines += [f"| {name} | " + " | ".join(f"{v:.4f}" for v in values) + " |" for name, values in rows.items()]
    return "\n".join(lines)
