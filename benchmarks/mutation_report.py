"""Mutation testing of the certification core (issue 10): run mutmut in a scratch copy and write the survivor report.

    python benchmarks/mutation_report.py              # run mutmut, then write benchmarks/results/mutation.{md,json}
    python benchmarks/mutation_report.py --report-only --workdir DIR   # report on an existing run in DIR

``tox -e mutation`` runs the first form. A long run goes in parts in one ``--workdir`` (each part a glob of mutant
names, e.g. ``"art_certssbd.memory*"``; ``--resume`` runs only the mutants of the globs not checked yet, ``--rerun
FILE`` the named ones again after new tests); the report sums the parts' times and names the machine. Each mutant runs
under ``benchmarks/mutation_conftest.py`` (fastest tests first, a per-test CPU limit reported as a timeout).

mutmut works in a scratch copy of the tracked (and untracked, not ignored)
files, so ``mutants/`` never lands in the repository; the copy is made under ``--workdir`` (default a fresh temporary
folder). The modules mutated and the (fast, focused) tests run against each mutant are :data:`MODULES` and
:data:`TESTS` below.

Every surviving mutant must be either killed by a test or explained in ``benchmarks/mutation_equivalent.toml``
(an equivalent mutant, or one whose only effect is outside what a test can observe). Entries are keyed by a stable
description of the mutant (module, function, the original and the mutated source line), not by mutmut's numeric
index, which moves whenever a function changes. The report lists each survivor with its diff and its explanation,
or ``UNEXPLAINED``; the script exits 1 if a module of :data:`CORE` has an unexplained survivor (any status other
than killed or timeout: survived, suspicious, no tests, ...) or a mutant left unchecked, or if an entry of the toml
is stale (matches no mutant, or claims equivalence for a mutant the tests kill), so the tox env fails.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
EXPLANATIONS = ROOT / "benchmarks" / "mutation_equivalent.toml"

MODULES = [
    "art_certssbd/certification.py",
    "art_certssbd/counts.py",
    "art_certssbd/sequential.py",
    "art_certssbd/confseq.py",
    "art_certssbd/growth.py",
    "art_certssbd/stats.py",
    "art_certssbd/memory.py",
    "art_certssbd/_distances.py",
]
#: Every module mutated: an unexplained survivor or an unchecked mutant in any of them fails the tox env.
CORE = [p.removesuffix(".py").replace("/", ".") for p in MODULES]
#: Tests run against each mutant (mutmut runs only those that execute the mutated function, fastest first). The
#: estimator-level soundness tests (``tests/test_soundness.py``) train torch members and would cost about a minute per
#: surviving mutant; everything they check of these modules is reached through the pure functions tested here.
TESTS = [
    "tests/test_mutation_kills.py",
    "tests/test_certification.py",
    "tests/test_sequential.py",
    "tests/test_confseq.py",
    "tests/test_growth.py",
    "tests/test_stats.py",
    "tests/test_memory.py",
]
PYTEST_ARGS = ["-m", "not slow and not gpu", "-p", "no:cacheprovider", "-q"]

MUTMUT_CONFIG = f"""
[tool.mutmut]
source_paths = ["art_certssbd"]
only_mutate = {json.dumps(MODULES)}
pytest_add_cli_args_test_selection = {json.dumps(TESTS)}
pytest_add_cli_args = {json.dumps(PYTEST_ARGS)}
also_copy = ["benchmarks", "tests", "conftest.py"]
"""


def prepare(workdir: Path) -> None:
    """Copy the project's tracked and untracked-not-ignored files into ``workdir`` and add the mutmut config."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / os.fsdecode(name)
        if src.is_file():
            dst = workdir / os.fsdecode(name)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    pyproject = workdir / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + MUTMUT_CONFIG)
    # the run's root conftest: fastest tests first and a per-test CPU limit (speed only, see the file)
    shutil.copy2(ROOT / "benchmarks" / "mutation_conftest.py", workdir / "conftest.py")


def run(workdir: Path, max_children: int, names: list[str]) -> float:
    start = time.monotonic()
    exe = shutil.which("mutmut", path=str(Path(sys.executable).parent)) or "mutmut"
    # One torch/OpenMP thread: mutmut forks each mutant's pytest from a process that has run the tests once, and a
    # forked child that enters an OpenMP pool started before the fork hangs idle (a conv2d in a growth test did). An
    # idle hang uses no CPU, so the conftest's CPU limit never ends it; mutmut's wall-clock limit then reports it as
    # ``timeout``, i.e. killed, which would count a mutant as killed that no test saw.
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([exe, "run", "--max-children", str(max_children), *names], cwd=workdir, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"mutmut run failed with exit code {proc.returncode}")
    return time.monotonic() - start


TIMING = "mutation_timing.json"


def machine() -> str:
    """The CPU model, the cores this process may use and the OS, for the report."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cores} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def record_part(workdir: Path, names: list[str], seconds: float, max_children: int) -> None:
    """Add one ``mutmut run`` (a part of a run split by module) to the timing kept in ``workdir``."""
    path = workdir / TIMING
    timing = json.loads(path.read_text()) if path.exists() else {"machine": machine(), "parts": []}
    part = {"names": list(names), "seconds": round(seconds, 1), "max_children": max_children, "nice": os.nice(0)}
    timing["parts"].append(part)
    path.write_text(json.dumps(timing, indent=1) + "\n")


def load_timing(workdir: Path) -> dict | None:
    path = workdir / TIMING
    return json.loads(path.read_text()) if path.exists() else None


def _split(name: str) -> tuple[str, str]:
    """``art_certssbd.stats.x_radius__mutmut_3`` -> (``art_certssbd.stats``, ``radius``); ``Class.method``."""
    mangled = name.partition("__mutmut_")[0]
    module, _, func = mangled.rpartition(".")
    if "ǁ" in func:  # mutmut's class separator: xǁClassǁmethod
        _, cls, meth = func.split("ǁ")
        return module, f"{cls}.{meth}"
    return module, func.removeprefix("x_")


def _changed_lines(diff: str) -> tuple[str, str]:
    before, after = [], []
    for line in diff.splitlines():
        if line.startswith(("---", "+++")):
            continue
        if line.startswith("-"):
            before.append(line[1:].strip())
        elif line.startswith("+"):
            after.append(line[1:].strip())
    return " / ".join(before), " / ".join(after)


def _key(entry: dict) -> tuple[str, str, str, str]:
    return entry["module"], entry["function"], entry["before"].strip(), entry["after"].strip()


def load_explanations() -> tuple[dict, dict]:
    data = tomllib.loads(EXPLANATIONS.read_text()) if EXPLANATIONS.exists() else {}
    equivalent = {}
    for entry in data.get("equivalent", []):
        key = _key(entry)
        if key in equivalent:
            raise SystemExit(f"{EXPLANATIONS.name}: duplicate [[equivalent]] entry {key}")
        equivalent[key] = entry["reason"]
    killed = {}
    for entry in data.get("killed", []):
        killed[_key(entry)] = entry["test"]
    return equivalent, killed


_DUMP = """
import json, sys
from mutmut.mutation.data import SourceFileMutationData
from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code
from mutmut.utils.file_utils import walk_mutatable_files
out = []
for path in walk_mutatable_files():
    m = SourceFileMutationData(path=path)
    m.load()
    for name, code in m.exit_code_by_key.items():
        out.append(dict(name=name, status=status_by_exit_code[code], diff=get_diff_for_mutant(name, path=path)))
json.dump(out, sys.stdout)
"""


def collect(workdir: Path) -> list[dict]:
    """Every mutant of the run in ``workdir`` with its status and diff (read with mutmut's own functions)."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        [sys.executable, "-c", _DUMP], cwd=workdir, capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-5000:])
        raise SystemExit("could not read the mutmut results")
    mutants = json.loads(proc.stdout)
    for m in mutants:
        m["module"], m["function"] = _split(m["name"])
        m["diff"] = m["diff"].strip("\n")
        m["before"], m["after"] = _changed_lines(m["diff"])
    return mutants


def report(mutants: list[dict], timing: dict | None) -> tuple[str, dict, bool]:
    equivalent, killed_by = load_explanations()
    per_module: dict[str, Counter] = {}
    rows = []
    status_by_key: dict[tuple, set[str]] = {}
    for m in mutants:
        c = per_module.setdefault(m["module"], Counter())
        c[m["status"]] += 1
        if "before" not in m:
            continue
        key = (m["module"], m["function"], m["before"], m["after"])
        status_by_key.setdefault(key, set()).add(m["status"])
        if m["status"] == "not checked":  # a partial run: reported in the counts, not as a survivor
            continue
        if m["status"] in ("killed", "timeout"):  # a mutant that hangs the tests is caught by them
            if key in killed_by:
                m["killed_by"] = killed_by[key]
            continue
        if key in equivalent and m["status"] == "survived":
            m["explanation"] = equivalent[key]
            c["explained"] += 1
        else:
            m["explanation"] = None
            c["unexplained"] += 1
        rows.append(m)
    failing = [m for m in rows if m["explanation"] is None and m["module"] in CORE]
    unchecked = [m for m in mutants if m["status"] == "not checked" and m["module"] in CORE]
    # An entry that matches no mutant is stale (its line changed or went): it explains nothing and must go. An
    # [[equivalent]] entry whose mutants are all killed is wrong (the tests tell the mutant apart).
    stale = [f"[[equivalent]] {k}: matches no mutant" for k in equivalent if k not in status_by_key]
    stale += [f"[[killed]] {k}: matches no mutant" for k in killed_by if k not in status_by_key]
    stale += [
        f"[[equivalent]] {k}: every matching mutant is killed, so it is not equivalent"
        for k in equivalent
        if k in status_by_key and status_by_key[k] <= {"killed", "timeout"}
    ]
    complete = [mod for mod in sorted(per_module) if not per_module[mod]["not checked"]]
    lines = ["# Mutation testing: survivor report", ""]
    if unchecked:
        lines += [
            f"**PARTIAL RUN**: {len(unchecked)} mutant(s) not checked. Complete modules: "
            + (", ".join(f"`{mod}`" for mod in complete) or "none")
            + ".",
            "",
        ]
    lines.append(
        "Generated by `benchmarks/mutation_report.py` (`tox -e mutation`): mutmut over "
        + ", ".join(f"`{p}`" for p in MODULES)
        + ", each mutant run against the non-slow tests of "
        + ", ".join(f"`{t}`" for t in TESTS)
        + ". Explanations of equivalent mutants: `benchmarks/mutation_equivalent.toml`."
    )
    if timing:
        parts = timing["parts"]
        total = sum(p["seconds"] for p in parts)
        lines.append(
            f"\nRun time: {total / 60:.1f} min in {len(parts)} part(s) ("
            + "; ".join(f"{' '.join(p['names']) or 'all'}: {p['seconds'] / 60:.1f} min" for p in parts)
            + f"), on {timing['machine']}, {parts[-1]['max_children']} mutmut child(ren) at niceness "
            + f"{parts[-1].get('nice', 'unknown')}."
        )
    lines += [
        "",
        "| module | mutants | killed | timeout | survived | explained | unexplained | no tests | not checked |",
    ]
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for module in sorted(per_module):
        c = per_module[module]
        lines.append(
            f"| `{module}` | {sum(v for k, v in c.items() if k not in ('explained', 'unexplained'))} | {c['killed']} "
            f"| {c['timeout']} | {c['survived']} | {c['explained']} | {c['unexplained']} | {c['no tests']} "
            f"| {c['not checked']} |"
        )
    lines += [
        "",
        f"All modules: {len(failing)} unexplained survivor(s), {len(unchecked)} mutant(s) not checked, "
        f"{len(stale)} stale entr(y/ies) in `benchmarks/mutation_equivalent.toml`.",
        "",
        "A survivor is explained when `benchmarks/mutation_equivalent.toml` has an `[[equivalent]]` entry for it "
        "(module, function, original and mutated line) saying why no accepted input can tell it apart. "
        "Timeouts count as killed (a mutant that hangs the tests is caught by them).",
        "",
    ]
    if stale:
        lines += ["## Stale entries (fail the run)", ""] + [f"- {e}" for e in stale] + [""]
    was = [m for m in mutants if m.get("killed_by")]
    if was:
        lines += ["## Former survivors, now killed", ""]
        for m in was:
            lines.append(
                f"- `{m['module']}.{m['function']}`: `{m['before']}` -> `{m['after']}`: killed by {m['killed_by']}"
            )
        lines.append("")
    lines += ["## Survivors", ""]
    for m in sorted(rows, key=lambda m: (m["module"], m["function"], m["name"])):
        verdict = f"explained: {m['explanation']}" if m["explanation"] else f"**UNEXPLAINED** ({m['status']})"
        lines += [
            f"### `{m['module']}.{m['function']}` ({m['name']})",
            "",
            verdict,
            "",
            "```diff",
            m["diff"],
            "```",
            "",
        ]
    summary = {
        "modules": {k: dict(v) for k, v in sorted(per_module.items())},
        "unexplained": len(failing),
        "not_checked": len(unchecked),
        "stale_entries": stale,
        "complete_modules": complete,
        "seconds": sum(p["seconds"] for p in timing["parts"]) if timing else None,
        "timing": timing,
        "survivors": [
            {k: m.get(k) for k in ("name", "module", "function", "status", "before", "after", "explanation")}
            for m in rows
        ],
        "former_survivors_killed": [
            {k: m.get(k) for k in ("module", "function", "before", "after", "killed_by")} for m in was
        ],
    }
    return "\n".join(lines), summary, not failing and not unchecked and not stale


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="scratch folder for the copy and mutants/ (default: a temp dir)")
    parser.add_argument("--report-only", action="store_true", help="only report on the run already in --workdir")
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS / "mutation", help="report path without suffix")
    parser.add_argument("--seconds", type=float, help="with --report-only: the wall time of the run, for the report")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="run only the mutants of NAMES (globs) not checked yet in --workdir (after an interrupted part)",
    )
    parser.add_argument("--rerun", type=Path, help="a file of mutant names (one a line) to run again")
    parser.add_argument("names", nargs="*", help="mutant names or globs to run (default: all)")
    args = parser.parse_args(argv)
    if args.report_only:
        if args.workdir is None:
            parser.error("--report-only needs --workdir")
        workdir = args.workdir
    else:
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="certssbd-mutation-"))
        workdir.mkdir(parents=True, exist_ok=True)
        if not (workdir / "mutants").exists():
            prepare(workdir)
        names = list(args.names)
        if args.resume:
            patterns = names or ["*"]
            names = [
                m["name"]
                for m in collect(workdir)
                if m["status"] == "not checked" and any(fnmatch.fnmatchcase(m["name"], p) for p in patterns)
            ]
        if args.rerun:
            names += args.rerun.read_text().split()
        if (args.resume or args.rerun) and not names:
            print("nothing to run")
        else:
            seconds = run(workdir, args.max_children, names)
            label = list(args.names) + (["(resumed)"] if args.resume else [])
            label += [f"(rerun of {len(names)} mutants)"] if args.rerun else []
            record_part(workdir, label, seconds, args.max_children)
    timing = load_timing(workdir)
    if args.seconds is not None:
        timing = {"machine": machine(), "parts": [{"names": [], "seconds": args.seconds, "max_children": 0}]}
    mutants = collect(workdir)
    text, summary, ok = report(mutants, timing)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".md").write_text(text + "\n")
    args.output.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    print(
        f"wrote {args.output.with_suffix('.md')}: {summary['unexplained']} unexplained, {summary['not_checked']} not "
        f"checked, {len(summary['stale_entries'])} stale entries"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
