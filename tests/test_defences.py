"""The defences benchmark (certssbd_bench.defences): configuration checks, and every row on tiny synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from certssbd_bench import defences
from certssbd_bench.defences_report import budget_rows, plot_budget, plot_defences, render_defences

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def _write(tmp_path, payload) -> str:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(payload))
    return str(path)


def test_config_merges_over_the_defaults(tmp_path):
    cfg = defences.load_defences_config(_write(tmp_path, {"name": "x", "nb_models": 3}))
    assert cfg["name"] == "x" and cfg["nb_models"] == 3 and cfg["methods"] == list(defences.METHODS)


@pytest.mark.parametrize(
    "payload,message",
    [
        ({"bogus": 1}, "unknown keys"),
        ({"triggers": ["seven-pixel"]}, "triggers must be"),
        ({"methods": []}, "methods must be"),
        ({"settings": [{"task": "cifar"}]}, "a setting must be"),
        ({"settings": [{"task": "mnist-10", "triggers": ["seven-pixel"]}]}, "a setting must be"),
        ({"budgets": [[1, -0.5]]}, r"a budget must be \[k, delta\].*got \[1, -0.5\]"),
        ({"budgets": [["all", 1.0]]}, "a budget must be"),
        ({"budgets": [[1.5, 1.0]]}, "a budget must be"),
        ({"torch_threads": 0}, "torch_threads must be"),
        ({"torch_threads": "2"}, "torch_threads must be"),
    ],
)
def test_bad_config_is_refused_before_any_work(tmp_path, payload, message):
    with pytest.raises(ValueError, match=message):
        defences.load_defences_config(_write(tmp_path, payload))


def test_art_pattern_reads_channels_first_batches():
    x = np.zeros((2, 1, 28, 28), dtype=np.float32)
    out = defences.art_pattern(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out[:, 0, -4:, -4:].sum() > 0 and out[:, 0, :20].sum() == 0  # bottom-right corner only


def test_art_pattern_is_arts_pattern_scaled_and_not_the_four_pixel_trigger():
    from art.attacks.poisoning.perturbations import add_pattern_bd

    from art_certssbd.attacks import four_pixel

    mnist = np.zeros((1, 1, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(defences.art_pattern(mnist)[:, 0], add_pattern_bd(mnist[:, 0]))  # ART's default
    digits = np.zeros((1, 1, 8, 8), dtype=np.float32)
    pattern = defences.art_pattern(digits)[0, 0] > 0
    assert sorted(map(tuple, np.argwhere(pattern))) == [(5, 7), (6, 6), (7, 5), (7, 7)]  # d = 1
    four = four_pixel(2.0)(digits)[0, 0] > 0
    assert pattern.sum() == four.sum() == 4 and (pattern & four).sum() == 1  # one shared pixel, three distinct


def test_partition_hash_depends_on_the_sample_only():
    h = defences._hash_partition(7)
    x = np.random.default_rng(0).random((1, 28, 28)).astype(np.float32)
    assert h(x) == h(x.copy()) and 0 <= h(x) < 7


def _tiny(setting, data_dir=None):
    rng = np.random.default_rng(0)
    nb_classes = 2 if setting["task"] == "mnist-1v0" else 10
    y = np.arange(160) % nb_classes
    x = (rng.random((160, 1, 28, 28)) * 0.2 + y[:, None, None, None] / (2 * nb_classes)).astype(np.float32)
    return x[:120], y[:120], x[120:], y[120:], nb_classes


def test_every_defence_runs_and_reports_its_columns(monkeypatch, tmp_path):
    monkeypatch.setattr(defences, "load_setting", _tiny)
    cfg = {
        **defences.DEFAULTS,
        "settings": [{"task": "mnist-1v0"}],
        "triggers": ["four-pixel"],
        "nb_epochs": 1,
        "nb_models": 2,
        "dpa_partitions": 2,
        "dpa_epochs": 1,
        "rs_sample_size": 8,
        "sigma_steps": 1,
        "sigma_samples": 2,
        "warmup_epochs": 1,
        "poison_rate": 0.1,
    }
    results = defences.run_defences_benchmark(cfg)
    (run,) = results["runs"]
    assert list(run["methods"]) == list(defences.METHODS)
    assert run["nb_poisoned"] == 12
    for name, row in run["methods"].items():
        assert 0 <= row["clean_accuracy"] <= 1 and 0 <= row["attack_success_rate"] <= 1, name
        assert row["wall_time_s"] > 0
        assert 0 <= row["triggered_accuracy"] <= 1 and 0 <= row["abstain_rate"] <= 1, name
        assert 0 <= row["triggered_abstain_rate"] <= 1 - row["triggered_accuracy"] + 1e-12, name
    for name in ("undefended", "activation", "spectral", "dpa"):  # plain classifiers always answer
        assert run["methods"][name]["triggered_abstain_rate"] == 0.0 == run["methods"][name]["abstain_rate"]
    for name in ("activation", "spectral"):
        row = run["methods"][name]
        assert 0 <= row["poisons_caught"] <= 12 and row["poisons_caught"] + row["false_alarms"] == row["removed"]
    dpa = run["methods"]["dpa"]["dpa_certified_accuracy"]
    assert len(dpa) == len(cfg["dpa_counts"]) and dpa == sorted(dpa, reverse=True)
    for name in ("randomized-smoothing", "rab", "cert-ssbd"):
        assert len(run["methods"][name]["certified_accuracy"]) == len(cfg["radii"])
    assert "certified_accuracy_conservative" in run["methods"]["cert-ssbd"]
    # the attacker's units: the default budgets, with the attack's own k and largest trigger norm filled in
    own = run["trigger_l2_max_poisoned"]
    assert 0 < own <= cfg["delta"] + 1e-5
    assert run["budgets"] == [[1, 1.0], [10, 0.25], [1, 0.1], [10, 0.02], [1, own], [10, own], [12, own]]
    for name in ("rab", "cert-ssbd", "dpa"):
        acc = run["methods"][name]["budget_certified_accuracy"]
        assert len(acc) == 7 and all(0 <= a <= 1 for a in acc), name
        assert acc[4] >= acc[5] >= acc[6], name  # more poisoned samples at the same norm: never more certified
    assert run["methods"]["cert-ssbd"]["train_sigma"]["min"] >= cfg["scale"] - 1e-6
    assert run["budget_k"] == [0, 1, 2, 5, 10, 20, 50, 100, 120]
    for name in ("rab", "cert-ssbd", "dpa"):  # the curves at the trigger's norm, consistent with the table
        curve = run["methods"][name]["certified_accuracy_by_k"]
        assert len(curve) == 9 and curve == sorted(curve, reverse=True), name
        assert curve[1] == run["methods"][name]["budget_certified_accuracy"][4], name  # k = 1 at the trigger norm
    text = render_defences(results)
    assert "In the attacker's units" in text and "| 12 (the attack) | " in text
    assert "| cert-ssbd |" in text and "| dpa |" in text and "caught / false alarms" in text
    rab = run["methods"]["rab"]
    assert f"| {rab['triggered_accuracy']:.3f} / {rab['triggered_abstain_rate']:.3f} |" in text
    pytest.importorskip("matplotlib")
    assert plot_defences(results, tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert plot_budget(results, tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("method", ["activation", "undefended", "dpa"])
def test_art_trained_rows_are_seeded(monkeypatch, method):
    """ART's ActivationDefence clusters with scikit-learn's KMeans(random_state=None), and ART's PyTorchClassifier.fit
    (the undefended network, every DPA partition) shuffles its mini-batches, both from numpy's global generator: the
    harness seeds it, and ART re-initialises each DPA partition's copy of the network from torch's global generator,
    which the harness seeds too: the same configuration gives the same rows whatever the generators held before."""
    monkeypatch.setattr(defences, "load_setting", _tiny)
    cfg = {
        **defences.DEFAULTS,
        "settings": [{"task": "mnist-1v0"}],
        "triggers": ["four-pixel"],
        "methods": [method],
        "nb_epochs": 1,
        "dpa_epochs": 1,
        "dpa_partitions": 3,
        "poison_rate": 0.1,
    }
    rows = []
    for state in (1, 2):
        np.random.seed(state)  # whatever the global generators held before
        torch.manual_seed(state)
        (run,) = defences.run_defences_benchmark(cfg)["runs"]
        rows.append({k: v for k, v in run["methods"][method].items() if k != "wall_time_s"})
    assert rows[0] == rows[1]


def test_results_record_what_reproduces_them(monkeypatch):
    monkeypatch.setattr(defences, "load_setting", _tiny)
    monkeypatch.setattr(defences.torch, "set_num_threads", lambda n: calls.append(n))
    calls: list[int] = []
    cfg = {**defences.DEFAULTS, "settings": [{"task": "mnist-1v0"}], "triggers": ["one-pixel"]}
    cfg.update(methods=["undefended"], nb_epochs=1, torch_threads=1)
    results = defences.run_defences_benchmark(cfg)
    assert calls == [1]
    env = results["environment"]
    for key in ("torch_threads", "cpu_model", "logical_cpus", "thread_env", "git_commit", "torch", "art", "sklearn"):
        assert env[key], key
    assert results["config"]["random_state"] == 0 and results["config"]["torch_threads"] == 1
    results["command"] = "python benchmarks/run.py defences --config c.json"
    text = render_defences(results)
    assert f"OMP_NUM_THREADS={env['torch_threads']} python benchmarks/run.py defences --config c.json" in text
    results["command"] = "certssbd benchmark defences --config c.json"  # recorded before run.py ran the benchmarks
    text = render_defences(results)
    assert f"OMP_NUM_THREADS={env['torch_threads']} python benchmarks/run.py defences --config c.json" in text
    assert env["cpu_model"] in text and env["git_commit"] in text


def _budget_run(budgets, nb_poisoned=100, own=1.0) -> dict:
    acc = [round(0.1 * j, 1) for j in range(len(budgets))]
    return {
        "task": "mnist-1v0",
        "trigger": "one-pixel",
        "nb_train": 1000,
        "nb_test": 100,
        "nb_poisoned": nb_poisoned,
        "trigger_l2": own,
        "trigger_l2_max_poisoned": own,
        "budgets": budgets,
        "methods": {
            "rab": {"clean_accuracy": 1.0, "attack_success_rate": 0.0, "wall_time_s": 1.0,
                    "budget_certified_accuracy": acc},
        },
    }  # fmt: skip


def test_budget_table_lists_each_budget_once_and_labels_the_attack():
    """A config that names one budget twice (``[1, 1.0]`` and ``[1, "trigger"]`` at trigger norm 1) gets one row, the
    first one's figures; the attack's own budget (its k and largest trigger norm) is labelled."""
    run = _budget_run([[1, 1.0], [10, 0.25], [1, 0.1], [1, 1.0], [10, 1.0], [100, 1.0]])
    rows = budget_rows(run)
    assert [(k, d) for k, d, _, _ in rows] == [(1, 1.0), (10, 0.25), (1, 0.1), (10, 1.0), (100, 1.0)]
    assert [j for *_, j in rows] == [0, 1, 2, 4, 5]
    assert [a for _, _, a, _ in rows] == [False] * 4 + [True]
    cfg = {**defences.DEFAULTS, "name": "t", "budgets": run["budgets"]}
    text = render_defences({"config": cfg, "runs": [run], "wall_time_s": 1.0})
    table = [line for line in text.splitlines() if line.startswith("| ") and "|---" not in line][-5:]
    assert table == [
        "| 1 | 1 | 0.000 |",
        "| 10 | 0.25 | 0.100 |",
        "| 1 | 0.1 | 0.200 |",
        "| 10 | 1 | 0.400 |",
        "| 100 (the attack) | 1 (the attack) | 0.500 |",
    ]
    assert text.count("| 1 | 1 |") == 1 and text.count("(the attack)") == 2


@pytest.mark.parametrize("path", sorted(RESULTS.glob("defences-*.json")), ids=lambda p: p.stem)
def test_committed_defences_markdown_is_the_renderers_output(path):
    """Each committed ``defences-*.md`` is :func:`render_defences` of its JSON (as the harness writes it), so the
    tables cannot drift from the figures or be edited by hand."""
    expected = render_defences(json.loads(path.read_text())) + "\n"
    assert path.with_suffix(".md").read_text() == expected
