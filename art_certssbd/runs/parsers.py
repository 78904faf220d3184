"""Parsers of option values (argparse types, also applied to values from a ``--config`` file): each returns the
value or raises :class:`argparse.ArgumentTypeError` quoting the text."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from art_certssbd.datasets.spec import DataSpec, parse_data_spec


def number(kind: type, accept: Callable[[float], bool], what: str) -> Callable[[str], float]:
    """An argparse type: ``kind(text)`` when ``accept`` holds for it, else an error saying that ``what`` was expected
    and quoting the text given."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.what = what  # type: ignore[attr-defined]  (a config file's wrong-type message says what was expected)
    return parse


positive_int = number(int, lambda v: v >= 1, "a positive integer")
non_negative_int = number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = number(float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
non_negative_float = number(float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
probability = number(float, lambda v: 0 < v < 1, "a number in (0, 1)")
rate = number(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def radii(text: str) -> tuple[float, ...]:
    """``"0,0.25,0.5"`` -> radii (finite, >= 0)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated radii like 0,0.25,0.5, got {text!r}") from None
    if not values or any(not (math.isfinite(v) and v >= 0) for v in values):
        raise argparse.ArgumentTypeError(f"radii must be finite and >= 0, got {text!r}")
    return values


def budgets(text: str) -> tuple:
    """``"k=253,delta=1.0"`` (``delta_x=`` optional; several separated by ``;``) -> budgets
    (:func:`art_certssbd.budget.parse_budgets`)."""
    from art_certssbd.budget import parse_budgets

    try:
        return parse_budgets(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def names(text: str) -> list[str]:
    """``"cat,dog"`` -> ``["cat", "dog"]`` (a comma-separated list of non-empty items)."""
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or not all(items):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list like 0,1 or cat,dog, got {text!r}")
    return items


def classes(text: str) -> list[str]:
    """Two or more class names or indices."""
    items = names(text)
    if len(items) < 2:
        raise argparse.ArgumentTypeError(f"expected at least two classes like 1,0, got {text!r}")
    return items


def float_pair(text: str) -> tuple[float, float]:
    """``"0.12,0.48"`` -> ``(0.12, 0.48)``, both finite and > 0, low <= high."""
    parts = text.split(",")
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH like 0.12,0.48, got {text!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
        raise argparse.ArgumentTypeError(f"expected 0 < LOW <= HIGH, got {text!r}")
    return low, high


def image_size(text: str) -> tuple[int, int]:
    """``"32"`` or ``"32,32"`` -> ``(height, width)``."""
    parts = text.split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected SIZE or HEIGHT,WIDTH in pixels like 32,32, got {text!r}")
    return (values[0], values[-1])


def channels(text: str) -> int:
    """``"1"`` (grey) or ``"3"`` (RGB)."""
    if text.strip() not in ("1", "3"):
        raise argparse.ArgumentTypeError(f"expected {channels.what}, got {text!r}")
    return int(text)


channels.what = "1 (grey) or 3 (RGB)"  # type: ignore[attr-defined]


def key_values(text: str) -> dict[str, Any]:
    """``"norm=none,in_channels=3"`` -> ``{"norm": "none", "in_channels": 3}`` (ints, floats, true/false parsed)."""
    out: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE pairs like norm=none,in_channels=3, got {text!r}")
        out[key.strip()] = _scalar(value.strip())
    return out


def _scalar(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def data_spec(text: str) -> DataSpec:
    try:
        return parse_data_spec(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def path(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got ''")
    return Path(text).expanduser()


# what each parser expects, in words (a config file's wrong-type message)
float_pair.what = "a pair LOW,HIGH like [0.12, 0.48]"  # type: ignore[attr-defined]
image_size.what = "a size like 32 or [32, 32]"  # type: ignore[attr-defined]
key_values.what = "a table of constructor arguments like {norm = 'none'}"  # type: ignore[attr-defined]
data_spec.what = "a string KIND:PATH"  # type: ignore[attr-defined]
path.what = "a path"  # type: ignore[attr-defined]
