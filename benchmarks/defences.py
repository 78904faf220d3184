"""Cert-SSBD and RAB beside ART's own defences on the same poisoned MNIST data (same as
``certssbd benchmark defences``).

Usage, from the repository root (MNIST in ``~/.cache/art-certssbd/mnist``, see ``README.md``)::

    flock /tmp/certssbd-heavy.lock python benchmarks/defences.py --config benchmarks/configs/defences-cpu.json

writes ``./certssbd-benchmarks/defences-cpu.{json,md,png}``
(``--output benchmarks/results --force`` replaces the committed results).
``configs/defences-paper-gpu.json`` is the paper-size preset (full MNIST, M = 1000; for a GPU).
Extra arguments (``--output``, ``--data-dir``, ``--quiet``) are passed on.
"""

from __future__ import annotations

import sys
from pathlib import Path

from art_certssbd.cli import main

if __name__ == "__main__":
    here = str(Path(__file__).resolve().parent)
    sys.exit(main(["benchmark", "defences", "--benchmarks-dir", here, *sys.argv[1:]]))
