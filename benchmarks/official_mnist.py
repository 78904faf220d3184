"""The official Cert-SSB MNIST models under the official evaluation and ours (same as
``python benchmarks/run.py official``; see ``benchmarks/README.md``).

Usage, from the repository root (the checkpoints live outside the repository, e.g. extracted from
NcepuQiaoTing/Cert-SSB's history)::

    flock /tmp/certssbd-heavy.lock python benchmarks/official_mnist.py \\
        --checkpoints ~/.cache/art-certssbd/official/cert-ssb/model/mnist/onepixel/sigma0.12 \\
        --sigma-file ~/.cache/art-certssbd/official/cert-ssb/sigma/mnist/mnist_onepixel_sigma0.12.pth

writes ``./certssbd-benchmarks/official_mnist_onepixel.{json,md}``
(``--output benchmarks/results --force`` replaces the committed results). Extra arguments (``--output``, ``--name``,
``--nb-models``, ``--data-dir``, ``--quiet``) are passed on.
"""

from __future__ import annotations

import sys

from certssbd_bench.command import main  # benchmarks/ is sys.path[0] when this file runs as a script

if __name__ == "__main__":
    sys.exit(main(["official", *sys.argv[1:]]))
