"""Render the figures that the README and ``docs/`` quote from the committed results (``benchmarks/results/*.json``).

Every rendered passage sits between two marker comments in its Markdown file::

    <!-- results:NAME start -->
    ...generated text...
    <!-- results:NAME end -->

and :data:`BLOCKS` maps ``NAME`` to the function that writes it from the JSON files. The words that interpret the
numbers ("ahead", "tied", "removes", "works") come from the same code, with the rules stated once in
:data:`RULES` (and quoted in the docs by the ``rules`` block)::

    python benchmarks/render_docs.py           # rewrite the marked passages in place
    python benchmarks/render_docs.py --check   # exit 1 and name the passages that do not match the results

``tests/test_render_docs.py`` runs the check in the default suite, so a results file that changes without its docs
fails the tests. Text outside the markers is prose and is not checked.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from certssbd_bench.defences_report import budget_rows  # noqa: E402  (the report's rows: each budget once)
from certssbd_bench.render import _verdict  # noqa: E402  (the mnist report's verdict, the one rule for curves)

#: Differences of certified accuracy up to this count as ties (the mnist report's rule, about 10 of 2,115 images).
TIE = 0.005
#: A defence *removes* a backdoor when its attack success rate is at most this.
REMOVED = 0.05
#: An attack *works* (undefended) when its attack success rate is at least this.
WORKS = 0.5
#: A smoothed defence *abstains on much of the triggered set* when its triggered accuracy is more than this below
#: its clean accuracy while its attack success rate stays low.
ABSTAINS = 0.1

RULES = (
    f"Rules used by every sentence generated from the results: a certified-accuracy curve is *ahead* of another when "
    f"it is nowhere more than {TIE} below it and somewhere more than {TIE} above it (*tied*: every difference within "
    f"{TIE}); an attack *works* when its undefended attack success rate (ASR) is at least {WORKS}; a defence "
    f"*removes* it when its ASR is at most {REMOVED}; a smoothed defence whose triggered accuracy is more than "
    f"{ABSTAINS} below its clean accuracy while its ASR is low is said to *abstain* (or err) on the triggered set, "
    "not to have removed the backdoor."
)

DOCS = ("README.md", "docs/defences.md", "docs/paper-setting.md")

#: The results of the attacker's-units tables: the MNIST 1 vs 0 one-pixel cell of ``defences-cpu`` rerun with the
#: table, and the quick 8x8 digits run.
BUDGET_MNIST = "defences-cpu-1v0-onepixel"
BUDGET_DIGITS = "defences-digits-budget"

TASK_LABEL = {"mnist-1v0": "1 vs 0", "mnist-10": "ten digits", "digits": "8x8 digits"}
TRIGGER_LABEL = {
    "one-pixel": "one-pixel",
    "four-pixel": "four-pixel",
    "blending": "blending",
    "art-pattern": "ART pattern",
}

Loader = Callable[[str], dict]


def load_results(name: str, results_dir: Path = RESULTS) -> dict:
    """``benchmarks/results/<name>.json``."""
    return json.loads((results_dir / f"{name}.json").read_text())


# --------------------------------------------------------------------------------------------------------- helpers
def span(values, fmt: str = ".2f") -> str:
    """``"lo-hi"`` of the formatted values (one value when they format alike)."""
    lo, hi = format(min(values), fmt), format(max(values), fmt)
    return lo if lo == hi else f"{lo}-{hi}"


def join(words: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def verdict_word(ours: list[float], theirs: list[float], radii: list[float]) -> str:
    return _verdict(ours, theirs, radii, tol=TIE).split(" ", 1)[0]


def _gain(ours: list[float], theirs: list[float], radii: list[float]) -> tuple[float, float, float, float]:
    """Largest gain of ``ours`` over ``theirs``: (difference, radius, ours, theirs)."""
    i = max(range(len(ours)), key=lambda k: ours[k] - theirs[k])
    return ours[i] - theirs[i], radii[i], ours[i], theirs[i]


def triggered_abstention(m: dict) -> float | None:
    """The triggered set's abstention rate where the results record it."""
    return m.get("triggered_abstain_rate")


def abstains_on_triggered(m: dict) -> bool:
    """:data:`ABSTAINS`'s rule (the triggered accuracy, when recorded, against the clean accuracy)."""
    trig = m.get("triggered_accuracy")
    return trig is not None and m["clean_accuracy"] - trig > ABSTAINS and m["attack_success_rate"] <= REMOVED


# --------------------------------------------------------------------------------------------------------- blocks
def rules(load: Loader) -> str:
    return RULES


def readme_mnist(load: Loader) -> str:
    d = load("mnist-cpu")
    cfg, runs = d["config_file"], d["runs"]
    paper_words, cons_words, best = [], [], None
    cons_ahead = []
    for run in runs:
        radii = [float(r) for r in run["config"]["radii"]]
        rab = run["methods"]["rab"]["certified_accuracy"]["clean"]
        paper = run["methods"]["cert-ssbd"]["certified_accuracy"]["clean"]
        cons = run["methods"]["cert-ssbd"]["certified_accuracy_conservative"]["clean"]
        paper_words.append(verdict_word(paper, rab, radii))
        word = verdict_word(cons, rab, radii)
        cons_words.append(word)
        if word == "ahead":
            g, r, _, _ = _gain(cons, rab, radii)
            cons_ahead.append(
                f"{g:+.3f} at r = {r:g} for {run['config']['trigger']} at sigma0 = {run['config']['scale']:g}"
            )
        g = _gain(paper, rab, radii)
        if run["config"]["trigger"] == "one-pixel" and (best is None or run["config"]["scale"] == 0.5):
            best = (g, run["config"]["scale"])
    n = len(runs)

    def count(words: list[str], word: str) -> str:
        k = words.count(word)
        return "every run" if k == n else f"{k} of {n} runs"

    (g, r, ours, theirs), s0 = best
    paper_text = (
        f"With the paper's radius, Cert-SSBD is ahead of RAB in {count(paper_words, 'ahead')} (for example "
        f"{ours:.3f} against {theirs:.3f} at r = {r:g} for the one-pixel trigger at sigma0 = {s0:g})."
    )
    tied, ahead = cons_words.count("tied"), cons_words.count("ahead")
    if tied == n:
        cons_text = "With the conservative radius it ties RAB in every run"
    else:
        parts = [f"ties RAB in {tied} of {n} runs"] if tied else []
        if ahead:
            parts.append(f"is ahead in {ahead} ({'; '.join(cons_ahead)})")
        others = n - tied - ahead
        if others:
            parts.append(f"is behind or mixed in {others}")
        cons_text = "With the conservative radius it " + join(parts)
    cons_text += ": the gain comes mostly from putting the larger sample-specific sigma into the radius."
    und = [run["methods"]["undefended"]["attack_success_rate"] for run in runs]
    defended = [
        (run, name, run["methods"][name]) for run in runs for name in ("rab", "cert-ssbd") if name in run["methods"]
    ]
    asr = [m["attack_success_rate"] for _, _, m in defended]
    text = [
        f"- **MNIST 1 vs 0, CPU size** (M = {cfg['nb_models']}, {cfg['nb_epochs']} epochs, {n} trigger/sigma0 runs; "
        f"`mnist-cpu.md`). {paper_text} {cons_text} The undefended model's attack success rate is {span(und, '.3f')}; "
        f"that of RAB and Cert-SSBD is {span(asr, '.3f')}."
    ]
    for run, name, m in defended:
        if abstains_on_triggered(m):
            rate = triggered_abstention(m)
            how = (
                f"it abstains on {rate:.3f} of the triggered inputs"
                if rate is not None
                else "the rest of the triggered set is abstentions or errors (this results file predates the "
                "triggered abstention column)"
            )
            text.append(
                f"  But ASR is not the whole story: {name.upper() if name == 'rab' else 'Cert-SSBD'} at sigma0 = "
                f"{run['config']['scale']:g} has ASR {m['attack_success_rate']:.3f} with triggered accuracy "
                f"{m['triggered_accuracy']:.3f} (clean {m['clean_accuracy']:.3f}): {how}."
            )
    return "\n".join(text)


def _defence_rows(d: dict):
    """``[(task, trigger, methods)]`` of the defences benchmark."""
    return [(run["task"], run["trigger"], run["methods"]) for run in d["runs"]]


def readme_defences(load: Loader) -> str:
    d = load("defences-cpu")
    rows = _defence_rows(d)
    tasks = list(dict.fromkeys(t for t, _, _ in rows))
    nb_train = sorted({run["nb_train"] for run in d["runs"]})
    und = [m["undefended"]["attack_success_rate"] for _, _, m in rows]
    works = sum(a >= WORKS for a in und)
    works_text = (
        f"Every attack works undefended (ASR {span(und)})"
        if works == len(und)
        else f"{works} of {len(und)} attacks work undefended (ASR {span(und)})"
    )
    smooth = ("rab", "cert-ssbd")
    # per task: triggers removed by both smoothed defences, the ones not removed, clean accuracy and its cost
    sentences = []
    for task in tasks:
        trs = [(tr, m) for t, tr, m in rows if t == task]
        removed = [TRIGGER_LABEL[tr] for tr, m in trs if all(m[s]["attack_success_rate"] <= REMOVED for s in smooth)]
        kept = [(tr, m) for tr, m in trs if not all(m[s]["attack_success_rate"] <= REMOVED for s in smooth)]
        clean = [m[s]["clean_accuracy"] for _, m in trs for s in smooth]
        cost = [m["undefended"]["clean_accuracy"] - m[s]["clean_accuracy"] for _, m in trs for s in smooth]
        asr_removed = [m[s]["attack_success_rate"] for tr, m in trs for s in smooth if TRIGGER_LABEL[tr] in removed]
        part = f"on {TASK_LABEL[task]} RAB and Cert-SSBD "
        part += (
            f"remove the {join(removed)} backdoor{'s' if len(removed) > 1 else ''} (ASR {span(asr_removed)})"
            if removed
            else "remove no backdoor"
        )
        if kept:
            part += " but not the " + join(
                [f"{TRIGGER_LABEL[tr]} (ASR {span([m[s]['attack_success_rate'] for s in smooth])})" for tr, m in kept]
            )
        part += f", at clean accuracy {span(clean)} (a cost of {span(cost)} against the undefended model)"
        sentences.append(part)
    act = [(t, m["activation"]) for t, _, m in rows]
    spec = [m["spectral"]["poisons_caught"] for _, _, m in rows]
    nb_poisoned = sorted({run["nb_poisoned"] for run in d["runs"]})
    dpa = [m["dpa"]["attack_success_rate"] for _, _, m in rows]
    rs = [m["randomized-smoothing"]["attack_success_rate"] for _, _, m in rows]
    removed_frac = [a["false_alarms"] / n for (_, a), n in zip(act, [run["nb_train"] for run in d["runs"]])]
    spec_text = (
        "catches no poison"
        if max(spec) == 0
        else f"catches {span(spec, 'd')} of {nb_poisoned[-1]} poisons per setting (ASR "
        f"{span([m['spectral']['attack_success_rate'] for _, _, m in rows])})"
    )
    return (
        f"- **Beside ART's own defences** (`defences-cpu.md`, read in `docs/defences.md`): activation clustering, "
        f"spectral signatures, DPA (with its count certificate), test-time randomized smoothing, RAB and Cert-SSBD on "
        f"the same poisoned MNIST data ({join([TASK_LABEL[t] for t in tasks])}, "
        f"{len({tr for _, tr, _ in rows})} triggers each, {span(nb_train, ',')} training images, "
        f"{d['wall_time_s'] / 60:.0f} minutes on {d['environment']['cpu_count']} threads). {works_text}. "
        + ". ".join(s[0].upper() + s[1:] for s in sentences)
        + f". ActivationDefence removes the backdoor (ASR at most {REMOVED}) in "
        f"{sum(a['attack_success_rate'] <= REMOVED for _, a in act)} of {len(act)} settings but also "
        f"{span([100 * f for f in removed_frac], '.0f')} % of the training set as false alarms; ART's "
        f"SpectralSignatureDefense (on logits) {spec_text}; DPA lets {span(dpa)} through and test-time smoothing "
        f"{span(rs)}. No row *certifies* these attacks: their total trigger norm is far above every certified radius."
    )


def readme_official(load: Loader) -> str:
    d = load("official_mnist_onepixel")
    radii = d["radii"]
    i = radii.index(0.25)
    off = d["rows"]["official (stored sigma)"]["clean"]
    ours = d["rows"]["ours, sigma0, Clopper-Pearson"]["clean"]
    readme = d["official_readme"]["cert_acc"]
    copies = d.get("train_noise_copies", 1)  # from_official's default unless the results record another count
    assumed = (
        "assuming, as RAB's released training code does, that each member saw one noisy copy of each training sample"
        if copies == 1
        else f"assuming that each member saw {copies} noisy copies of each training sample (RAB's code draws one)"
    )
    return (
        f"- **The {d['nb_models']} released Cert-SSB models** (`official_mnist_onepixel.md`). The official evaluation "
        f"reproduces at {off[0]:.4f} / {off[i]:.4f} at r = 0 / 0.25 (the official README reports {readme[0]:.4f} / "
        f"{readme[i]:.4f}; its test noise is unseeded). Our sound certificate on the same models gives {ours[0]:.4f} "
        f"/ {ours[i]:.4f}, {assumed} (the Cert-SSB training code is not released; `from_official(..., "
        "train_noise_copies=E)` certifies members that saw `E` copies, with radii divided by `sqrt(E)`)."
    )


def _summary_table(rows, cell: Callable[[dict], str], names) -> list[str]:
    head = " | ".join(f"{'1v0' if t == 'mnist-1v0' else '10'} {TRIGGER_LABEL[tr]}" for t, tr, _ in rows)
    lines = [f"| defence | {head} |", "|---|" + "---:|" * len(rows)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(cell(m.get(name)) if m.get(name) else "-" for _, _, m in rows) + " |")
    return lines


def defences_tables(load: Loader) -> str:
    d = load("defences-cpu")
    rows = _defence_rows(d)
    radii = d["config"]["radii"]
    last = len(radii) - 1
    names = list(dict.fromkeys(n for _, _, m in rows for n in m))
    lines = ["Clean accuracy / attack success rate:", ""]
    lines += _summary_table(rows, lambda m: f"{m['clean_accuracy']:.2f} / {m['attack_success_rate']:.2f}", names)
    if any("triggered_abstain_rate" in m.get("rab", {}) for _, _, m in rows):
        lines += ["", "Triggered accuracy / abstention on the triggered test set (smoothed rows):", ""]
        lines += _summary_table(
            rows,
            lambda m: f"{m['triggered_accuracy']:.2f} / {m['triggered_abstain_rate']:.2f}",
            [n for n in names if n in ("randomized-smoothing", "rab", "cert-ssbd")],
        )
    else:
        lines += [
            "",
            "These results predate the triggered-set abstention column: a low ASR of a smoothed row may hide "
            "abstentions on the triggered set (rerun the benchmark to get it).",
        ]
    lines += [
        "",
        f"Certified accuracy at r = {radii[last]:g} (paper radius / conservative radius for Cert-SSBD; RAB has one "
        "radius):",
        "",
        "| | " + " | ".join(f"{'1v0' if t == 'mnist-1v0' else '10'} {TRIGGER_LABEL[tr]}" for t, tr, _ in rows) + " |",
        "|---|" + "---:|" * len(rows),
        "| rab | " + " | ".join(f"{m['rab']['certified_accuracy'][last]:.2f}" for _, _, m in rows) + " |",
        "| cert-ssbd, paper | "
        + " | ".join(f"{m['cert-ssbd']['certified_accuracy'][last]:.2f}" for _, _, m in rows)
        + " |",
        "| cert-ssbd, conservative | "
        + " | ".join(f"{m['cert-ssbd']['certified_accuracy_conservative'][last]:.2f}" for _, _, m in rows)
        + " |",
    ]
    return "\n".join(lines)


def defences_reading(load: Loader) -> str:
    d = load("defences-cpu")
    rows = _defence_rows(d)
    tasks = list(dict.fromkeys(t for t, _, _ in rows))
    runs = d["runs"]
    radii = d["config"]["radii"]
    smooth = ("rab", "cert-ssbd")
    out = []
    # undefended
    per_task = [
        f"{span([m['undefended']['attack_success_rate'] for t, _, m in rows if t == task])} on {TASK_LABEL[task]}"
        for task in tasks
    ]
    und = [m["undefended"]["attack_success_rate"] for _, _, m in rows]
    works = "Every attack works undefended" if min(und) >= WORKS else "Not every attack works undefended"
    out.append(f"- **{works}**: ASR {join(per_task)}.")
    # activation
    act = [(t, m["activation"], m["undefended"], run) for (t, _, m), run in zip(rows, runs)]
    caught = {task: [a["poisons_caught"] for t, a, _, _ in act if t == task] for task in tasks}
    alarms = [a["false_alarms"] for _, a, _, _ in act]
    frac = [a["false_alarms"] / run["nb_train"] for _, a, _, run in act]
    cost = {task: [u["clean_accuracy"] - a["clean_accuracy"] for t, a, u, _ in act if t == task] for task in tasks}
    nb_p = runs[0]["nb_poisoned"]
    out.append(
        "- **ActivationDefence** catches "
        + join([f"{span(caught[t], 'd')} of {nb_p} poisons on {TASK_LABEL[t]}" for t in tasks])
        + f", but it also removes {span(alarms, 'd')} clean images ({span([100 * f for f in frac], '.0f')} % of the "
        "training set), which costs "
        + join([f"{span(cost[t])} clean accuracy on {TASK_LABEL[t]}" for t in tasks])
        + f"; it removes the backdoor (ASR at most {REMOVED}) in "
        f"{sum(a['attack_success_rate'] <= REMOVED for _, a, _, _ in act)} of {len(act)} settings. It certifies "
        "nothing, and the clustering needs poisons that form their own cluster."
    )
    # spectral
    spec = [(t, tr, m["spectral"]) for t, tr, m in rows]
    hits = [
        f"{s['poisons_caught']} poisons in {TASK_LABEL[t]} {TRIGGER_LABEL[tr]}"
        for t, tr, s in spec
        if s["poisons_caught"]
    ]
    removes = sum(s["attack_success_rate"] <= REMOVED for _, _, s in spec)
    out.append(
        f"- **SpectralSignatureDefense** removes the backdoor in {removes} of {len(spec)} settings: it flags "
        f"{d['config']['poison_rate'] * 1.5:.0%} of each class (1.5 x the expected poison rate, ART's default) and "
        + ("catches no poison anywhere" if not hits else f"catches {join(hits)} and no poison elsewhere")
        + f" (ASR {span([s['attack_success_rate'] for _, _, s in spec])}). ART computes the spectral signature on "
        "`get_activations` of the *last* layer, i.e. the logits, where the poisons do not stand out; on "
        "penultimate-layer features, as in the original paper, it may do better. We report ART's defence as ART "
        "ships it."
    )
    # DPA
    dpa = {task: [m["dpa"] for t, _, m in rows if t == task] for task in tasks}
    counts = d["config"]["dpa_counts"]
    out.append(
        f"- **DPA** ({d['config']['dpa_partitions']} partitions): clean accuracy "
        + join([f"{span([x['clean_accuracy'] for x in dpa[t]])} on {TASK_LABEL[t]}" for t in tasks])
        + ", ASR "
        + join([f"{span([x['attack_success_rate'] for x in dpa[t]])} on {TASK_LABEL[t]}" for t in tasks])
        + f" (it removes the backdoor in {sum(x['attack_success_rate'] <= REMOVED for v in dpa.values() for x in v)} "
        f"of {len(rows)} settings). Its certificate is the strongest in kind (any change to a few training samples, "
        f"no norm bound) but tiny in size: at most {max(counts)} inserted/deleted samples here, against {nb_p} "
        "poisons."
    )
    # randomized smoothing
    rs = [(t, tr, m["randomized-smoothing"]) for t, tr, m in rows]
    out.append(
        f"- **ART's randomized smoothing** (test-time noise around the poisoned network) removes the backdoor in "
        f"{sum(r['attack_success_rate'] <= REMOVED for _, _, r in rs)} of {len(rs)} settings (ASR "
        f"{span([r['attack_success_rate'] for _, _, r in rs])}) and, where the network never saw noise, loses clean "
        f"accuracy (down to {min(r['clean_accuracy'] for _, _, r in rs):.2f}). Its certificate is about evasion at "
        "test time, not about the training set."
    )
    # RAB and Cert-SSBD
    for task in tasks:
        trs = [(tr, m) for t, tr, m in rows if t == task]
        removed = [TRIGGER_LABEL[tr] for tr, m in trs if all(m[s]["attack_success_rate"] <= REMOVED for s in smooth)]
        kept = [(tr, m) for tr, m in trs if not all(m[s]["attack_success_rate"] <= REMOVED for s in smooth)]
        cost = [m["undefended"]["clean_accuracy"] - m[s]["clean_accuracy"] for _, m in trs for s in smooth]
        clean = [m[s]["clean_accuracy"] for _, m in trs for s in smooth]
        text = f"- **RAB and Cert-SSBD on {TASK_LABEL[task]}** remove "
        text += f"the {join(removed)} backdoor{'s' if len(removed) > 1 else ''}" if removed else "no backdoor"
        if kept:
            text += " but not " + join(
                [
                    f"the {TRIGGER_LABEL[tr]} (RAB {m['rab']['attack_success_rate']:.2f}, Cert-SSBD "
                    f"{m['cert-ssbd']['attack_success_rate']:.2f})"
                    for tr, m in kept
                ]
            )
        text += f", at clean accuracy {span(clean)} (a cost of {span(cost)})."
        out.append(text)
    four = [(t, run) for (t, tr, _), run in zip(rows, runs) if tr == "four-pixel"]
    if four:
        out.append(
            f"  The four-pixel trigger (mean norm {span([run['trigger_l2'] for _, run in four])}) is what the network "
            f"still sees through noise of sigma {d['config']['scale']:g}: smoothing masks weak triggers, not strong "
            "ones, which is what the certificate's bound on the trigger norm says."
        )
    # Cert-SSBD against RAB
    asr_cmp = [(m["cert-ssbd"]["attack_success_rate"], m["rab"]["attack_success_rate"]) for _, _, m in rows]
    lower = sum(c < r for c, r in asr_cmp)
    same = sum(c == r for c, r in asr_cmp)
    cons_words = [
        verdict_word(m["cert-ssbd"]["certified_accuracy_conservative"], m["rab"]["certified_accuracy"], radii)
        for _, _, m in rows
    ]
    paper_words = [
        verdict_word(m["cert-ssbd"]["certified_accuracy"], m["rab"]["certified_accuracy"], radii) for _, _, m in rows
    ]
    last = len(radii) - 1
    out.append(
        f"- **Cert-SSBD against RAB**: ASR lower in {lower}, equal in {same} and higher in "
        f"{len(asr_cmp) - lower - same} of {len(asr_cmp)} settings. Against RAB's certified-accuracy curve its paper "
        f"radius is {_counts(paper_words)} of {len(rows)} settings (at r = {radii[last]:g} it certifies "
        f"{span([m['cert-ssbd']['certified_accuracy'][last] for _, _, m in rows])} where RAB certifies "
        f"{span([m['rab']['certified_accuracy'][last] for _, _, m in rows])}); its conservative radius is "
        f"{_counts(cons_words)} of {len(rows)}: the gain comes from putting the larger sample-specific sigma into the "
        f"radius (see `guarantees.md`). With {runs[0]['nb_test']} test images "
        f"one image is {1 / runs[0]['nb_test']:.2f}, above the tie rule's {TIE}, so *mixed* here can mean one image."
    )
    l2 = [run["trigger_l2"] for run in runs]
    stacked = [nb_p**0.5 * v for v in l2]
    out.append(
        f"- **No row certifies these attacks**: {nb_p} triggers of norm {span(l2, '.1f')} stack to a total norm of "
        f"{span(stacked, '.0f')}, far above any radius here ({max(radii):g}), and DPA certifies at most {max(counts)} "
        f"of {nb_p} samples. Every low ASR in the table is *measured*, not certified; the certified rows tell a user "
        "how far a certificate reaches, and at this size it reaches far less than the attack."
    )
    return "\n".join(out)


def _counts(words: list[str]) -> str:
    """``"ahead in 2, mixed in 6"`` (the verdicts that occur, in a fixed order)."""
    return ", ".join(f"{w} in {words.count(w)}" for w in ("ahead", "tied", "behind", "mixed") if words.count(w))


def defences_setup(load: Loader) -> str:
    d = load("defences-cpu")
    cfg = d["config"]
    epochs = {s["task"]: s.get("nb_epochs", cfg["nb_epochs"]) for s in cfg["settings"]}
    env = d["environment"]
    return (
        f"The committed results cover {len(d['runs'])} settings "
        f"({join([f'{TASK_LABEL[t]} ({e} epochs)' for t, e in epochs.items()])}, each with "
        f"{join([TRIGGER_LABEL[t] for t in cfg['triggers']])} triggers), the first "
        f"{span([s['max_train'] for s in cfg['settings']], ',')} training images with {cfg['poison_rate']:.0%} "
        f"poisoned (target class {cfg['target']}), {span([s['max_test'] for s in cfg['settings']], 'd')} test images, "
        f"trigger L2 norm {cfg['delta']:g} (the one pixel clips at 1; ART's pattern sets its pixels to 1), M = "
        f"{cfg['nb_models']} members at alpha = {cfg['alpha']:g} and sigma0 = {cfg['scale']:g} for RAB and Cert-SSBD, "
        f"{cfg['dpa_partitions']} DPA partitions, randomized smoothing with n = {cfg['rs_sample_size']} at the same "
        f"sigma. The whole run took {d['wall_time_s'] / 60:.0f} minutes ({env['processor']}, "
        f"{env.get('torch_threads', env['cpu_count'])} torch threads, torch {env['torch']}, ART {env['art']})."
    )


def _zero(v: float) -> str:
    return "0" if v == 0 else f"{v:.3f}"


def paper_mnist(load: Loader) -> str:
    d = load("mnist-cpu")
    radii = [float(r) for r in d["config_file"]["radii"]]
    show = [r for r in radii if 0 < r <= 1.25]
    idx = [radii.index(r) for r in show]
    head = " / ".join(f"{r:g}" for r in show)
    lines = [
        f"| trigger | sigma0 | RAB r={head} | Cert-SSBD, paper radius | Cert-SSBD, conservative radius |",
        "|---|---:|---|---|---|",
    ]
    for run in d["runs"]:
        m = run["methods"]
        curves = (
            m["rab"]["certified_accuracy"]["clean"],
            m["cert-ssbd"]["certified_accuracy"]["clean"],
            m["cert-ssbd"]["certified_accuracy_conservative"]["clean"],
        )
        cells = [" / ".join(_zero(c[i]) for i in idx) for c in curves]
        lines.append(f"| {run['config']['trigger']} | {run['config']['scale']:g} | " + " | ".join(cells) + " |")
    und = {run["config"]["trigger"]: run["methods"]["undefended"]["attack_success_rate"] for run in d["runs"]}
    defended = [(run, n, run["methods"][n]) for run in d["runs"] for n in ("rab", "cert-ssbd")]
    nonzero = [
        f"{m['attack_success_rate']:.3f} for {'RAB' if n == 'rab' else 'Cert-SSBD'} at sigma0 = "
        f"{run['config']['scale']:g}"
        for run, n, m in defended
        if m["attack_success_rate"] > 0
    ]
    lines += [
        "",
        f"The undefended model learns every trigger (attack success rate "
        f"{join([f'{v:.3f}' for v in und.values()])} for the {join(list(und))} triggers); RAB and Cert-SSBD have an "
        f"attack success rate of 0" + (f" ({'; '.join(nonzero)})" if nonzero else "") + " and clean accuracy "
        f"{span([m['clean_accuracy'] for _, _, m in defended], '.3f')}.",
    ]
    cons = []
    for run in d["runs"]:
        rab = run["methods"]["rab"]["certified_accuracy"]["clean"]
        c = run["methods"]["cert-ssbd"]["certified_accuracy_conservative"]["clean"]
        word = verdict_word(c, rab, radii)
        if word != "tied":
            g, r, _, _ = _gain(c, rab, radii)
            cons.append(
                f"{word} by {g:+.3f} at r = {r:g} for {run['config']['trigger']} at sigma0 = {run['config']['scale']:g}"
            )
    tied = len(d["runs"]) - len(cons)
    lines += [
        "",
        f"With the conservative radius Cert-SSBD is tied with RAB in {tied} of {len(d['runs'])} runs"
        + (f" and {'; '.join(cons)}" if cons else "")
        + f" (ties: every difference within {TIE}).",
    ]
    return "\n".join(lines)


def paper_verdict(load: Loader) -> str:
    """The paper radius against RAB in the mnist benchmark: verdicts, where the largest gain is, the largest loss."""
    d = load("mnist-cpu")
    runs, n_test = d["runs"], d["data"]["test"]
    words, gains, losses, step = [], [], [], True
    for run in runs:
        radii = [float(r) for r in run["config"]["radii"]]
        rab = run["methods"]["rab"]["certified_accuracy"]["clean"]
        paper = run["methods"]["cert-ssbd"]["certified_accuracy"]["clean"]
        words.append(verdict_word(paper, rab, radii))
        g, r, ours, theirs = _gain(paper, rab, radii)
        i = radii.index(r)
        step &= theirs == 0 and i > 0 and rab[i - 1] > 0  # the first radius at which RAB certifies nothing
        gains.append((r, f"{run['config']['trigger']} at sigma0 = {run['config']['scale']:g}", ours, theirs))
        losses.append(max(b - a for a, b in zip(paper, rab)))
    k = words.count("ahead")
    head = "in all" if k == len(runs) else f"in {k} of"
    where = ", ".join(
        f"{ours:.3f} at r = {r:g} for {label}" + ("" if step else f" (RAB {theirs:.3f})")
        for r, label, ours, theirs in gains
    )
    worst = max(losses)
    at = "the first radius where RAB certifies nothing" if step else "these radii"
    return (
        f"- **With the paper's radius, Cert-SSBD is ahead of RAB {head} {len(runs)} runs**"
        + (", by one radius step" if step else "")
        + f": its largest gain is at {at} (certified accuracy {where}), and it is never more than {worst:.4f} below "
        f"RAB anywhere ({round(worst * n_test)} of the {n_test:,} test images)."
    )


# ------------------------------------------------------------------------------------- the attacker's units
BUDGET_COLUMNS = (("rab", "RAB"), ("cert-ssbd", "Cert-SSBD"), ("dpa", "DPA"))
NAME = {"undefended": "undefended", **dict(BUDGET_COLUMNS)}
SMOOTHED = ("rab", "cert-ssbd")


def _budget(k: int, delta: float) -> str:
    return f"`({k}, {delta:g})`"


def _rows(run: dict) -> list[tuple[int, float, bool, dict[str, float]]]:
    """``(k, delta, attack, {method: certified accuracy})`` per distinct budget (the report's rows)."""
    return [
        (k, d, attack, {n: run["methods"][n]["budget_certified_accuracy"][j] for n, _ in BUDGET_COLUMNS})
        for k, d, attack, j in budget_rows(run)
    ]


def budget_table(d: dict) -> str:
    """The attacker's-units table of a results file with one run: RAB, Cert-SSBD, then DPA, one row per budget."""
    (run,) = d["runs"]
    parts = d["config"]["dpa_partitions"]
    lines = [
        f"| k | delta | RAB | Cert-SSBD | DPA ({parts} partitions) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for k, delta, attack, acc in _rows(run):
        label = " (the attack)" if attack else ""
        cells = " | ".join(f"{acc[n]:.3f}" for n, _ in BUDGET_COLUMNS)
        lines.append(f"| {k}{label} | {delta:g}{label} | {cells} |")
    return "\n".join(lines)


def _num(v: float) -> str:
    """Three significant digits, without an exponent below a million: ``9.85``, ``477``, ``3,190``."""
    return f"{float(f'{v:.3g}'):,.0f}" if v >= 1000 else f"{v:.3g}"


def _votes(text: float) -> str:
    """A vote count: ``11,624`` or ``6.9e8``."""
    if text < 1e6:
        return f"{int(text):,}"
    mantissa, exponent = f"{text:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def unanimous_votes_needed(z: float, alpha: float) -> float:
    """The fewest unanimous votes whose Clopper-Pearson ``p_a_lower = (alpha / 2) ** (1 / M)`` (one draw per member,
    :func:`art_certssbd.certification.max_certifiable_radius`) exceeds ``Phi(z)``: ``M > log(alpha / 2) /
    log Phi(z)`` (``inf`` where ``Phi(z)`` rounds to 1)."""
    import math

    from scipy.stats import norm

    log_phi = math.log1p(-norm.sf(z))
    return math.inf if log_phi == 0 else math.floor(math.log(alpha / 2) / log_phi) + 1


def budget_reading(d: dict) -> str:
    """What the table shows and why, derived from the file: the ceiling on ``Phi^-1(p_a_lower)`` from M and alpha,
    the budgets that ceiling puts out of reach with the recorded training sigmas, what RAB would need for them, the
    budgets the smoothing certificates reach, DPA's count certificate, and Cert-SSBD against RAB."""
    from art_certssbd.certification import max_certifiable_radius

    cfg = d["config"]
    (run,) = d["runs"]
    m = run["methods"]
    rows = _rows(run)
    nb_models, alpha = cfg["nb_models"], cfg["alpha"]
    z = max_certifiable_radius(nb_models, 1.0, alpha=alpha)
    smax = max(m[n]["train_sigma"]["max"] for n in SMOOTHED)
    rab_sigma = m["rab"]["train_sigma"]["max"]
    out = [
        f"With {nb_models} votes at alpha = {alpha:g}, `Phi^-1(p_a_lower)` is at most {z:.3f} (unanimous votes), so a "
        f"budget needs `delta^2 (S_k + 1 / sigma_x^2) < {z * z:.3f}`. Every training sigma here is at most "
        f"{smax:.3f}, so `S_k >= k / {smax:.3f}^2 = {1 / smax**2:.3g} k`."
    ]
    reach = [(k, dl, a) for k, dl, a, _ in rows if dl * dl * k / smax**2 >= z * z]
    if reach:
        out.append(
            "That puts "
            + join([f"{_budget(k, dl)} (`delta^2 S_k >= {_num(dl * dl * k / smax**2)}`)" for k, dl, _ in reach])
            + " out of reach at this ensemble size, whatever the votes."
        )
        needs = [
            (k, dl, dl * (k + 1) ** 0.5 / rab_sigma) for k, dl, a in reach if not a
        ]  # RAB: delta < radius / sqrt(k + 1), radius = sigma Phi^-1(p_a_lower)
        if needs:
            out.append(
                f"For RAB (every sigma {rab_sigma:g}) a budget needs `Phi^-1(p_a_lower) > delta sqrt(k + 1) / "
                f"{rab_sigma:g}`: "
                + "; ".join(
                    f"{_budget(k, dl)} needs {t:.3g}, at least {_votes(unanimous_votes_needed(t, alpha))} unanimous "
                    "votes"
                    for k, dl, t in needs
                )
                + f" at alpha = {alpha:g}."
            )
    reached = [(k, dl, acc) for k, dl, _, acc in rows if max(acc[n] for n in SMOOTHED) > 0]
    if reached:
        out.append(
            "The smoothing certificates reach "
            + join(
                [
                    f"{_budget(k, dl)} (RAB {acc['rab']:.3f}, Cert-SSBD {acc['cert-ssbd']:.3f}, DPA {acc['dpa']:.3f})"
                    for k, dl, acc in reached
                ]
            )
            + "."
        )
    else:
        out.append("The smoothing certificates reach none of these budgets.")
    parts = cfg["dpa_partitions"]
    one = [acc["dpa"] for k, _, _, acc in rows if k == 1]
    if one:
        out.append(
            f"DPA (clean accuracy {m['dpa']['clean_accuracy']:.2f} here) certifies one replaced sample of any kind "
            f"for {one[0]:.2f} of the inputs, whatever delta."
        )
    out.append(
        f"With {parts} partitions it can never certify more than {parts // 4} replaced samples (`rho <= {parts // 2}` "
        "insertions/deletions, two per replaced sample)."
    )
    both = [(acc["cert-ssbd"], acc["rab"], k, dl) for k, dl, _, acc in rows if max(acc[n] for n in SMOOTHED) > 0]
    if both:
        word = verdict_word([c for c, *_ in both], [r for _, r, *_ in both], list(range(len(both))))
        ours, theirs = m["cert-ssbd"]["train_sigma"]["min"], m["rab"]["train_sigma"]["min"]
        rel = {"ahead": "ahead of", "behind": "behind", "tied": "tied with", "mixed": "mixed against"}[word]
        text = f"In this run Cert-SSBD's budget certificate is {rel} RAB's"
        if word in ("behind", "tied") and ours >= theirs:
            text += (
                f"{', but not because of its training sigmas' if word == 'behind' else ''}: its smallest, "
                f"{ours:.3f}, is at least RAB's {theirs:g}, so its `S_k` is no larger"
            )
        c, r, k, dl = both[0]
        text += (
            f". Its clean accuracy is {m['cert-ssbd']['clean_accuracy']:.2f} against RAB's "
            f"{m['rab']['clean_accuracy']:.2f}, and at {_budget(k, dl)} it certifies "
            f"{c / m['cert-ssbd']['clean_accuracy']:.2f} of its correct predictions against RAB's "
            f"{r / m['rab']['clean_accuracy']:.2f}."
        )
        out.append(text)
        radii = cfg["radii"]
        paper, rab = m["cert-ssbd"]["certified_accuracy"], m["rab"]["certified_accuracy"]
        gain = [i for i in range(len(radii)) if paper[i] > 0 and rab[i] == 0]
        if gain and word != "ahead":
            i = gain[-1]
            out.append(
                f"Its sample-specific gain shows in the paper radius ({paper[i]:.2f} certified at r = {radii[i]:g}, "
                "where RAB has 0), not in the attacker's units, where the worst `k` training sigmas count."
            )
    return " ".join(out)


def defences_budget_digits(load: Loader) -> str:
    d = load(BUDGET_DIGITS)
    cfg, (run,) = d["config"], d["runs"]
    return "\n".join(
        [
            f"A quick run on the 8x8 digits (`benchmarks/configs/{BUDGET_DIGITS}.json`, {d['wall_time_s']:.0f} s; "
            f"`benchmarks/results/{BUDGET_DIGITS}.{{json,md,png}}` and `-budget.png`, certified accuracy against `k` "
            f"at the attack's trigger norm with DPA on the same axis) uses the {TRIGGER_LABEL[run['trigger']]} trigger "
            f"(largest L2 norm {run['trigger_l2_max_poisoned']:g}) on {run['nb_poisoned']} of {run['nb_train']:,} "
            f"training images, with M = {cfg['nb_models']} at alpha = {cfg['alpha']:g} and sigma0 = "
            f"{cfg['scale']:g}. Its certified accuracy on the {run['nb_test']} clean test images:",
            "",
            budget_table(d),
            "",
            budget_reading(d),
        ]
    )


def _same_cell(rerun: dict, committed: dict) -> tuple[list[str], list[str]]:
    """The rows of the rerun cell whose clean accuracy, ASR and certified accuracies equal the committed cell's,
    and those that differ."""
    keys = ("clean_accuracy", "attack_success_rate", "certified_accuracy", "dpa_certified_accuracy")
    same, differ = [], []
    for name, m in rerun["methods"].items():
        old = committed["methods"].get(name, {})
        (same if all(m.get(k) == old.get(k) for k in keys) else differ).append(name)
    return same, differ


def defences_budget_mnist(load: Loader) -> str:
    d, full = load(BUDGET_MNIST), load("defences-cpu")
    cfg, (run,) = d["config"], d["runs"]
    cell = [r for r in full["runs"] if (r["task"], r["trigger"]) == (run["task"], run["trigger"])]
    label = f"{TASK_LABEL[run['task']]}, {TRIGGER_LABEL[run['trigger']]}"
    has = [r for r in full["runs"] if "budgets" in r]
    head = (
        "The committed `defences-cpu` results have this table under each setting."
        if len(has) == len(full["runs"])
        else "The committed `defences-cpu` results were written before the harness recorded this table."
    )
    text = (
        f"{head} The one-cell rerun `benchmarks/results/{BUDGET_MNIST}.{{json,md}}` (config "
        f"`benchmarks/configs/{BUDGET_MNIST}.json`: MNIST {label}, the same settings and seeds, "
        f"{d['wall_time_s'] / 60:.0f} minutes on {d['environment'].get('torch_threads', '?')} threads) has it"
    )
    if cell:
        same, differ = ([NAME.get(n, n) for n in names] for names in _same_cell(run, cell[0]))
        if "git_commit" not in full["environment"]:
            text += " (the committed cell was written by an earlier commit of the harness, not recorded in its JSON)"
        if not differ:
            text += "; it reproduces the committed cell's rows"
        else:
            text += (
                f"; its {join(differ)} rows differ from the committed cell's (clean accuracy, ASR or certified "
                f"accuracy){', ' + join(same) + ' match' if same else ''}: see `benchmarks/README.md` on what varies"
            )
    text += (
        f". To regenerate every setting with the table, run `python benchmarks/run.py defences --config "
        f"benchmarks/configs/defences-cpu.json` ({full['wall_time_s'] / 60:.0f} minutes on "
        f"{full['environment'].get('torch_threads', full['environment']['cpu_count'])} threads, MNIST needed)."
    )
    return "\n".join(
        [
            text,
            "",
            f"On MNIST {label}, {run['nb_poisoned']} of {run['nb_train']:,} training images poisoned (largest trigger "
            f"norm {run['trigger_l2_max_poisoned']:g}), M = {cfg['nb_models']} at alpha = {cfg['alpha']:g} and sigma0 "
            f"= {cfg['scale']:g}, certified accuracy on the {run['nb_test']} clean test images:",
            "",
            budget_table(d),
            "",
            budget_reading(d),
        ]
    )


def readme_budget(load: Loader) -> str:
    d = load(BUDGET_MNIST)
    (run,) = d["runs"]
    rows = _rows(run)
    own = run["trigger_l2_max_poisoned"]
    smooth = lambda acc: max(acc[n] for n in SMOOTHED)  # noqa: E731
    none_at = [(k, dl) for k, dl, a, acc in rows if (a or (k == 1 and dl == own)) and smooth(acc) == 0]
    reached = [(k, dl, acc) for k, dl, _, acc in rows if smooth(acc) > 0]
    one = [acc["dpa"] for k, _, _, acc in rows if k == 1]
    text = (
        f"- **In the attacker's units** (`{BUDGET_MNIST}.md`, read in `docs/defences.md`; MNIST "
        f"{TASK_LABEL[run['task']]} {TRIGGER_LABEL[run['trigger']]}, {run['nb_poisoned']} of {run['nb_train']:,} "
        f"training images poisoned, trigger norm {own:g}): "
    )
    parts = []
    if none_at:
        parts.append(
            "no smoothing certificate reaches "
            + join(
                [f"{_budget(k, dl)}{' (the attack)' if k == run['nb_poisoned'] else ''}" for k, dl in none_at]
            ).replace(" and ", " or ")
        )
    if one:
        parts.append(f"DPA certifies one replaced sample (any change) for {one[0]:.2f} of the inputs")
    if reached:
        parts.append(
            "RAB and Cert-SSBD certify "
            + join(
                [
                    f"{_budget(k, dl)} for {span([acc[n] for n in SMOOTHED])} (DPA {acc['dpa']:.2f})"
                    for k, dl, acc in reached
                ]
            )
        )
    return (
        text + "; ".join(parts) + ". DPA's count covers any change to `k` samples; the smoothing budget covers "
        "L2-bounded feature triggers with the labels as observed."
    )


BLOCKS: dict[str, Callable[[Loader], str]] = {
    "rules": rules,
    "readme-mnist": readme_mnist,
    "readme-defences": readme_defences,
    "readme-official": readme_official,
    "defences-setup": defences_setup,
    "defences-tables": defences_tables,
    "defences-reading": defences_reading,
    "paper-mnist": paper_mnist,
    "paper-verdict": paper_verdict,
    "defences-budget-digits": defences_budget_digits,
    "defences-budget-mnist": defences_budget_mnist,
    "readme-budget": readme_budget,
}

MARKER = re.compile(r"(<!-- results:([a-z0-9-]+) start -->\n)(.*?)(<!-- results:\2 end -->)", re.DOTALL)


WIDTH = 118
CODE = re.compile(r"`[^`]*`")
NBSP = "\x00"


def wrap(block: str) -> str:
    """Wrap the prose lines of a rendered block at :data:`WIDTH` (tables and markers untouched; list items keep their
    two-space continuation indent)."""
    out = []
    for line in block.split("\n"):
        if line.startswith("|") or len(line) <= WIDTH:
            out.append(line)
            continue
        indent = "  " if line.startswith(("- ", "  ")) else ""
        # a code span is never broken (a wrapped `... + 1` could start a line with "+ ", a Markdown list item)
        line = CODE.sub(lambda m: m.group(0).replace(" ", NBSP), line)
        wrapped = textwrap.wrap(line, WIDTH, subsequent_indent=indent, break_on_hyphens=False, break_long_words=False)
        out.extend(w.replace(NBSP, " ") for w in wrapped)
    return "\n".join(out)


def render_text(text: str, load: Loader) -> str:
    """``text`` with every marked passage rewritten; an unknown block name is an error."""

    def sub(match: re.Match) -> str:
        name = match.group(2)
        if name not in BLOCKS:
            raise ValueError(f"unknown results block {name!r}; known: {sorted(BLOCKS)}")
        return match.group(1) + wrap(BLOCKS[name](load)) + "\n" + match.group(4)

    return MARKER.sub(sub, text)


def blocks_in(text: str) -> list[str]:
    return [m.group(2) for m in MARKER.finditer(text)]


def stale(root: Path = ROOT, load: Loader = load_results) -> list[str]:
    """The doc files whose marked passages differ from a fresh rendering."""
    out = []
    for rel in DOCS:
        text = (root / rel).read_text()
        if render_text(text, load) != text:
            out.append(rel)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when a passage is stale")
    args = parser.parse_args(argv)
    if args.check:
        bad = stale()
        for rel in bad:
            print(f"{rel}: figures differ from benchmarks/results (run python benchmarks/render_docs.py)")
        return 1 if bad else 0
    for rel in DOCS:
        path = ROOT / rel
        text = path.read_text()
        new = render_text(text, load_results)
        if new != text:
            path.write_text(new)
            print(f"rewrote {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
