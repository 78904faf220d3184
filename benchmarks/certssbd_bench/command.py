"""What ``certssbd benchmark {mnist,defences,official}`` runs, once the CLI has found this folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from art_certssbd.report import write_json, write_text

SUFFIXES = (".json", ".md", ".png")


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
    """``certssbd benchmark ...`` (arguments parsed by :mod:`art_certssbd.cli`): validate everything, run, print the
    Markdown report, write the result files under ``args.output``."""
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
