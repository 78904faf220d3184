"""The ``certssbd`` command (also ``python -m art_certssbd``)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from art_certssbd._version import __version__
from art_certssbd.runs import config, options

logger = logging.getLogger("art_certssbd")


_positive_int, _non_negative_int = options.positive_int, options.non_negative_int
_positive_float, _probability, _rate, _radii = options.positive_float, options.probability, options.rate, options.radii


def _output_dir(text: str) -> Path:
    """A directory that exists or can be created (checked before the run, not after it)."""
    path = ancestor = Path(text)
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise argparse.ArgumentTypeError(f"expected a directory, but {str(ancestor)!r} is a file")
    if ancestor.exists() and not os.access(ancestor, os.W_OK):
        raise argparse.ArgumentTypeError(f"directory {str(ancestor)!r} is not writable")
    return path


class _Parser(argparse.ArgumentParser):
    """argparse with short errors: the one line that matters, then a one-line usage (not the full option dump)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\nusage: {self.prog} ... (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    from art_certssbd.experiment import TRIGGERS

    parser = _Parser(prog="certssbd", description="Cert-SSBD certified backdoor defence for ART.")
    parser.add_argument("--version", action="version", version=f"art-certssbd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="poison scikit-learn digits, train RAB and Cert-SSBD, certify, print a table")
    demo.add_argument("--output", type=_output_dir, default=Path("certssbd-demo"), help="directory for the results")
    # Defaults chosen so that the backdoor works on 8x8 digits (undefended attack success rate about 0.93): the
    # paper's one-pixel trigger at norm 1 is too weak there (ASR 0.14); four pixels at norm 2 (each +1) on 6 %
    # (seed 0: undefended ASR 0.93, RAB 0.14, Cert-SSBD 0.10; at 10 % the defences let 0.36 / 0.32 through, at 5 % the
    # undefended ASR falls to 0.76).
    demo.add_argument("--trigger", choices=tuple(TRIGGERS), default="four-pixel")
    demo.add_argument("--delta", type=_positive_float, default=2.0, help="L2 norm of the trigger")
    demo.add_argument("--poison-rate", type=_rate, default=0.06)
    demo.add_argument("--nb-models", type=_positive_int, default=32, help="ensemble size M")
    demo.add_argument("--epochs", type=_positive_int, default=5, help="epochs per member")
    demo.add_argument("--scale", type=_positive_float, default=0.25, help="sigma0")
    demo.add_argument("--alpha", type=_probability, default=0.01)
    demo.add_argument("--bound", choices=("clopper-pearson", "hoeffding"), default="clopper-pearson")
    demo.add_argument("--sigma-steps", type=_positive_int, default=10)
    demo.add_argument("--radii", type=_radii, default=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8))
    demo.add_argument("--seed", type=_non_negative_int, default=0)
    demo.add_argument("--device", choices=("cpu", "gpu"), default="gpu", help="gpu uses CUDA when present")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_run_parsers(sub)
    _add_benchmark_parser(sub)
    return parser


_RUN_HELP = {
    "fit": (
        "train a RAB or Cert-SSBD ensemble on a data set (optionally poisoning it first) and save it",
        "Trains and saves the ensemble in --output (default: a new folder under $ART_CERTSSBD_RUNS or "
        "~/.local/share/art-certssbd/runs). While it trains, progress lives in OUTPUT.partial/: after an "
        "interruption, run the same command again to resume. Example: certssbd fit --data mnist:~/mnist "
        "--classes 1,0 --poison one-pixel --method cert-ssbd --nb-models 100 --output runs/mnist-certssbd",
    ),
    "certify": (
        "certify a test split with a fitted ensemble (clean and triggered) and write per-input results",
        "Writes results.csv/.npz (prediction, both radii, sigma, p_A lower bound per input), summary.json/.md and "
        "plots to --output (default DIR/certify). Options not given are the fit's.",
    ),
    "report": (
        "compare several certify runs side by side: one table and one plot",
        "DIR is a certify output or a fit directory holding one (DIR/certify). Writes report.md/.json/.png to "
        "--output (default: under the runs directory, reports/) and prints the table.",
    ),
}


def _add_run_parsers(sub) -> None:
    """``certssbd fit``, ``certssbd certify DIR``, ``certssbd report DIR...`` (options in runs.options)."""
    for command, (summary, description) in _RUN_HELP.items():
        parser = sub.add_parser(command, help=summary, description=f"{summary[0].upper()}{summary[1:]}. {description}")
        if command == "certify":
            parser.add_argument(
                "run", nargs="?", type=options.path, default=None, metavar="DIR", help="the fit directory"
            )
        elif command == "report":
            parser.add_argument(
                "runs",
                nargs="*",
                type=options.path,
                default=None,
                metavar="DIR",
                help="certify (or fit) directories",
            )
        options.add_options(parser, command)


def run_command(args: argparse.Namespace, argv: list[str]) -> None:
    """``certssbd fit`` / ``certify`` / ``report``: resolve the options (defaults, --config, flags), then run."""
    from art_certssbd.runs import run_certify, run_fit, run_report

    values = config.resolve(args.command, args)
    if not values["quiet"]:
        logging.getLogger("art_certssbd").setLevel(logging.INFO)
    command = "certssbd " + " ".join(argv)
    if args.command == "fit":
        sys.stdout.write(f"fitted: {run_fit(values, command)}\n")
    elif args.command == "certify":
        output = run_certify(values, command)
        sys.stdout.write((output / "summary.md").read_text() + f"\nwrote {output}\n")
    else:
        output, text = run_report(values, command)
        sys.stdout.write(text + f"\n\nwrote {output}\n")


#: ``certssbd benchmark``'s default output folder, in the working directory (never the source tree's results).
BENCHMARK_OUTPUT = "certssbd-benchmarks"


def _add_benchmark_parser(sub) -> None:
    """``certssbd benchmark {mnist,defences,official} ...``: the harnesses live in the source tree's ``benchmarks/``
    (not installed with the package); ``--benchmarks-dir`` points to it (default: ``./benchmarks``)."""
    bench = sub.add_parser(
        "benchmark",
        help="run a benchmark of the source tree's benchmarks/ folder and write JSON/Markdown/PNG results",
    )
    kinds = bench.add_subparsers(dest="benchmark", required=True)
    mnist = kinds.add_parser("mnist", help="MNIST 1 vs 0: RAB vs Cert-SSBD vs undefended, from a JSON config")
    mnist.add_argument("--config", type=Path, required=True, help="e.g. benchmarks/configs/mnist-cpu.json")
    defences = kinds.add_parser("defences", help="Cert-SSBD and RAB beside ART's defences on the same poisoned data")
    defences.add_argument("--config", type=Path, required=True, help="e.g. benchmarks/configs/defences-cpu.json")
    official = kinds.add_parser("official", help="the official Cert-SSB MNIST checkpoints: official eval vs ours")
    official.add_argument("--checkpoints", type=Path, required=True, help="folder with smoothed_{k}.model")
    official.add_argument("--sigma-file", type=Path, required=True, help="e.g. mnist_onepixel_sigma0.12.pth")
    official.add_argument("--nb-models", type=_positive_int, default=None, help="first N checkpoints (default all)")
    official.add_argument("--name", default="official_mnist_onepixel", help="file name stem of the results")
    for kind in (mnist, defences, official):
        kind.add_argument("--data-dir", type=Path, default=None, help="MNIST IDX folder (default: the cache)")
        kind.add_argument(
            "--output",
            type=Path,
            default=Path(BENCHMARK_OUTPUT),
            help=f"directory for the results (default: ./{BENCHMARK_OUTPUT}, in the working directory; the "
            "committed results in benchmarks/results are replaced only when named here, with --force)",
        )
        kind.add_argument("--force", action="store_true", help="overwrite results of the same name already in --output")
        kind.add_argument(
            "--benchmarks-dir",
            type=Path,
            default=Path("benchmarks"),
            metavar="BENCH",
            help="the repository's benchmarks/ folder, which holds the harness (default: ./benchmarks)",
        )
        kind.add_argument("--quiet", action="store_true", help="no progress output")


def run_benchmark(args: argparse.Namespace, argv: list[str]) -> dict:
    """``certssbd benchmark ...``: find the harness in the source tree's ``benchmarks/`` folder and run it there."""
    root = args.benchmarks_dir.expanduser().resolve()
    if not (root / "certssbd_bench" / "__init__.py").is_file():
        raise FileNotFoundError(
            f"--benchmarks-dir {str(root)!r} does not hold the benchmark harness (certssbd_bench/): the benchmarks "
            "live in the repository's benchmarks/ folder, not in the installed package. Run from the root of a clone "
            "of the repository, or pass --benchmarks-dir PATH/TO/benchmarks"
        )
    args.output = args.output.expanduser()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from certssbd_bench.command import run

    return run(args, "certssbd " + " ".join(argv))


def run_demo(args: argparse.Namespace) -> dict:
    """``certssbd demo``: the whole pipeline on the embedded digits data; prints the table, writes the files."""
    from art_certssbd.datasets import load_digits
    from art_certssbd.experiment import ExperimentConfig, run_experiment
    from art_certssbd.models import DigitsCNN
    from art_certssbd.report import plot_certified_accuracy, write_json, write_text

    config = ExperimentConfig(
        trigger=args.trigger,
        delta=args.delta,
        poison_rate=args.poison_rate,
        nb_models=args.nb_models,
        nb_epochs=args.epochs,
        scale=args.scale,
        alpha=args.alpha,
        bound=args.bound,
        sigma_steps=args.sigma_steps,
        radii=args.radii,
        random_state=args.seed,
        device_type=args.device,
    )
    data = load_digits(random_state=args.seed)
    results = run_experiment(data, lambda: DigitsCNN(10), 10, config, verbose=not args.quiet)
    results["dataset"] = "scikit-learn digits (1,797 8x8 images, 10 classes; stratified 75/25 split)"
    text = render(results)
    sys.stdout.write(text + "\n")
    out = args.output
    write_json(out / "results.json", results)
    write_text(out / "results.md", text + "\n")
    curves = {}
    for name in ("rab", "cert-ssbd"):
        for split, values in results["methods"][name]["certified_accuracy"].items():
            curves[f"{name} ({split})"] = values
    plot = plot_certified_accuracy(
        curves,
        config.radii,
        out / "certified_accuracy.png",
        title=f"digits, {config.trigger} trigger, M={config.nb_models}, sigma0={config.scale}",
    )
    written = [out / "results.json", out / "results.md"] + ([plot] if plot else [])
    sys.stdout.write("wrote " + ", ".join(str(p) for p in written) + "\n")
    return results


def render(results: dict) -> str:
    """The human-readable summary: headline figures and certified-accuracy tables."""
    from art_certssbd.report import markdown_table

    cfg, methods = results["config"], results["methods"]
    lines = [
        f"# Cert-SSBD demo: {cfg['trigger']} trigger (delta={cfg['delta']}), {results['nb_poisoned']} poisoned "
        f"training samples -> class {cfg['target']}; M={cfg['nb_models']}, sigma0={cfg['scale']}, "
        f"alpha={cfg['alpha']}, {cfg['bound']}",
        "",
        f"Threat model: the attacker adds the trigger to {cfg['poison_rate']:.0%} of the training images (drawn from "
        f"the other classes), relabels them {cfg['target']}, and adds the same trigger to test inputs. A trigger of "
        f"norm {cfg['delta']} is above the radii certified here: a low attack success rate of RAB/Cert-SSBD is "
        "measured, not certified.",
        "",
        "Abstentions count as errors in the accuracies and as failures of the attack in its success rate, so a low "
        "attack success rate is only a defence where the triggered inputs are also classified (accuracy on "
        "triggered inputs) rather than abstained on.",
        "",
        "| model | clean accuracy | abstains (clean) | accuracy on triggered inputs | abstains (triggered) | attack "
        "success rate |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, m in methods.items():
        lines.append(
            f"| {name} | {m['clean_accuracy']:.3f} | {m.get('abstain_rate', 0.0):.3f} | {m['triggered_accuracy']:.3f} "
            f"| {m.get('triggered_abstain_rate', 0.0):.3f} | {m['attack_success_rate']:.3f} |"
        )
    for key, label in (("certified_accuracy", "paper radius"), ("certified_accuracy_conservative", "conservative")):
        rows = {f"{name} {split}": v for name, m in methods.items() if key in m for split, v in m[key].items()}
        if rows:
            lines += ["", f"Certified accuracy ({label}): correct and certified at radius >= r", ""]
            lines.append(markdown_table(rows, cfg["radii"]))
    lines += ["", f"wall time {results['wall_time_s']:.1f} s"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``certssbd`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    if args.command == "fit" and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)  # a kill ends the fit like Ctrl-C: resumable, with a message
    try:
        if args.command == "demo":
            run_demo(args)
        elif args.command == "benchmark":
            run_benchmark(args, argv)
        else:
            run_command(args, argv)
    except (ValueError, FileNotFoundError, NotADirectoryError) as err:
        parser.exit(2, f"certssbd {args.command}: error: {err}\n")
    except KeyboardInterrupt:
        hint = " (run the same command again to resume the fit)" if args.command == "fit" else ""
        parser.exit(130, f"certssbd {args.command}: interrupted{hint}\n")
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
