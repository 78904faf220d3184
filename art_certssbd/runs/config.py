"""The TOML side of the options: reading a ``--config`` file, and writing the resolved options of a run.

A config file holds option keys (``nb_models`` or ``nb-models``) at the top level, which apply to every command that
has the option, and in ``[fit]``, ``[certify]`` and ``[report]`` tables, which override them for one command.
Relative paths in it (data, output, runs) are taken from the file's directory. Values go through the flags' parsers,
so a wrong one is refused with the file, the key and the value in the message. The resolved config a run writes is a
``[command]`` table of every option, read back by :func:`read_config` to the same values.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
from pathlib import Path
from typing import Any

from art_certssbd.datasets.spec import DataSpec
from art_certssbd.runs.options import (
    ALL_OPTIONS,
    COMMANDS,
    PATH_KEYS,
    POSITIONAL,
    Option,
    UsageError,
    default,
    options_of,
)
from art_certssbd.runs.parsers import path


def read_config(file: Path, command: str) -> dict[str, Any]:
    """The values for ``command`` in a TOML file (top-level keys, then its ``[command]`` table), parsed."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise UsageError("--config needs Python 3.11 or the tomli package (pip install tomli)") from None
    file = Path(file).expanduser()
    if file.is_dir():
        inside = file / "config.toml"
        hint = f" (did you mean {str(inside)!r}?)" if inside.is_file() else ""
        raise UsageError(f"--config {str(file)!r}: is a directory, not a TOML file{hint}")
    if not file.is_file():
        raise UsageError(f"--config {str(file)!r}: no such file")
    try:
        with open(file, "rb") as handle:
            document = tomllib.load(handle)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"--config {str(file)!r}: not valid TOML ({err})") from None
    except OSError as err:
        raise UsageError(f"--config {str(file)!r}: cannot be read ({err})") from None
    values: dict[str, Any] = {}
    for key, value in document.items():
        if key in COMMANDS and isinstance(value, dict):
            continue
        option = _lookup(file, key, None)
        if command in option.commands:
            values[option.key] = _convert(file, option, value)
    table = document.get(command, {})
    if not isinstance(table, dict):
        raise UsageError(f"--config {str(file)!r}: {command} must be a table ([{command}])")
    for key, value in table.items():
        option = _lookup(file, key, command)
        values[option.key] = _convert(file, option, value)
    return values


def _lookup(file: Path, key: str, command: str | None) -> Option:
    """The option of a config key (``-`` or ``_`` in it); ``command=None``: any command's (a top-level key)."""
    option = ALL_OPTIONS.get(key.replace("-", "_"))
    if option is None or (command is not None and command not in option.commands):
        valid = [k for k, o in ALL_OPTIONS.items() if command is None or command in o.commands]
        close = difflib.get_close_matches(key.replace("-", "_"), valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        where = f"in [{command}] " if command else ""
        raise UsageError(f"--config {str(file)!r}: unknown key {where}{key!r}{hint}")
    return option


def _convert(file: Path, option: Option, value: Any) -> Any:
    """A TOML value through the option's parser; paths relative to the file's directory."""
    where = f"--config {str(file)!r}: {option.key} = {value!r}"
    if option.parse is None:
        if not isinstance(value, bool):
            raise UsageError(f"{where}: expected true or false")
        return value
    if option.key == "runs":
        items = value if isinstance(value, list) else [value]
        return [_relative(file, path(str(item))) for item in items]
    if option.repeat:  # a list of texts (or one), each parsed alone, concatenated
        items = value if isinstance(value, list) else [value]
        try:
            return tuple(parsed for item in items for parsed in option.parse(str(item)))
        except argparse.ArgumentTypeError as err:
            raise UsageError(f"{where}: {err}") from None
    if option.key == "model_args" and isinstance(value, dict):
        return dict(value)
    if isinstance(value, bool) or isinstance(value, dict):
        got = "a boolean" if isinstance(value, bool) else "a table"
        raise UsageError(f"{where}: expected {_expected(option)}, got {got}")
    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    try:
        parsed = option.parse(text)
    except argparse.ArgumentTypeError as err:
        raise UsageError(f"{where}: {err}") from None
    if option.choices is not None and parsed not in option.choices:
        raise UsageError(f"{where}: expected one of {', '.join(option.choices)}")
    if isinstance(parsed, DataSpec):
        return parsed.resolved(file.parent)
    return _relative(file, parsed) if option.key in PATH_KEYS else parsed


def _expected(option: Option) -> str:
    """What a value of ``option`` is, in words (for a TOML value of the wrong type)."""
    if option.key in ("classes", "radii", "runs"):
        return "a list"
    if option.choices is not None:
        return "one of " + ", ".join(option.choices)
    return getattr(option.parse, "what", "a string")


def _relative(file: Path, value: Path) -> Path:
    return value if value.is_absolute() else Path(os.path.abspath(file.parent / value))


def toml_text(table: str, values: dict[str, Any], comment: str = "") -> str:
    """``values`` as a TOML table ``[table]`` (``None`` values left out), readable by :func:`read_config`."""
    lines = [f"# {line}" for line in comment.splitlines()] + [f"[{table}]"]
    for key, value in values.items():
        if value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, int) or math.isfinite(value) else json.dumps(str(value))
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value), ensure_ascii=False)


def resolve(command: str, namespace: argparse.Namespace) -> dict[str, Any]:
    """All values of ``command``: defaults, then the ``--config`` file, then the flags given."""
    values = {option.key: default(option, command) for option in options_of(command)}
    given = {k: v for k, v in vars(namespace).items() if k not in ("command", "config", "benchmark")}
    given = {k: v for k, v in given.items() if not (k in POSITIONAL and not v)}  # not given: the file's, if any
    config = getattr(namespace, "config", None)
    if config is not None:
        values.update(read_config(config, command))
    values.update(given)
    for option in options_of(command):  # a repeated flag: one tuple of all its values
        if option.repeat and isinstance(values.get(option.key), list):
            values[option.key] = tuple(item for value in values[option.key] for item in value)
    return values
