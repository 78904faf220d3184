"""One's own experiment from the command line: ``certssbd fit``, ``certssbd certify DIR``, ``certssbd report DIR...``.

Each command is one public function taking the resolved options (see :mod:`art_certssbd.runs.options`):
:func:`run_fit`, :func:`run_certify`, :func:`run_report`. User mistakes raise :class:`UsageError`.
"""

from art_certssbd.runs.certify import run_certify
from art_certssbd.runs.compare import run_report
from art_certssbd.runs.config import resolve
from art_certssbd.runs.fit import run_fit
from art_certssbd.runs.options import UsageError
from art_certssbd.runs.outputs import runs_dir

__all__ = ["UsageError", "resolve", "run_certify", "run_fit", "run_report", "runs_dir"]
