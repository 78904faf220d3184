"""The ``certssbd`` command (also ``python -m art_certssbd``)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from art_certssbd import stats
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
    demo.add_argument("--bound", choices=stats.BOUNDS, default="clopper-pearson", help=options.BOUND_HELP)
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


#: What ``certssbd benchmark`` says: the benchmarks are not installed, they run from the repository's own entry point.
BENCHMARK_MOVED = (
    "the benchmarks are not part of the installed package: run them from the root of a clone of the repository with "
    "'python benchmarks/run.py {mnist,defences,official} ...' (see benchmarks/README.md)"
)


def _add_benchmark_parser(sub) -> None:
    """``certssbd benchmark ...``: kept only to point to ``python benchmarks/run.py <name> ...`` (exit code 2)."""
    bench = sub.add_parser(
        "benchmark", help="moved: run 'python benchmarks/run.py <name> ...' from a clone", add_help=False
    )
    bench.add_argument("rest", nargs=argparse.REMAINDER)


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
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["benchmark"]:  # whatever follows (--help included): the benchmarks have their own entry point
        parser.exit(2, f"certssbd benchmark: error: {BENCHMARK_MOVED}\n")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "fit" and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)  # a kill ends the fit like Ctrl-C: resumable, with a message
    try:
        if args.command == "demo":
            run_demo(args)
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
