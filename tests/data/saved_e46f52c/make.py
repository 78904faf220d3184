"""Write the saved ensembles of this folder with art-certssbd at commit e46f52c, and what that code answered on them
(``expected.npz``); ``tests/test_saved_compat.py`` loads them with today's package and compares.

Run it against a checkout of that commit (it refuses another version of the package)::

    git worktree add /tmp/old e46f52c --detach
    PYTHONPATH=/tmp/old OMP_NUM_THREADS=1 python tests/data/saved_e46f52c/make.py [OUT_DIR]

``OUT_DIR`` defaults to this script's folder; the directories and ``expected.npz`` there are replaced. The runs are
seeded, but torch's CPU kernels may round differently on another machine or torch version, so a rerun elsewhere
can write other numbers: commit the ensembles and ``expected.npz`` of one run together.

What is written (every estimator around :func:`net`, 8x8 digits, 10 classes, ``clip_values=(0, 1)``, on the CPU;
the parameters of each are in ``ENSEMBLES`` and stored in ``expected.npz`` as ``<name>__params``, JSON):

* ``certssbd_memory``: Cert-SSBD with the storage-update memory, saved with a memory that holds the regions
  certified on ``x_memory`` and two regions stored with ``memory_.update`` next to two of the query inputs (one the
  query falls inside, so its class is replaced; one just outside, so its radius is trimmed): the recorded answers
  on ``x_query`` go through both rules.
* ``rab``: RAB with ``draws_per_model=4`` and the Hoeffding bound, saved with ART's ``save(filename, path)``.
* ``certssbd_fresh``: Cert-SSBD with ``noise="fresh"`` (the saved config records ``train_noise_copies``, the radius
  is divided by its square root), without memory.
* ``rab_grown``: RAB with ``bound="anytime"`` grown by a :class:`~art_certssbd.growth.Growth` rule that stopped
  before ``nb_models`` (config ``grown``).

Recorded for each (``<name>__<key>``): ``predict(x_query)`` and the fields of ``certify(x_query,
return_details=True)`` (``certify__pred``, ...), from the fitted estimator right after the save; for
``certssbd_memory`` also the query without update (``query__*``), the memory as saved (``memory_saved__*``) and
after that certify (``memory_after__*``), and ``nomem__*``: the answers of the save loaded by this code with
``use_memory=False``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

import art_certssbd
from art_certssbd import CertSSBDEstimator, RABEstimator
from art_certssbd.datasets import load_digits
from art_certssbd.growth import Growth

COMMIT = "e46f52c"
HIDDEN = 8
FIT = dict(nb_epochs=30, batch_size=50)
COMMON = dict(scale=0.25, alpha=0.3)
SIGMA = dict(sigma_steps=2, sigma_samples=2, warmup_epochs=1)
ENSEMBLES = {
    "certssbd_memory": dict(cls="CertSSBDEstimator", nb_models=12, random_state=7, use_memory=True, **COMMON, **SIGMA),
    "rab": dict(cls="RABEstimator", nb_models=8, draws_per_model=4, bound="hoeffding", random_state=11, **COMMON),
    "certssbd_fresh": dict(
        cls="CertSSBDEstimator", nb_models=8, noise="fresh", use_memory=False, random_state=13, **COMMON, **SIGMA
    ),
    "rab_grown": dict(cls="RABEstimator", nb_models=16, bound="anytime", random_state=17, **COMMON),
}
RESULT_FIELDS = ("pred", "radius", "radius_conservative", "sigma", "p_a_lower", "votes", "pred_before_memory")
MEMORY_FIELDS = ("centers", "labels", "radii", "radii_conservative", "sigmas")


def cpu_model() -> str:
    """The CPU's model name (Linux), else what ``platform`` knows: kernels may round differently on another CPU."""
    with contextlib.suppress(OSError):
        names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        return names[0] if names else platform.processor()
    return platform.processor()


def net() -> nn.Module:
    """The members' architecture (``fit`` re-initialises it from ``random_state``)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 10))


def estimator(params: dict, **overrides):
    """An estimator of ``params`` (an ``ENSEMBLES`` entry) around a new :func:`net`."""
    params = {**params, **overrides}
    cls = {"CertSSBDEstimator": CertSSBDEstimator, "RABEstimator": RABEstimator}[params.pop("cls")]
    model = net()
    return cls(model, nn.CrossEntropyLoss(), (1, 8, 8), 10, optimizer=torch.optim.Adam(model.parameters(), lr=0.03),
               clip_values=(0.0, 1.0), device_type="cpu", **params)  # fmt: skip


def record(out: dict, prefix: str, est, x: np.ndarray, update_memory: bool = True) -> None:
    """``predict`` and ``certify(return_details=True)`` of ``est`` on ``x`` into ``out`` (predict first: it does not
    touch the memory, certify with ``update_memory`` does)."""
    out[f"{prefix}predict"] = est.predict(x)
    out[f"{prefix}predict_majority"] = est.predict(x, is_abstain=False)
    result = est.certify(x, return_details=True, update_memory=update_memory)
    for field in RESULT_FIELDS:
        out[f"{prefix}certify__{field}"] = np.asarray(getattr(result, field))


def memory_arrays(out: dict, prefix: str, memory) -> None:
    for field in MEMORY_FIELDS:
        out[f"{prefix}{field}"] = getattr(memory, field)


def main(target: Path) -> None:
    torch.set_num_threads(1)
    x_train, y_train, x_test, y_test = load_digits(random_state=0)
    x_train, y_train = x_train[:200], y_train[:200]
    x_memory, x_query = x_test[:10], x_test[10:20]
    out: dict = {"x_query": x_query}
    for name, params in ENSEMBLES.items():
        torch.manual_seed(0)
        est = estimator(params)
        growth = None
        if name == "rab_grown":
            growth = Growth(x_test[20:60], y_test[20:60], radius=0.05, wave_size=4, tol=0.5, patience=1)
        est.fit(x_train, y_train, growth=growth, **FIT)
        if name == "certssbd_memory":
            est.certify(x_memory)  # regions certified before the save
            before = est.certify(x_query, return_details=True, update_memory=False)
            certified = np.flatnonzero(before.pred >= 0)
            inside, outside = certified[0], certified[np.argmax(before.radius[certified[1:]]) + 1]
            unit = torch.randn(64, generator=torch.Generator().manual_seed(0)).numpy().astype(np.float64)
            unit /= np.linalg.norm(unit)
            flat = x_query.reshape(len(x_query), -1).astype(np.float64)
            r_out = float(before.radius[outside])
            centers = np.stack([flat[inside] + 0.02 * unit, flat[outside] + (0.05 + r_out / 2) * unit])
            labels = (before.pred[[inside, outside]] + 1) % 10
            est.memory_.update(centers, labels, np.array([0.1, 0.05]), 0.25, radius_conservative=np.array([0.1, 0.05]))
            memory_arrays(out, f"{name}__memory_saved__", est.memory_)
        directory = target / name
        shutil.rmtree(directory, ignore_errors=True)
        if name == "rab":
            est.save(name, path=str(target))  # ART's save: save_ensemble under path/filename
        else:
            est.save_ensemble(directory)
        out[f"{name}__params"] = np.array(json.dumps(params))
        out[f"{name}__nb_models_"] = np.array(est.nb_models_)
        if name == "certssbd_memory":
            query = est.certify(x_query, return_details=True, update_memory=False)
            for field in RESULT_FIELDS:
                out[f"{name}__query__{field}"] = np.asarray(getattr(query, field))
            assert (query.pred != query.pred_before_memory).any(), "no query input falls inside a stored region"
            assert (query.radius < before.radius).any(), "no query radius is trimmed"
        record(out, f"{name}__", est, x_query)
        if name == "certssbd_memory":
            memory_arrays(out, f"{name}__memory_after__", est.memory_)
            nomem = estimator(params, use_memory=False)
            nomem.load_ensemble(directory)
            record(out, f"{name}__nomem__", nomem, x_query)
        again = estimator(params)  # this code's own round trip answers as the fitted estimator did
        again.load_ensemble(directory)
        if name == "certssbd_memory":
            memory_arrays(again_arrays := {}, "", again.memory_)
            for field in MEMORY_FIELDS:
                np.testing.assert_array_equal(again_arrays[field], out[f"{name}__memory_saved__{field}"])
        check: dict = {}
        record(check, "", again, x_query)
        for key, value in check.items():
            np.testing.assert_array_equal(value, out[f"{name}__{key}"], err_msg=f"{name}: {key}")
    try:
        commit = subprocess.run(["git", "-C", str(Path(art_certssbd.__file__).parent), "rev-parse", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    out["written_by"] = np.array(
        json.dumps(
            {
                "commit": commit,
                "package_version": art_certssbd.__version__,
                "torch": torch.__version__,
                "numpy": np.__version__,
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "cpu_model": cpu_model(),
                "machine": platform.machine(),
                "python": platform.python_version(),
            }
        )  # fmt: skip
    )
    np.savez_compressed(target / "expected.npz", **out)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    if importlib.util.find_spec("art_certssbd.interop") is None:  # e46f52c has it, today's package does not
        sys.exit(f"make.py writes the format of art-certssbd {COMMIT}: run it with PYTHONPATH at that checkout")
    main(target)
