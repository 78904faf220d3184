"""Past one machine (issue 15): the Ray executor against the local path, and streamed votes against in-memory ones.

Usage, from the repository root (needs the ray extra; about 10 minutes on 2 cores, 1.2 GB of scratch disk)::

    flock /tmp/certssbd-heavy.lock python benchmarks/ray_scale.py            # --quick: a smaller run, seconds
    python benchmarks/ray_scale.py --out /tmp/ray                            # results elsewhere

writes ``benchmarks/results/ray-cpu.{json,md,png}``:

(a) **overhead** on this machine: ``fit`` and ``certify`` of the same digits estimator locally (torch on all cores)
    and on a local Ray with one task per core (1 thread each), side by side in one run, plus the per-task costs Ray
    adds (an empty task's round trip, ``ray.put`` of the training data);
(b) **memory** at M = 1000 MNIST CNN members (random weights: memory and equality do not depend on training):
    peak resident memory of ``certify`` with the ensemble in memory and streamed from disk within a budget, each in
    its own process, and whether their vote counts are equal;
(c) a **scaling estimate** for a cluster, written from the measured per-member costs (see the Markdown).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
from art_certssbd import CertSSBDEstimator
from art_certssbd.models import MnistCNN
directory, stream, budget, n = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4])
net = MnistCNN(nb_classes=2)
est = CertSSBDEstimator(net, torch.nn.CrossEntropyLoss(), (1, 28, 28), 2, optimizer=torch.optim.Adam(net.parameters()),
                        clip_values=(0.0, 1.0), device_type="cpu", nb_models=int(sys.argv[5]), scale=0.25,
                        sigma_steps=0, use_memory=False, memory_budget=budget)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tic = time.perf_counter()
est.load_ensemble(directory, stream=stream)
x = np.random.default_rng(0).random((n, 1, 28, 28), dtype=np.float32)
result = est.certify(x, return_details=True)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": time.perf_counter() - tic, "peak_rss_mb": peak / 1024,
                  "rss_before_load_mb": before / 1024, "votes": result.votes.tolist()}))
"""


def _save_random_ensemble(directory: Path, nb_models: int) -> int:
    """A saved ensemble of ``nb_models`` randomly initialised MNIST CNNs (members written one at a time)."""
    import numpy as np
    import torch

    from art_certssbd.checkpoint import EnsembleCheckpoint
    from art_certssbd.memory import CertificationMemory
    from art_certssbd.models import MnistCNN
    from art_certssbd.training import init_member

    template = MnistCNN(nb_classes=2)
    config = {"nb_models": nb_models, "nb_classes": 2, "input_shape": [1, 28, 28], "scale": 0.25}
    config.update(random_state=0, train_noise_copies=1)
    with EnsembleCheckpoint.staged(directory, config, kind="ensemble") as store:
        store.save("base", template.state_dict())
        store.save("train_sigma", torch.full((10,), 0.25))
        store.save("test_noise_seeds", torch.arange(nb_models, dtype=torch.int64) + 11)
        store.save("memory", CertificationMemory().state_dict())
        for k in range(nb_models):
            store.save_member(k, init_member(template, 1000 + k).state_dict())
    return int(sum(t.numel() * t.element_size() for t in template.state_dict().values()) * np.int64(1))


def memory_section(nb_models: int, nb_inputs: int, budget_mb: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="certssbd-ray-") as tmp:
        directory = Path(tmp) / "ensemble"
        tic = time.perf_counter()
        member_bytes = _save_random_ensemble(directory, nb_models)
        save_s = time.perf_counter() - tic
        runs = {}
        for name, stream, budget in (("in memory", "0", 2**30), ("streamed", "1", budget_mb * 2**20)):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(directory), stream, str(budget), str(nb_inputs), str(nb_models)],
                check=True,
                capture_output=True,
                text=True,
            )
            runs[name] = json.loads(out.stdout.strip().splitlines()[-1])
    votes_equal = runs["in memory"].pop("votes") == runs["streamed"].pop("votes")
    return {
        "nb_models": nb_models,
        "nb_inputs": nb_inputs,
        "member_mb": member_bytes / 2**20,
        "ensemble_mb": nb_models * member_bytes / 2**20,
        "budget_mb": budget_mb,
        "save_seconds": save_s,
        "runs": runs,
        "votes_equal": votes_equal,
    }


def overhead_section(nb_models: int, nb_epochs: int, nb_train: int) -> dict:
    import numpy as np
    import ray
    import torch

    from art_certssbd import CertSSBDEstimator
    from art_certssbd.datasets import load_digits
    from art_certssbd.models import DigitsCNN
    from art_certssbd.ray_backend import RayExecutor

    x, y, xt, _ = load_digits(random_state=0)
    x, y, xt = x[:nb_train], y[:nb_train], xt[:200]
    cores = os.cpu_count() or 1

    def estimator(executor):
        net = DigitsCNN(10)
        return CertSSBDEstimator(net, torch.nn.CrossEntropyLoss(), (1, 8, 8), 10,
                                 optimizer=torch.optim.Adam(net.parameters(), lr=3e-3), clip_values=(0.0, 1.0),
                                 device_type="cpu", nb_models=nb_models, scale=0.25, sigma_steps=5, sigma_samples=8,
                                 warmup_epochs=1, random_state=0, executor=executor, use_memory=False)  # fmt: skip

    timings = {}
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        tic = time.perf_counter()
        ray.get(ray.remote(lambda: None).remote())  # the first task starts a worker process
        timings["first_task_s"] = time.perf_counter() - tic
        tic = time.perf_counter()
        ray.get([ray.remote(lambda: None).remote() for _ in range(50)])
        timings["empty_task_ms"] = (time.perf_counter() - tic) / 50 * 1000
        tic = time.perf_counter()
        ray.get(ray.put((torch.from_numpy(x), torch.from_numpy(y))))
        timings["put_training_data_ms"] = (time.perf_counter() - tic) * 1000
        rows = {}
        for name, executor in (("local", "local"), ("ray", RayExecutor(num_cpus=1, samples_per_task=64))):
            est = estimator(executor)
            tic = time.perf_counter()
            est.fit(x, y, nb_epochs=nb_epochs, batch_size=64)
            fit_s = time.perf_counter() - tic
            tic = time.perf_counter()
            result = est.certify(xt, return_details=True)
            rows[name] = {"fit_s": fit_s, "certify_s": time.perf_counter() - tic, "votes": result.votes}
        same_votes = bool(np.array_equal(rows["local"].pop("votes"), rows["ray"].pop("votes")))
    finally:
        ray.shutdown()
    per_member_s = rows["local"]["fit_s"] / nb_models  # an upper bound: it includes warm-up and sigma
    return {
        "cores": cores,
        "nb_models": nb_models,
        "nb_epochs": nb_epochs,
        "nb_train": len(x),
        "rows": rows,
        "fit_ratio": rows["ray"]["fit_s"] / rows["local"]["fit_s"],
        "certify_ratio": rows["ray"]["certify_s"] / rows["local"]["certify_s"],
        "same_votes_at_different_thread_counts": same_votes,
        "per_member_local_s": per_member_s,
        **timings,
    }


def render(results: dict) -> str:
    o, m = results["overhead"], results["memory"]
    lines = [
        "# Ray executor and streamed votes (CPU)",
        "",
        f"Machine: {results['machine']}, {o['cores']} cores. Command: `{results['command']}`.",
        "",
        f"## (a) Overhead of Ray on one machine ({o['cores']} cores)",
        "",
        f"Digits, {o['nb_train']} training images, M = {o['nb_models']}, {o['nb_epochs']} epochs, sigma SGA 5 steps; "
        "local: torch on every core; Ray: one task per core, one thread each.",
        "",
        "| | local s | Ray s | Ray / local |",
        "|---|---:|---:|---:|",
        f"| fit | {o['rows']['local']['fit_s']:.1f} | {o['rows']['ray']['fit_s']:.1f} | {o['fit_ratio']:.2f} |",
        f"| certify (200 inputs) | {o['rows']['local']['certify_s']:.2f} | {o['rows']['ray']['certify_s']:.2f} | "
        f"{o['certify_ratio']:.2f} |",
        "",
        f"Per-task costs: first task (starts a worker) {o['first_task_s']:.2f} s, an empty task's round trip "
        f"{o['empty_task_ms']:.2f} ms, `ray.put` of the training data {o['put_training_data_ms']:.1f} ms. Votes of "
        f"the two runs equal: {o['same_votes_at_different_thread_counts']} (they may differ by float rounding here: "
        "the local run uses every core's threads, a task one; at equal thread counts they are bitwise equal, "
        "`tests/test_ray_backend.py`).",
        "",
        f"## (b) Memory of the votes at M = {m['nb_models']} (MNIST CNN, {m['member_mb']:.2f} MB per member)",
        "",
        f"`certify` of {m['nb_inputs']} inputs, each path in its own process; streamed with memory_budget = "
        f"{m['budget_mb']} MB of member weights.",
        "",
        "| path | peak RSS MB | wall s |",
        "|---|---:|---:|",
    ]
    for name, run in m["runs"].items():
        lines.append(f"| {name} | {run['peak_rss_mb']:.0f} | {run['seconds']:.1f} |")
    stream, full = m["runs"]["streamed"], m["runs"]["in memory"]
    lines += [
        "",
        f"The ensemble's weights are {m['ensemble_mb']:.0f} MB. Streaming keeps the peak {stream['peak_rss_mb']:.0f} "
        f"MB against {full['peak_rss_mb']:.0f} MB ({stream['rss_before_load_mb']:.0f} MB before loading: Python, "
        f"torch and the inputs). Vote counts equal: {m['votes_equal']}.",
        "",
        "## (c) Scaling estimate for a cluster (on paper, from (a))",
        "",
        f"One member here costs at most {o['per_member_local_s']:.2f} s locally (fit time / M, warm-up and sigma "
        f"included), against {o['empty_task_ms']:.1f} ms of Ray scheduling per task and "
        f"{o['put_training_data_ms']:.0f} ms to place the data once. With W workers and one member per task, "
        "fit takes about T_warm-up+sigma + ceil(M / W) x T_member, and Ray's share is "
        "M x (task overhead) / W: negligible as soon as a member takes seconds, as on MNIST (T_member of minutes "
        "at the paper's size on a GPU, where fractional GPUs let 4 small members share one). The votes scale the "
        "same way with blocks of members per task; their results are integer counts, so the merge costs nothing. "
        "What does not scale with W: the warm-up of the base model (one task) and the driver's checkpoint writes.",
    ]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    m = results["memory"]
    names = list(m["runs"])
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.bar(names, [m["runs"][n]["peak_rss_mb"] for n in names], color=["tab:gray", "tab:blue"])
    ax.axhline(m["ensemble_mb"], ls="--", color="k", lw=1, label=f"weights of {m['nb_models']} members")
    ax.set_ylabel("peak resident memory (MB)")
    ax.set_title(f"certify, M = {m['nb_models']}: in memory vs streamed ({m['budget_mb']} MB budget)", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--quick", action="store_true", help="a small run (checks the script)")
    args = parser.parse_args(argv)
    from art_certssbd.experiment import environment
    from art_certssbd.report import write_results

    quick = args.quick
    results = {
        "command": "python benchmarks/ray_scale.py" + (" --quick" if quick else ""),
        "machine": environment().get("processor", ""),
        "environment": environment(),
        "overhead": overhead_section(4 if quick else 16, 1 if quick else 3, 200 if quick else 1000),
        "memory": memory_section(20 if quick else 1000, 20 if quick else 100, 8 if quick else 64),
    }
    name = "ray-quick" if quick else "ray-cpu"
    text = render(results)
    write_results(args.out, name, results, text)
    plot(results, args.out / f"{name}.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
