"""The official Cert-SSB MNIST models under the official evaluation and ours (see ``benchmarks/README.md``).

Usage (the checkpoints live outside the repository, e.g. extracted from NcepuQiaoTing/Cert-SSB's history)::

    flock /tmp/certssbd-heavy.lock python benchmarks/official_mnist.py \\
        --checkpoints ~/.cache/art-certssbd/official/cert-ssb/model/mnist/onepixel/sigma0.12 \\
        --sigma-file ~/.cache/art-certssbd/official/cert-ssb/sigma/mnist/mnist_onepixel_sigma0.12.pth

Writes ``benchmarks/results/official_mnist_onepixel.{json,md}`` (``--output`` to change the directory).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from art_certssbd.bench.official import render_official, run_official_benchmark
from art_certssbd.report import write_json, write_text

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoints", type=Path, required=True, help="folder with smoothed_{k}.model")
    parser.add_argument("--sigma-file", type=Path, required=True, help="mnist_onepixel_sigma0.12.pth")
    parser.add_argument("--data-dir", type=Path, default=None, help="MNIST IDX folder (default: the cache)")
    parser.add_argument("--nb-models", type=int, default=None, help="first N checkpoints (default: all)")
    parser.add_argument("--output", type=Path, default=HERE / "results")
    parser.add_argument("--name", default="official_mnist_onepixel", help="file name stem of the results")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        results = run_official_benchmark(
            args.checkpoints.expanduser(),
            args.sigma_file.expanduser(),
            data_dir=args.data_dir,
            nb_models=args.nb_models,
            verbose=args.verbose,
        )
    except (ValueError, FileNotFoundError) as err:
        parser.exit(2, f"official_mnist: error: {err}\n")
    results["command"] = "python benchmarks/official_mnist.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = render_official(results)
    write_json(args.output / f"{args.name}.json", results)
    write_text(args.output / f"{args.name}.md", text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
