"""Helpers shared by the tests and by ``resume_fit.py`` (a script the resume tests run in a subprocess): the small
digits estimator every test file builds, comparisons of ensemble runs, and the plain-Python reference of the
certification memory's trim rule."""

from __future__ import annotations

import math
import os

import torch
from art.estimators.classification import PyTorchClassifier

from art_certssbd import CertSSBDEstimator, RABEstimator
from art_certssbd.models import DigitsCNN

# Parameters of Cert-SSBD's sigma optimiser (RABEstimator has a fixed sigma and, in these tests, no warm-up).
SIGMA_PARAMS = ("sigma_steps", "sigma_samples", "sigma_lr", "sigma_bounds", "sigma_update", "sigma_tol",
                "sigma_patience", "warmup_epochs")  # fmt: skip


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


def trim_bruteforce(x, c, R, Rc, centers, labels, radii, radii_c):
    """Reference trim rule in plain Python: the new ``(label, radius, conservative radius)`` of ``(x, c, R, Rc)``.

    Decisions use the paper radii; the conservative radius follows: ``max(0, Rc_j - d)`` inside ball ``j``,
    ``min(Rc, d - R_j)`` when trimmed outside, unchanged otherwise (and never above the paper radius).
    """
    if c == -1:  # abstain
        return c, R, Rc
    dists = [math.sqrt(sum((a - b) ** 2 for a, b in zip(x, xj))) for xj in centers]
    # ||x - x_j|| < R + R_j, written as ||x - x_j|| - R_j < R (the form the memory evaluates, same rounding).
    conflicts = [(d, rj, rcj, cj) for d, rj, rcj, cj in zip(dists, radii, radii_c, labels) if cj != c and d - rj < R]
    if not conflicts:
        return c, R, Rc
    inside = [(d - rj, cj, max(0.0, rcj - d)) for d, rj, rcj, cj in conflicts if d < rj]
    if inside:
        depth, cj, rc = min(inside, key=lambda item: item[0])  # first of equal minima, in storage order
        return cj, -depth, min(rc, -depth)
    gap = min(d - rj for d, rj, _, _ in conflicts)
    return c, gap, min(Rc, gap)


def digits_classifier(net, lr=3e-3, clip_values=(0.0, 1.0)) -> PyTorchClassifier:
    """A plain ART classifier around ``net`` for the 8x8 digits (10 classes), with Adam at ``lr``."""
    return PyTorchClassifier(
        net,
        torch.nn.CrossEntropyLoss(),
        (1, 8, 8),
        10,
        optimizer=torch.optim.Adam(net.parameters(), lr=lr),
        clip_values=clip_values,
    )


class Linear2(torch.nn.Module):
    """Two-class logits [0, w.x + b]: its smoothed probability is known in closed form."""

    def __init__(self, dim: int = 4):
        super().__init__()
        self.lin = torch.nn.Linear(dim, 1)
        with torch.no_grad():
            self.lin.weight.copy_(torch.linspace(-1.0, 2.0, dim).unsqueeze(0))
            self.lin.bias.fill_(0.1)

    def forward(self, x):
        z = self.lin(x.reshape(len(x), -1)) * 8.0  # sharp, nearly a hard linear classifier
        return torch.cat([torch.zeros_like(z), z], dim=1)


class FailOnce(torch.nn.Module):
    """Wraps a network; the first forward pass in a process other than the one that built it (a Ray worker) fails,
    once per ``marker`` file: with an exception (``mode="raise"``) or by killing the worker (``mode="exit"``)."""

    def __init__(self, net: torch.nn.Module, marker, mode: str = "raise"):
        super().__init__()
        self.net, self.marker, self.mode, self.driver = net, str(marker), mode, os.getpid()

    def forward(self, x):
        if os.getpid() != self.driver and not os.path.exists(self.marker):
            with open(self.marker, "w") as handle:
                handle.write(str(os.getpid()))
            if self.mode == "exit":
                os._exit(1)
            raise RuntimeError("FailOnce: the planned failure of this task")
        return self.net(x)
