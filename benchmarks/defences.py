"""Cert-SSBD and RAB beside ART's own defences on the same poisoned MNIST data (same as
``python benchmarks/run.py defences``).

Usage, from the repository root (MNIST in ``~/.cache/art-certssbd/mnist``, see ``README.md``)::

    flock /tmp/certssbd-heavy.lock python benchmarks/defences.py --config benchmarks/configs/defences-cpu.json

writes ``./certssbd-benchmarks/defences-cpu.{json,md,png}``
(``--output benchmarks/results --force`` replaces the committed results).
``configs/defences-paper-gpu.json`` is the paper-size preset (full MNIST, M = 1000; for a GPU).
Extra arguments (``--output``, ``--data-dir``, ``--quiet``) are passed on.
"""

from __future__ import annotations

import sys

from certssbd_bench.command import main  # benchmarks/ is sys.path[0] when this file runs as a script

if __name__ == "__main__":
    sys.exit(main(["defences", *sys.argv[1:]]))
