"""The root ``conftest.py`` of the mutation run only (``benchmarks/mutation_report.py`` copies it into the scratch
copy; the test suite never loads it). It changes how long a mutant takes, never whether it is killed:

- the tests run fastest first (their durations from mutmut's stats pass, ``mutmut-stats.json``), so a mutant that a
  quick test kills is not first run through a slow one (mutmut runs pytest with ``-x``);
- each test gets ``10 s + 10 x`` its recorded duration of CPU time; a test past that means the mutant hangs it (a
  loop that no longer ends), and the run exits with mutmut's timeout code 36, so the mutant is reported as
  ``timeout``, as it would be after mutmut's own limit (15 x the duration of *all* its tests, 2 x that in CPU time,
  up to half an hour for a mutant of the memory).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

TIMEOUT_EXIT_CODE = 36  # mutmut.stats.status_by_exit_code: "timeout"


def _durations() -> dict[str, float]:
    try:
        return json.loads(Path("mutmut-stats.json").read_text())["duration_by_test"]
    except (OSError, ValueError, KeyError):
        return {}


DURATIONS = _durations()


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: DURATIONS.get(item.nodeid, 0.0))


def _hung(signum, frame):
    os._exit(TIMEOUT_EXIT_CODE)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not DURATIONS:  # the stats pass itself: no limit
        return (yield)
    previous = signal.signal(signal.SIGPROF, _hung)
    signal.setitimer(signal.ITIMER_PROF, 10.0 + 10.0 * DURATIONS.get(item.nodeid, 10.0))
    try:
        return (yield)
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
