"""The declared dependency floors are the ones ``tox -e lowest`` installs, and CI runs both floor envs."""

from __future__ import annotations

import configparser

from conftest import ROOT
from packaging.requirements import Requirement
from packaging.version import Version


def _install_requires() -> dict[str, Requirement]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = [line.strip() for line in cfg["options"]["install_requires"].splitlines() if line.strip()]
    return {Requirement(line).name: Requirement(line) for line in lines}


def _pins(name: str) -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints" / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[req.name] = Version(spec.version)
    return pins


def test_every_dependency_has_a_floor_and_lowest_pins_it():
    requires, lowest = _install_requires(), _pins("lowest.txt")
    assert set(lowest) == set(requires)
    for name, req in requires.items():
        floors = [Version(s.version) for s in req.specifier if s.operator == ">="]
        assert len(floors) == 1, f"{name} declares no floor (>=): {req}"
        assert lowest[name] in req.specifier, (name, lowest[name], req)
        if name != "torch":  # the one CPU wheel this project can install (constraints/lowest.txt says why)
            assert lowest[name] == floors[0], f"constraints/lowest.txt pins {name}=={lowest[name]}, floor {floors[0]}"


def test_the_cpu_torch_pin_satisfies_the_declared_range():
    assert _pins("torch-cpu.txt")["torch"] in _install_requires()["torch"].specifier


def test_ci_runs_the_readme_test_command_then_both_floor_envs():
    run = "\n".join(line for line in (ROOT / ".ci" / "run").read_text().splitlines() if not line.startswith("#"))
    assert "tox -e py311" in run and "tox -e lowest" in run and "tox -e newest" in run
    assert run.index("tox -e py311") < run.index("tox -e lowest")
    tox = (ROOT / "tox.ini").read_text()
    assert "[testenv:lowest]" in tox and "constraints/lowest.txt" in tox and "[testenv:newest]" in tox
