"""Helper of tests/test_resume.py and tests/test_determinism.py (not a test module): fit a small ensemble with a
checkpoint directory, one member at a time, and write what it learned.

    python tests/resume_fit.py CHECKPOINT_DIR OUTPUT [--pause SECONDS] [--vectorize [--chunk MEMBERS]]

``OUTPUT`` receives ``torch.save`` of ``{"members": [state_dict, ...], "base": state_dict, "train_sigma": tensor,
"sigma": tensor, "votes": tensor, "radius": tensor}`` (the last three from ``certify`` on a few test inputs).
``--pause`` sleeps after each stored member, only so that a test can kill the process between two members; it
changes nothing in the results. ``--vectorize`` trains with ``vmap``, ``--chunk`` members at a time (the
``memory_budget`` is set to that many copies of the training set), and stores them chunk by chunk.
Progress is logged to stderr (``Training K of M members``).
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch
from helpers import digits_estimator

from art_certssbd import CertSSBDEstimator
from art_certssbd.checkpoint import EnsembleCheckpoint
from art_certssbd.datasets import load_digits

NB_MODELS = 12
PARAMS = dict(
    nb_models=NB_MODELS,
    scale=0.25,
    alpha=0.1,
    random_state=11,
    sigma_steps=3,
    sigma_samples=2,
    warmup_epochs=1,
    vectorize=False,  # the loop path stores every member as soon as it is trained
)


def make_estimator(**overrides) -> CertSSBDEstimator:
    return digits_estimator(**{**PARAMS, **overrides})


def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x_train, y_train, x_test, _ = load_digits(random_state=0)
    return x_train[:200], y_train[:200], x_test[:16]


def options(vectorize: bool = False, chunk: int | None = None) -> dict:
    """Estimator overrides for the training path: the loop, or vmap over chunks of ``chunk`` members."""
    if chunk is None:
        return {"vectorize": vectorize}
    return {"vectorize": vectorize, "memory_budget": chunk * data()[0].nbytes}


def run(checkpoint_dir=None, **overrides) -> dict:
    """Fit (resuming from ``checkpoint_dir`` when it holds members) and certify; return the results."""
    x, y, x_test = data()
    est = make_estimator(**overrides)
    est.fit(x, y, nb_epochs=2, batch_size=50, checkpoint_dir=checkpoint_dir)
    result = est.certify(x_test, return_details=True, update_memory=False)
    return {
        "members": [est.ensemble_.state_dict(k) for k in range(est.ensemble_.nb_models)],
        "base": {k: v.detach().clone() for k, v in est.base_model.state_dict().items()},
        "train_sigma": torch.from_numpy(est.train_sigma_.copy()),
        "sigma": torch.from_numpy(result.sigma.copy()),
        "votes": torch.from_numpy(result.votes.copy()),
        "radius": torch.from_numpy(result.radius.copy()),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint_dir")
    parser.add_argument("output")
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--vectorize", action="store_true")
    parser.add_argument("--chunk", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if args.pause:
        save_member = EnsembleCheckpoint.save_member

        def save_then_pause(self, k, state_dict):
            save_member(self, k, state_dict)
            time.sleep(args.pause)

        EnsembleCheckpoint.save_member = save_then_pause
    torch.save(run(args.checkpoint_dir, **options(args.vectorize, args.chunk)), args.output)


if __name__ == "__main__":
    main()
