"""Helpers shared by the tests and by ``resume_fit.py`` (a script the resume tests run in a subprocess): the small
digits estimator every test file builds, and comparisons of ensemble runs."""

from __future__ import annotations

import torch

from art_certssbd import CertSSBDEstimator, RABEstimator
from art_certssbd.models import DigitsCNN

# Parameters of Cert-SSBD's sigma optimiser (RABEstimator has a fixed sigma and, in these tests, no warm-up).
SIGMA_PARAMS = ("sigma_steps", "sigma_samples", "sigma_lr", "sigma_bounds", "sigma_update", "warmup_epochs")


def digits_estimator(
    cls=CertSSBDEstimator, *, net=None, seed=0, input_shape=(1, 8, 8), nb_classes=10, lr=3e-3, **params
):
    """An estimator around a :class:`DigitsCNN` (initialised from ``seed``, without touching the global generator)
    or around ``net``, with Adam at ``lr``, ``clip_values=(0, 1)``, on the CPU unless ``device_type`` is given. For
    :class:`RABEstimator` the Cert-SSBD-only parameters in ``params`` are dropped, so one dict serves both."""
    if net is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = DigitsCNN(nb_classes)
    if cls is RABEstimator:
        params = {key: value for key, value in params.items() if key not in SIGMA_PARAMS}
    return cls(
        net,
        torch.nn.CrossEntropyLoss(),
        input_shape,
        nb_classes,
        optimizer=torch.optim.Adam(net.parameters(), lr=lr),
        clip_values=(0.0, 1.0),
        **{"device_type": "cpu", **params},
    )


def assert_runs_identical(a: dict, b: dict) -> None:
    """Two outputs of ``resume_fit.run`` are bitwise equal: members, base model, sigmas, votes and radii."""
    assert len(a["members"]) == len(b["members"])
    for k, (ma, mb) in enumerate(zip(a["members"], b["members"])):
        assert ma.keys() == mb.keys()
        for name in ma:
            assert torch.equal(ma[name], mb[name]), f"member {k}, {name}"
    for name in b["base"]:
        assert torch.equal(a["base"][name], b["base"][name]), name
    for key in ("train_sigma", "sigma", "votes", "radius"):
        assert torch.equal(a[key], b[key]), key
