"""Certified-accuracy tables and plots, written as JSON, Markdown and PNG (atomically)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from art_certssbd._io import atomic_open, atomic_write
from art_certssbd.result import CertificationResult

logger = logging.getLogger(__name__)

DEFAULT_RADII = tuple(np.round(np.arange(0.0, 2.51, 0.25), 2))


def certified_accuracy_rows(
    results: Mapping[str, CertificationResult], y: np.ndarray, radii: Sequence[float], conservative: bool = False
) -> dict[str, list[float]]:
    """Certified accuracy at each radius for every named result."""
    return {name: result.certified_accuracy(y, radii, conservative).tolist() for name, result in results.items()}


def markdown_table(rows: Mapping[str, Sequence[float]], radii: Sequence[float], first: str = "method") -> str:
    """A Markdown table: one row per entry of ``rows``, one column per radius."""
    header = f"| {first} | " + " | ".join(f"r={r:g}" for r in radii) + " |"
    rule = "|---|" + "---:|" * len(radii)
    body = [f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + " |" for name, values in rows.items()]
    return "\n".join([header, rule, *body])


def write_json(path: str | os.PathLike, payload: Mapping) -> Path:
    """Write ``payload`` as indented JSON, atomically."""
    text = json.dumps(payload, indent=2, sort_keys=False, default=_jsonable)
    atomic_write(path, lambda handle: handle.write(text + "\n"), mode="w")
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text atomically."""
    atomic_write(path, lambda handle: handle.write(text), mode="w")
    return Path(path)


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def plot_certified_accuracy(
    curves: Mapping[str, Sequence[float]], radii: Sequence[float], path: str | os.PathLike, title: str = ""
) -> Path | None:
    """Plot certified accuracy against radius (one line per curve) to a PNG. Needs matplotlib (the ``plots``
    extra); without it, logs a warning and returns ``None``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed (pip install 'art-certssbd[plots]'): no plot written to %s", path)
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in curves.items():
        ax.plot(radii, values, marker="o", markersize=3, label=name, linestyle="--" if "trigger" in name else "-")
    ax.set_xlabel("L2 radius")
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120)
    plt.close(fig)
    return Path(path)
