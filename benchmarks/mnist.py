"""The MNIST 1-vs-0 benchmark: RAB vs Cert-SSBD vs undefended (same as ``certssbd benchmark mnist``).

Usage, from the repository root (MNIST in ``~/.cache/art-certssbd/mnist``, see ``docs/paper-setting.md``)::

    flock /tmp/certssbd-heavy.lock python benchmarks/mnist.py --config benchmarks/configs/mnist-cpu.json

writes ``./certssbd-benchmarks/mnist-cpu.{json,md,png}``
(``--output benchmarks/results --force`` replaces the committed results).
Any extra argument of ``certssbd benchmark mnist`` (``--output``, ``--data-dir``, ``--quiet``) is passed on.
"""

from __future__ import annotations

import sys
from pathlib import Path

from art_certssbd.cli import main

if __name__ == "__main__":
    here = str(Path(__file__).resolve().parent)
    sys.exit(main(["benchmark", "mnist", "--benchmarks-dir", here, *sys.argv[1:]]))
