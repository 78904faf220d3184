"""The MNIST 1-vs-0 benchmark: RAB vs Cert-SSBD vs undefended (same as ``python benchmarks/run.py mnist``).

Usage, from the repository root (MNIST in ``~/.cache/art-certssbd/mnist``, see ``docs/paper-setting.md``)::

    flock /tmp/certssbd-heavy.lock python benchmarks/mnist.py --config benchmarks/configs/mnist-cpu.json

writes ``./certssbd-benchmarks/mnist-cpu.{json,md,png}``
(``--output benchmarks/results --force`` replaces the committed results).
Any extra argument of ``python benchmarks/run.py mnist`` (``--output``, ``--data-dir``, ``--quiet``) is passed on.
"""

from __future__ import annotations

import sys

from certssbd_bench.command import main  # benchmarks/ is sys.path[0] when this file runs as a script

if __name__ == "__main__":
    sys.exit(main(["mnist", *sys.argv[1:]]))
