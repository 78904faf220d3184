"""The package's layout (issue 12): one module per step, layers that only import downwards, no import loop, nothing
from the source tree's benchmarks/tests/examples in the installed package, and every name the docs cite resolves."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "art_certssbd"

#: The ART shell: the estimator classes and what only they use. Everything else in the package sits below it (the
#: method's steps, the official loaders) or above it (the applications built on the estimators).
SHELL = {"estimator", "_shell", "_art", "_persistence"}
APPLICATIONS = {"__init__", "__main__", "defence", "experiment", "cli", "runs"}
#: Source-tree folders and test helpers that must never be imported by the installed package.
NOT_SHIPPED = {"certssbd_bench", "benchmarks", "tests", "examples", "helpers", "simulation", "cli_files", "conftest"}


def _modules() -> dict[str, Path]:
    """Dotted name (``"official.files"``) -> file, for every module of the package."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1]) if parts[-1] == "__init__" and len(parts) > 1 else ".".join(parts)
        out[name] = path
    return out


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """Package-relative names of the ``art_certssbd`` modules ``path`` imports (and every other top-level name)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "art_certssbd":  # from art_certssbd import x: x may be a module
                found |= {alias.name for alias in node.names}
            elif node.module.startswith("art_certssbd."):
                found.add(node.module.removeprefix("art_certssbd."))
            else:
                found.add("!" + node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name
                found.add(name.removeprefix("art_certssbd.") if name.startswith("art_certssbd.") else "!" + name)
    return found


def _layer(module: str) -> str:
    head = module.split(".")[0]
    if head in SHELL:
        return "shell"
    if head in APPLICATIONS:
        return "application"
    return "core"


def test_no_core_module_imports_the_shell_or_an_application():
    """The method's steps (noise .. memory, the official loaders, datasets) never import the estimator: only the shell
    chains them, and the applications (CLI, experiment, Trainer, deprecated aliases) build on the shell."""
    offenders = {}
    for module, path in _modules().items():
        if _layer(module) != "core":
            continue
        bad = {m for m in _imports(path, top_level_only=False) if not m.startswith("!") and _layer(m) != "core"}
        if bad:
            offenders[module] = sorted(bad)
    assert offenders == {}


def test_the_package_imports_nothing_from_the_source_tree():
    """Nothing in the package reads benchmarks/, tests/ or examples/: the benchmarks have their own entry point
    (``python benchmarks/run.py``), ``certssbd benchmark`` only points to it."""
    offenders = {}
    for module, path in _modules().items():
        bad = {m[1:] for m in _imports(path, top_level_only=False) if m.startswith("!")} & NOT_SHIPPED
        if bad:
            offenders[module] = sorted(bad)
    assert offenders == {}
    assert "certssbd_bench" not in (PACKAGE / "cli.py").read_text()
    assert not (PACKAGE / "bench").exists(), "benchmark harnesses live in benchmarks/certssbd_bench"


def test_no_import_loop_at_module_level():
    """Module-level imports between the package's modules form no cycle (a loop worked only by import order)."""
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        targets = set()
        for name in _imports(path, top_level_only=True):
            if name.startswith("!"):
                continue
            while name and name not in modules:  # "official.files.x" -> the module "official.files"
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets - {"__init__"}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt]
                pytest.fail(f"import loop: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


def _resolve(dotted: str) -> object:
    """Import ``art_certssbd.a.b.c`` as far as it is a module, then getattr the rest."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def _documented_names() -> set[str]:
    names = set()
    api = (ROOT / "docs" / "api.rst").read_text()
    names |= set(re.findall(r"^\.\. auto(?:class|function|module):: (art_certssbd[\w.]*)", api, re.M))
    names |= set(re.findall(r":(?:mod|func|class|meth|data):`~?(art_certssbd[\w.]*)`", api))
    for match in re.finditer(r"^\.\. autoclass:: (art_certssbd[\w.]*)\n   :members: ([\w,\s]+?)\n\n", api, re.M):
        names |= {f"{match.group(1)}.{m.strip()}" for m in match.group(2).split(",") if m.strip()}
    method = (ROOT / "docs" / "method.md").read_text()
    modules = {name.split(".")[0] for name in _modules()}
    for block in re.findall(r"```\n(.*?)```", method, re.S):  # the pseudocode's right-hand column
        for qualified in re.findall(r"\b([A-Za-z_]\w*)\.([A-Za-z_]\w*)\b", block):
            if qualified[0] in modules:
                names.add("art_certssbd." + ".".join(qualified))
            elif qualified[0] in {"CertSSBDEstimator", "RABEstimator"}:
                names.add("art_certssbd." + ".".join(qualified))
    for qualified in re.findall(r"`((?:art_certssbd\.)?[a-z_]+\.[A-Za-z_]\w*)`", method):
        head = qualified.removeprefix("art_certssbd.").split(".")[0]
        if head in modules:
            names.add("art_certssbd." + qualified.removeprefix("art_certssbd."))
    return names


def test_every_name_the_docs_cite_resolves():
    names = _documented_names()
    assert len(names) > 40, sorted(names)  # the parser found the pseudocode table and the API page
    assert "art_certssbd.noise.fixed_test_noise" in names and "art_certssbd.official.files" in names
    missing = []
    for name in sorted(names):
        try:
            _resolve(name)
        except (AttributeError, ModuleNotFoundError):
            missing.append(name)
    assert missing == []


def test_every_module_has_a_test_file():
    """One test file per module of the method (``test_<module>.py``), so a change to a step has its tests beside it."""
    tests = {p.stem.removeprefix("test_") for p in (ROOT / "tests").glob("test_*.py")}
    steps = ["noise", "sigma", "training", "ensemble", "pipeline", "checkpoint", "stats", "certification"]
    steps += ["sequential", "memory", "result", "report", "attacks", "models", "dpa", "official_files"]
    steps += ["official_evaluation", "estimator", "defence"]
    assert [s for s in steps if s not in tests] == []
