"""The demo's experiment (art_certssbd.experiment): the triggered set's abstentions are reported beside its accuracy
and attack success rate, so that "ASR 0" cannot hide "abstains on everything"."""

from __future__ import annotations

import numpy as np

from art_certssbd.cli import render
from art_certssbd.datasets import load_digits
from art_certssbd.experiment import ExperimentConfig, run_experiment
from art_certssbd.models import DigitsCNN


def test_triggered_abstentions_are_reported_and_rendered():
    x, y, xt, yt = load_digits(random_state=0)
    data = (x[:300], y[:300], xt[:60], yt[:60])
    config = ExperimentConfig(
        trigger="four-pixel",
        delta=1.0,
        poison_rate=0.1,
        nb_models=3,
        nb_epochs=1,
        warmup_epochs=1,
        sigma_steps=1,
        sigma_samples=1,
        radii=(0.0, 0.1),
        vectorize=False,
    )
    seen = {}
    results = run_experiment(
        data, lambda: DigitsCNN(10), 10, config, verbose=False, on_result=lambda n, r, e: seen.update({n: r})
    )
    assert results["methods"]["undefended"]["triggered_abstain_rate"] == 0.0
    non_target = yt[:60] != config.target
    for name in ("rab", "cert-ssbd"):
        m, trig = results["methods"][name], seen[name]["triggered"]
        # computed here from the per-sample predictions, independently of the experiment's own code
        assert m["triggered_abstain_rate"] == np.mean(trig.pred == -1)
        assert m["triggered_accuracy"] == np.mean(trig.pred == yt[:60])
        # abstentions are neither the target nor correct: the three fractions of the non-target inputs add up to <= 1
        p = trig.pred[non_target]
        assert np.mean(p == config.target) + np.mean(p == yt[:60][non_target]) + np.mean(p == -1) <= 1 + 1e-12
    text = render(results)
    assert "| abstains (triggered) |" in text
    rab = results["methods"]["rab"]
    assert f"| {rab['triggered_accuracy']:.3f} | {rab['triggered_abstain_rate']:.3f} | " in text
