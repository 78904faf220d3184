"""The root ``conftest.py`` of the mutation run only (``benchmarks/mutation_report.py`` copies it into the scratch
copy; the test suite never loads it). It changes how long a mutant takes, never whether it is killed:

- the tests run fastest first (their durations from mutmut's stats pass, ``mutmut-stats.json``), so a mutant that a
  quick test kills is not first run through a slow one (mutmut runs pytest with ``-x``);
- each test gets ``10 s + 10 x`` its recorded duration of CPU time (the soft ``RLIMIT_CPU`` lowered for the test and
  put back after it); a test past that means the mutant hangs it (a loop that no longer ends, or a huge
  allocation), the kernel ends the run with SIGXCPU, and mutmut reports the mutant as ``timeout``, as it would after
  its own limit, which is the same signal after 15 x the duration of *all* the mutant's tests, 2 x that in CPU time
  (up to half an hour for a mutant of the memory). A kernel limit, unlike a Python signal handler, also stops a hang
  inside a numpy or torch call.
"""

from __future__ import annotations

import json
import math
import resource
from pathlib import Path

import pytest


def _durations() -> dict[str, float]:
    try:
        return json.loads(Path("mutmut-stats.json").read_text())["duration_by_test"]
    except (OSError, ValueError, KeyError):
        return {}


DURATIONS = _durations()


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: DURATIONS.get(item.nodeid, 0.0))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not DURATIONS:  # the stats pass itself: no limit
        return (yield)
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = usage.ru_utime + usage.ru_stime
    limit = math.ceil(used + 10.0 + 10.0 * DURATIONS.get(item.nodeid, 10.0))
    if soft == resource.RLIM_INFINITY or limit < soft:
        resource.setrlimit(resource.RLIMIT_CPU, (limit, hard))
    try:
        return (yield)
    finally:
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
