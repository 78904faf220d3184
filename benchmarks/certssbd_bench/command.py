"""``python benchmarks/run.py {mnist,defences,official} ...``: the benchmark harnesses' own command line.

The benchmarks are not part of the installed package: they run from the repository's ``benchmarks/`` folder (this
command), never through the installed ``certssbd`` command.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from art_certssbd.report import write_json, write_text
from art_certssbd.runs.parsers import positive_int

SUFFIXES = (".json", ".md", ".png")
#: The command that runs a benchmark, from the repository root (what the results record and their reports print).
PROG = "python benchmarks/run.py"
KINDS = ("mnist", "defences", "official")
#: The default output folder, in the working directory (never the source tree's results).
OUTPUT = "certssbd-benchmarks"
_OLD_PROG = "certssbd benchmark"  # results written before the benchmarks had their own entry point record this


def reproduce(command: str) -> str:
    """The command that reproduces a result: ``command`` as recorded, an old ``certssbd benchmark KIND ...`` (the
    installed CLI ran the benchmarks until 0.1) written in today's form, ``python benchmarks/run.py KIND ...``."""
    return PROG + command[len(_OLD_PROG) :] if command.startswith(_OLD_PROG + " ") else command


class _Parser(argparse.ArgumentParser):
    """argparse with short errors: the one line that matters, then a one-line usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\nusage: {self.prog} ... (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python benchmarks/run.py {mnist,defences,official} ...`` (exposed for tests)."""
    parser = _Parser(prog=PROG, description="Run a benchmark and write its JSON/Markdown/PNG results.")
    kinds = parser.add_subparsers(dest="benchmark", required=True)
    mnist = kinds.add_parser("mnist", help="MNIST 1 vs 0: RAB vs Cert-SSBD vs undefended, from a JSON config")
    mnist.add_argument("--config", type=Path, required=True, help="e.g. benchmarks/configs/mnist-cpu.json")
    defences = kinds.add_parser("defences", help="Cert-SSBD and RAB beside ART's defences on the same poisoned data")
    defences.add_argument("--config", type=Path, required=True, help="e.g. benchmarks/configs/defences-cpu.json")
    official = kinds.add_parser("official", help="the official Cert-SSB MNIST checkpoints: official eval vs ours")
    official.add_argument("--checkpoints", type=Path, required=True, help="folder with smoothed_{k}.model")
    official.add_argument("--sigma-file", type=Path, required=True, help="e.g. mnist_onepixel_sigma0.12.pth")
    official.add_argument("--nb-models", type=positive_int, default=None, help="first N checkpoints (default all)")
    official.add_argument("--name", default="official_mnist_onepixel", help="file name stem of the results")
    for kind in (mnist, defences, official):
        kind.add_argument("--data-dir", type=Path, default=None, help="MNIST IDX folder (default: the cache)")
        kind.add_argument(
            "--output",
            type=Path,
            default=Path(OUTPUT),
            help=f"directory for the results (default: ./{OUTPUT}, in the working directory; the committed results "
            "in benchmarks/results are replaced only when named here, with --force)",
        )
        kind.add_argument("--force", action="store_true", help="overwrite results of the same name already in --output")
        kind.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/run.py KIND ...``: parse, run; exit code 2 with a one-line message on a bad input."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args.output = args.output.expanduser()
    try:
        run(args, " ".join([PROG, *argv]))
    except (ValueError, FileNotFoundError, NotADirectoryError) as err:
        parser.exit(2, f"{PROG} {args.benchmark}: error: {err}\n")
    except KeyboardInterrupt:
        parser.exit(130, f"{PROG} {args.benchmark}: interrupted\n")
    return 0


def check_overwrite(out: Path, name: str, force: bool) -> None:
    """Refuse to overwrite the results ``out/name.{json,md,png}`` of an earlier run unless ``force`` (``--force``):
    a config that keeps its ``name`` would otherwise replace them silently (committed results, for example)."""
    existing = [str(out / f"{name}{suffix}") for suffix in SUFFIXES if (out / f"{name}{suffix}").exists()]
    if existing and not force:
        raise ValueError(
            f"--output {str(out)!r} already holds results named {name!r} ({', '.join(existing)}): pass --force to "
            "overwrite them, or choose another --output (or another name)"
        )


def run(args: argparse.Namespace, command: str) -> dict:
    """One benchmark (arguments parsed by :func:`build_parser`; ``command`` is recorded in the results): validate
    everything, run, print the Markdown report, write the result files under ``args.output``."""
    out = args.output
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output {str(out)!r} is a file, not a directory")
    if args.benchmark == "official":
        from certssbd_bench.official import render_official, run_official_benchmark

        check_overwrite(out, args.name, args.force)
        results = run_official_benchmark(
            args.checkpoints.expanduser(),
            args.sigma_file.expanduser(),
            data_dir=args.data_dir,
            nb_models=args.nb_models,
            verbose=not args.quiet,
        )
        results["command"] = command
        text = render_official(results)
        write_json(out / f"{args.name}.json", results)
        write_text(out / f"{args.name}.md", text + "\n")
        sys.stdout.write(text + "\n")
        return results
    if args.benchmark == "defences":
        from certssbd_bench.defences import run_defences_cli

        return run_defences_cli(args, command)
    from certssbd_bench.mnist import load_benchmark_config, run_mnist_benchmark
    from certssbd_bench.render import plot_mnist, render_mnist

    config = load_benchmark_config(args.config)  # all validation before any compute
    check_overwrite(out, config.name, args.force)

    def save(partial: dict) -> None:
        partial["command"] = command
        write_json(out / f"{config.name}.json", partial)

    results = run_mnist_benchmark(config, data_dir=args.data_dir, verbose=not args.quiet, on_run=save)
    save(results)
    text = render_mnist(results)
    write_text(out / f"{config.name}.md", text + "\n")
    plot = plot_mnist(results, out / f"{config.name}.png")
    sys.stdout.write(text + "\n")
    written = [out / f"{config.name}.json", out / f"{config.name}.md"] + ([plot] if plot else [])
    sys.stdout.write("wrote " + ", ".join(str(p) for p in written) + "\n")
    return results
