"""The figures the README and docs quote are rendered from ``benchmarks/results/*.json`` (``render_docs.py``): the
committed docs match a fresh rendering, a changed results file makes them stale, and the interpretive words follow
the stated rules."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import render_docs as rd

ROOT = Path(__file__).resolve().parents[1]


def _loader(patch=None):
    names = ("mnist-cpu", "defences-cpu", "official_mnist_onepixel", rd.BUDGET_MNIST, rd.BUDGET_DIGITS)
    cache = {name: rd.load_results(name) for name in names}

    def load(name: str) -> dict:
        data = copy.deepcopy(cache[name])
        if patch is not None:
            patch(name, data)
        return data

    return load


def test_committed_docs_match_the_results():
    """The check the lead and CI rely on: rerender every marked passage in memory and compare."""
    assert rd.stale() == [], "run: python benchmarks/render_docs.py"


def test_every_doc_has_its_blocks():
    for rel, names in {
        "README.md": {"rules", "readme-mnist", "readme-defences", "readme-official", "readme-budget"},
        "docs/defences.md": {
            "rules",
            "defences-setup",
            "defences-tables",
            "defences-reading",
            "defences-budget-mnist",
            "defences-budget-digits",
        },
        "docs/paper-setting.md": {"paper-mnist", "paper-verdict"},
    }.items():
        assert names <= set(rd.blocks_in((ROOT / rel).read_text())), rel


def test_a_changed_results_file_makes_the_docs_stale(tmp_path):
    """Change one figure in a copy of the results: the committed README no longer matches."""

    def patch(name, data):
        if name == "defences-cpu":
            data["runs"][3]["methods"]["rab"]["attack_success_rate"] = 0.4

    text = (ROOT / "README.md").read_text()
    assert rd.render_text(text, _loader()) == text
    changed = rd.render_text(text, _loader(patch))
    assert changed != text and "0.40" in changed


def test_the_quoted_figures_are_the_files():
    """Spot checks against the JSON, independent of the renderer's helpers."""
    readme = " ".join((ROOT / "README.md").read_text().split())  # wrapped lines joined
    off = json.loads((ROOT / "benchmarks/results/official_mnist_onepixel.json").read_text())
    clean = off["rows"]["official (stored sigma)"]["clean"]
    assert f"{clean[0]:.4f} / {clean[1]:.4f}" in readme
    d = json.loads((ROOT / "benchmarks/results/defences-cpu.json").read_text())
    ten = [r for r in d["runs"] if r["task"] == "mnist-10"]
    acc = [r["methods"][m]["clean_accuracy"] for r in ten for m in ("rab", "cert-ssbd")]
    assert f"clean accuracy {min(acc):.2f}-{max(acc):.2f}" in readme
    caught = max(r["methods"]["spectral"]["poisons_caught"] for r in d["runs"])
    assert "catches none" not in readme and f"0-{caught} of" in readme


@pytest.mark.parametrize(
    ("ours", "theirs", "word"),
    [
        ([0.9, 0.5], [0.9, 0.5], "tied"),
        ([0.9, 0.504], [0.9, 0.5], "tied"),  # within the rule's 0.005
        ([0.9, 0.506], [0.9, 0.5], "ahead"),
        ([0.9, 0.49], [0.9, 0.5], "behind"),
        ([0.8, 0.6], [0.9, 0.5], "mixed"),
    ],
)
def test_verdict_rule(ours, theirs, word):
    assert rd.verdict_word(ours, theirs, [0.0, 0.5]) == word


def test_conservative_ahead_is_named_not_called_a_tie():
    """The drift the issue found ("only ties RAB" against +0.008 at r = 1) cannot come back: make one conservative
    curve tie everywhere and the sentence changes with it."""
    text = " ".join(rd.readme_mnist(_loader()).split())
    assert "is ahead in 1 (+0.008 at r = 1" in text

    def patch(name, data):
        if name == "mnist-cpu":
            for run in data["runs"]:
                cs = run["methods"]["cert-ssbd"]
                cs["certified_accuracy_conservative"]["clean"] = list(
                    run["methods"]["rab"]["certified_accuracy"]["clean"]
                )

    assert "ties RAB in every run" in rd.readme_mnist(_loader(patch))


def test_low_asr_with_low_triggered_accuracy_is_flagged():
    text = rd.readme_mnist(_loader())
    assert "RAB at sigma0 = 0.12 has ASR 0.005 with triggered accuracy 0.474" in text

    def patch(name, data):
        if name == "mnist-cpu":
            data["runs"][0]["methods"]["rab"]["triggered_abstain_rate"] = 0.52

    assert "abstains on 0.520 of the triggered inputs" in rd.readme_mnist(_loader(patch))


def test_unknown_block_is_refused():
    with pytest.raises(ValueError, match="unknown results block 'nope'"):
        rd.render_text("<!-- results:nope start -->\n<!-- results:nope end -->", _loader())


def test_new_results_show_the_triggered_abstentions():
    """Once the defences benchmark is rerun (its rows then carry triggered accuracy and abstentions), the docs table
    shows them instead of the note that they are missing."""

    def patch(name, data):
        if name == "defences-cpu":
            for run in data["runs"]:
                for m in run["methods"].values():
                    m.update(triggered_accuracy=0.5, triggered_abstain_rate=0.25)

    old, new = rd.defences_tables(_loader()), rd.defences_tables(_loader(patch))
    assert "predate the triggered-set abstention column" in old
    assert "predate" not in new and "| rab | 0.50 / 0.25 |" in new


def _budget_rows(name: str) -> dict[tuple[int, float], dict[str, float]]:
    """``{(k, delta): {method: certified accuracy}}`` straight from the JSON (the first of a repeated budget)."""
    (run,) = rd.load_results(name)["runs"]
    out: dict = {}
    for j, (k, delta) in enumerate(run["budgets"]):
        out.setdefault((k, delta), {n: m["budget_certified_accuracy"][j] for n, m in run["methods"].items() if
                                    "budget_certified_accuracy" in m})  # fmt: skip
    return out


@pytest.mark.parametrize("name", [rd.BUDGET_MNIST, rd.BUDGET_DIGITS])
def test_attackers_units_tables_are_the_files(name):
    """The docs' attacker's-units tables: every budget of the file once, its figures, the attack's own labelled."""
    text = (ROOT / "docs/defences.md").read_text()
    (run,) = rd.load_results(name)["runs"]
    rows = [line for line in rd.budget_table(rd.load_results(name)).splitlines()[2:]]
    assert all(line in text for line in rows)
    expected = _budget_rows(name)
    assert len(rows) == len(expected)
    for (k, delta), acc in expected.items():
        label = " (the attack)" if (k, delta) == (run["nb_poisoned"], run["trigger_l2_max_poisoned"]) else ""
        line = f"| {k}{label} | {delta:g}{label} | {acc['rab']:.3f} | {acc['cert-ssbd']:.3f} | {acc['dpa']:.3f} |"
        assert rows.count(line) == 1, line


def test_the_readme_states_the_attackers_units_finding():
    readme = " ".join((ROOT / "README.md").read_text().split())
    acc = _budget_rows(rd.BUDGET_MNIST)
    assert max(acc[(1, 1.0)]["rab"], acc[(1, 1.0)]["cert-ssbd"], acc[(100, 1.0)]["rab"]) == 0
    assert "no smoothing certificate reaches `(1, 1)` or `(100, 1)` (the attack)" in readme
    assert f"DPA certifies one replaced sample (any change) for {acc[(1, 1.0)]['dpa']:.2f} of the inputs" in readme
    assert f"`(10, 0.02)` for {acc[(10, 0.02)]['rab']:.2f} (DPA {acc[(10, 0.02)]['dpa']:.2f})" in readme


def test_attackers_units_sentences_follow_the_figures():
    """A changed budget figure makes the docs stale, and the derived words change with it."""

    def patch(name, data):
        if name == rd.BUDGET_MNIST:
            m = data["runs"][0]["methods"]
            m["rab"]["budget_certified_accuracy"][2] = 0.5  # (1, 0.1): RAB now below Cert-SSBD's 0.92
            m["rab"]["budget_certified_accuracy"][0] = 0.3  # (1, 1): RAB now certifies it
            m["rab"]["budget_certified_accuracy"][4] = 0.3  # its repeat, [1, "trigger"], same budget

    for rel in ("README.md", "docs/defences.md"):
        text = (ROOT / rel).read_text()
        assert rd.render_text(text, _loader()) == text
        assert rd.render_text(text, _loader(patch)) != text
    mnist = " ".join(rd.defences_budget_mnist(_loader(patch)).split())
    assert "Cert-SSBD's budget certificate is mixed against RAB's" in mnist
    assert " ".join(rd.defences_budget_mnist(_loader()).split()).count("is tied with RAB's") == 1
    readme = " ".join(rd.readme_budget(_loader(patch)).split())
    assert "no smoothing certificate reaches `(100, 1)` (the attack)" in readme and "`(1, 1)` for 0.00-0.30" in readme


def test_out_of_reach_budgets_are_certified_by_no_smoothed_row():
    """The ceiling arithmetic (M, alpha and the recorded sigmas) only calls a budget out of reach where the file
    indeed certifies nothing; and the vote counts it quotes are the certificate's own threshold."""
    from art_certssbd.certification import max_certifiable_radius

    for name in (rd.BUDGET_MNIST, rd.BUDGET_DIGITS):
        d = rd.load_results(name)
        text = " ".join(rd.budget_reading(d).split())
        out = text.split("That puts ", 1)[1].split(" out of reach", 1)[0]
        for (k, delta), acc in _budget_rows(name).items():
            if f"`({k}, {delta:g})`" in out:
                assert acc["rab"] == acc["cert-ssbd"] == 0, (name, k, delta)
    alpha, z = 0.01, 11**0.5  # RAB at (10, 0.25), sigma 0.25: Phi^-1(p_a_lower) > 0.25 sqrt(11) / 0.25
    m = rd.unanimous_votes_needed(z, alpha)
    assert max_certifiable_radius(m, alpha=alpha) > z >= max_certifiable_radius(m - 1, alpha=alpha)
