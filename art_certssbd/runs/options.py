"""The options of ``certssbd fit``, ``certify`` and ``report``: one table serves argparse and the TOML config file.

Every value reaches a run through :func:`resolve`, with this precedence: built-in default < top-level key of the
``--config`` file < key of its ``[fit]`` / ``[certify]`` / ``[report]`` table < command-line flag. Values from the
file go through the same parsers as flags, so a wrong value is refused the same way, naming the file and the key.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from art_certssbd import stats
from art_certssbd.datasets.spec import DATA_KINDS
from art_certssbd.runs.parsers import (
    budgets,
    channels,
    classes,
    data_spec,
    float_pair,
    image_size,
    key_values,
    names,
    non_negative_float,
    non_negative_int,
    path,
    positive_float,
    positive_int,
    probability,
    radii,
    rate,
)

COMMANDS = ("fit", "certify", "report")
METHODS = ("cert-ssbd", "rab")
TRIGGER_NAMES = ("none", "one-pixel", "four-pixel", "blending")
#: Help of ``--bound`` (``certssbd demo``, ``fit``, ``certify``), read from the table of bounds: every bound certifies a
#: fixed-size ensemble (``"anytime"`` more conservatively: it would also hold at any stopping time).
BOUND_HELP = "confidence bound on the top class's vote probability: " + "; ".join(
    f"{name}: {bound.description}" for name, bound in stats.BOUND_TABLE.items()
)


class UsageError(ValueError):
    """A wrong option value, missing file or mismatched run: the CLI exits with status 2 and this message."""


@dataclass(frozen=True)
class Option:
    """One option: its flag, parser (``None``: an on/off switch), help (one text, or one per command), commands,
    default and choices."""

    flag: str
    parse: Callable[[str], Any] | None
    help: str | dict[str, str]
    commands: tuple[str, ...]
    default: Any = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    negatable: bool = False  # a --x / --no-x pair
    repeat: bool = False  # may be given several times (each value a tuple; the values are concatenated)

    @property
    def key(self) -> str:
        return self.flag[2:].replace("-", "_")

    def help_for(self, command: str) -> str:
        return self.help if isinstance(self.help, str) else self.help.get(command, self.help.get("*", ""))


F, C, R, FC = ("fit",), ("certify",), ("report",), ("fit", "certify")
_KINDS = "|".join(DATA_KINDS)
_MODELS = "mnist-cnn, digits-cnn, preact-resnet18, rab-cifar-resnet, resnet18"

OPTIONS: tuple[Option, ...] = (
    # data
    Option(
        "--data",
        data_spec,
        {
            "fit": f"data source, KIND one of {_KINDS}; the train split is used",
            "certify": f"data source, KIND one of {_KINDS}; see --split",
        },
        FC,
        metavar="KIND:PATH",
    ),
    Option(
        "--classes",
        classes,
        "classes to keep, by name or index, in label order (1,0: digit 1 -> label 0, digit 0 -> label 1); default all",
        FC,
        metavar="A,B,...",
    ),
    Option(
        "--limit", positive_int, "only the first N samples (after --classes), e.g. for a quick try", FC, metavar="N"
    ),
    Option("--image-size", image_size, "folder sources: images are resized to this size", FC, (32, 32), metavar="H,W"),
    Option(
        "--channels",
        channels,
        "folder sources: 1 (grey) or 3 (RGB); default: grey when every image is single-channel, else RGB",
        FC,
        metavar="1|3",
    ),
    Option("--split", str, "split of --data to certify", C, "test", ("test", "train")),
    # poisoning
    Option(
        "--poison",
        str,
        {
            "fit": "trigger to poison --rate of the training set with (none: use the data as they "
            "are, e.g. already poisoned)",
            "certify": "trigger for the triggered copy of the test set (none: clean only)",
        },
        FC,
        "none",
        TRIGGER_NAMES,
    ),
    Option("--rate", rate, "fraction of the training set to poison", F, 0.02),
    Option("--target", non_negative_int, "the attacker's target label (after --classes)", FC, 0),
    Option("--delta", positive_float, "L2 norm of the trigger", FC, 1.0),
    # method and model
    Option("--method", str, "the defence", F, "cert-ssbd", METHODS),
    Option(
        "--model",
        str,
        f"network: {_MODELS}, or module:Class or file.py:Class of your own; auto: mnist-cnn for "
        "1-channel images of 12 px or more, digits-cnn below, rab-cifar-resnet for colour",
        F,
        "auto",
        metavar="NAME",
    ),
    Option("--model-args", key_values, "extra constructor arguments of the model", F, metavar="K=V,..."),
    Option("--optimizer", str, "optimiser of every member", F, "adam", ("adam", "sgd")),
    Option("--lr", positive_float, "learning rate", F, 1e-3),
    Option("--epochs", positive_int, "epochs per member", F, 10),
    Option("--batch-size", positive_int, {"fit": "mini-batch size", "certify": "inputs per pass"}, FC, 128),
    # estimator (None: the estimator's own default, recorded in the resolved config)
    Option("--nb-models", positive_int, "ensemble size M", F),
    Option("--scale", positive_float, "sigma0: RAB's sigma, Cert-SSBD's starting and minimum sigma", F),
    Option("--alpha", probability, "failure probability of each certificate", FC),
    Option("--bound", str, BOUND_HELP, FC, None, stats.BOUNDS),
    Option("--draws-per-model", positive_int, "test noise draws per member (> 1 needs --bound hoeffding)", F),
    Option("--noise", str, "training noise fixed per member, or fresh per batch", F, None, ("fixed", "fresh")),
    Option("--warmup-epochs", non_negative_int, "epochs of the base model the sigma optimiser uses", F),
    Option("--sigma-steps", non_negative_int, "Cert-SSBD: SGA steps per sample", F),
    Option("--sigma-lr", positive_float, "Cert-SSBD: SGA step size", F),
    Option("--sigma-samples", positive_int, "Cert-SSBD: noise draws per SGA step", F),
    Option("--sigma-bounds", float_pair, "Cert-SSBD: bounds on sigma (default: scale,4*scale)", F, metavar="LOW,HIGH"),
    Option("--sigma-update", str, "Cert-SSBD: sigma update", F, None, ("gradient", "reference")),
    Option(
        "--sigma-tol",
        non_negative_float,
        "Cert-SSBD: stop a sample's SGA once its steps move sigma by less "
        "than this times sigma0 (default: every sample runs all steps)",
        F,
    ),
    Option("--sigma-patience", positive_int, "Cert-SSBD: settled SGA steps in a row before a sample stops", F),
    Option("--memory", None, "Cert-SSBD: storage-update certification memory", F, None, negatable=True),
    Option("--vectorize", None, "vmap over members (speed only)", FC, None, negatable=True),
    Option(
        "--members-per-chunk",
        positive_int,
        "members trained, and checkpointed, together (speed and memory only; default: 1 on the CPU, where members "
        "train one by one anyway, so that an interruption loses at most one member; on CUDA as many as the "
        "estimator's memory_budget holds)",
        F,
        metavar="N",
    ),
    Option(
        "--executor",
        str,
        "where members train, sigmas are optimised and members vote: here, or as Ray tasks (the same results; "
        "a task uses as many torch threads as this process)",
        FC,
        "local",
        ("local", "ray"),
    ),
    Option(
        "--ray-address",
        str,
        "with --executor ray: the Ray cluster to join (auto, ray://host:10001); default: start a local Ray",
        FC,
        metavar="ADDRESS",
    ),
    # certify and report
    Option(
        "--radii",
        radii,
        {
            "certify": "radii of the certified-accuracy table (default: 0 to 3 sigma0)",
            "report": "radii of the table (default: every radius of the runs)",
        },
        ("certify", "report"),
        metavar="R,R,...",
    ),
    Option(
        "--budget",
        budgets,
        "an attacker budget to certify against: k poisoned training samples with triggers of L2 norm <= delta and a "
        "test trigger <= delta_x (default delta); several allowed",
        C,
        metavar="k=K,delta=D[,delta_x=DX]",
        repeat=True,
    ),
    Option("--labels", names, "names of the runs in the table and plot (default: their methods)", R, metavar="A,..."),
    # every command
    Option(
        "--output",
        path,
        {
            "fit": "fit directory (default: a new one under the runs directory)",
            "certify": "output directory (default: DIR/certify)",
            "report": "output directory (default: under the runs directory, reports/)",
        },
        COMMANDS,
        metavar="DIR",
    ),
    Option("--seed", non_negative_int, "seed of everything random (poisoning, noise, initialisation)", F, 0),
    Option("--device", str, "gpu: CUDA when present, else the CPU", FC, "gpu", ("cpu", "gpu")),
    Option("--quiet", None, "no progress output", COMMANDS, False),
)
_BY_KEY = {option.key: option for option in OPTIONS}
# the positional arguments, as config keys: certify's run directory, report's run directories
POSITIONAL = {
    "run": Option("--run", path, "the fit directory to certify", C),
    "runs": Option("--runs", path, "certify (or fit) directories to compare", R),
}
#: Every option of every command by config key, the positional arguments included (what a config file may name).
ALL_OPTIONS = {**_BY_KEY, **POSITIONAL}
PATH_KEYS = ("output", "run", "runs")


def options_of(command: str) -> list[Option]:
    """The options of ``command`` (without its positional argument)."""
    return [option for option in OPTIONS if command in option.commands]


# certify options whose default is the value the fit was run with
INHERITED = (
    "data",
    "classes",
    "image_size",
    "channels",
    "poison",
    "target",
    "delta",
    "alpha",
    "bound",
    "batch_size",
    "vectorize",
)


def default(option: Option, command: str) -> Any:
    """The built-in default of ``option`` in ``command`` (``None`` for what certify takes from the fit)."""
    return None if command == "certify" and option.key in INHERITED else option.default


def add_options(parser: argparse.ArgumentParser, command: str) -> None:
    """Add ``--config`` and the options of ``command``; flags not given stay out of the namespace (SUPPRESS)."""
    parser.add_argument(
        "--config",
        type=path,
        default=argparse.SUPPRESS,
        metavar="FILE",
        help=f"TOML file of options (top-level keys, or a [{command}] table); flags override it",
    )
    for option in options_of(command):
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "dest": option.key}
        kwargs["help"] = option.help_for(command) + _default_text(option, command)
        if option.parse is None:
            kwargs["action"] = argparse.BooleanOptionalAction if option.negatable else "store_true"
        elif option.repeat:
            kwargs.update(type=option.parse, action="append", metavar=option.metavar)
        else:
            kwargs.update(type=option.parse, choices=option.choices, metavar=option.metavar)
        parser.add_argument(option.flag, **kwargs)


def _default_text(option: Option, command: str) -> str:
    if command == "certify" and option.key in INHERITED:
        return " (default: the fit's)"
    value = option.default
    if value is None and command == "fit":  # an estimator parameter: the estimators' own defaults
        value = _estimator_default(option.key)
    if value is None or value is False or value == "":
        return ""
    return f" (default: {','.join(map(str, value)) if isinstance(value, tuple | list) else value})"


def _estimator_default(key: str) -> str | None:
    import inspect

    from art_certssbd.estimator import CertSSBDEstimator, RABEstimator

    key = "use_memory" if key == "memory" else key
    found = {}
    for name, cls in (("cert-ssbd", CertSSBDEstimator), ("rab", RABEstimator)):
        parameter = inspect.signature(cls.__init__).parameters.get(key)
        if parameter is not None and parameter.default is not None:
            found[name] = parameter.default
    if not found or len(set(map(str, found.values()))) == 1:
        return None if not found else str(next(iter(found.values())))
    return ", ".join(f"{name}: {value}" for name, value in found.items())
