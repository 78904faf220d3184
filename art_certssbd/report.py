"""Certified-accuracy tables and plots, and per-input results, written as JSON, Markdown, CSV, NPZ and PNG (all
atomically)."""

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


def write_results(directory: str | os.PathLike, name: str, payload: Mapping, markdown: str) -> tuple[Path, Path]:
    """Write a benchmark's or experiment's results as ``directory/name.json`` (everything) and ``name.md`` (the
    tables), each atomically.

    :return: The two paths.
    """
    directory = Path(directory)
    return write_json(directory / f"{name}.json", payload), write_text(directory / f"{name}.md", markdown + "\n")


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def plot_certified_accuracy(
    curves: Mapping[str, Sequence[float]], radii: Sequence[float], path: str | os.PathLike, title: str = ""
) -> Path | None:
    """Plot certified accuracy against radius (one line per curve, dashed for the triggered ones) to a PNG, through
    :func:`plot_curves`. Needs matplotlib (the ``plots`` extra); without it, logs a warning and returns ``None``."""
    lines = [(name, radii, values, "--" if "trigger" in name else "-") for name, values in curves.items()]
    return plot_curves(lines, path, title=title)


def write_csv(path: str | os.PathLike, columns: Mapping[str, Sequence]) -> Path:
    """Write equal-length ``columns`` as a CSV file with a header row, atomically (floats with full precision)."""
    import csv
    import io

    lengths = {len(values) for values in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"columns must have equal lengths, got {sorted(lengths)}")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(columns))
    for row in zip(*(np.asarray(values).tolist() for values in columns.values())):
        writer.writerow([repr(v) if isinstance(v, float) else v for v in row])
    return write_text(path, buffer.getvalue())


def write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` to a compressed ``.npz`` file, atomically."""
    atomic_write(path, lambda handle: np.savez_compressed(handle, **{k: np.asarray(v) for k, v in arrays.items()}))
    return Path(path)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed (pip install 'art-certssbd[plots]'): no plot written")
        return None
    return plt


def _finish(plt, fig, ax, path: str | os.PathLike, title: str) -> Path:
    """Legend and title, then the figure written to ``path`` as a PNG, atomically, and closed."""
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120)
    plt.close(fig)
    return Path(path)


#: How each line style of :func:`plot_curves` is drawn: solid lines with filled circles (clean), long dashes with
#: hollow squares (triggered), dots with hollow triangles (conservative radius), so that the legend tells them apart
#: in one colour (and in grey print).
CURVE_STYLES = {
    "-": {"linestyle": "-", "marker": "o", "markersize": 4, "linewidth": 1.6},
    "--": {"linestyle": (0, (6, 3)), "marker": "s", "markersize": 5, "markerfacecolor": "white", "linewidth": 1.6},
    ":": {"linestyle": ":", "marker": "^", "markersize": 5, "markerfacecolor": "white", "linewidth": 1.2},
}


def plot_curves(
    curves: Sequence[tuple[str, Sequence[float], Sequence[float], str]],
    path: str | os.PathLike,
    title: str = "",
    xlabel: str = "L2 radius",
    ylabel: str = "certified accuracy",
    xscale: str = "linear",
) -> Path | None:
    """Plot ``(label, radii, values, style)`` curves (``style`` a matplotlib line style such as ``"-"`` or ``"--"``;
    curves that share the text before `` (`` in their label share a colour) to a PNG, atomically; ``xscale`` as
    matplotlib's (``"symlog"`` for counts from 0). Needs matplotlib; without it, logs a warning and returns ``None``."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colours: dict[str, str] = {}
    cycle = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    for label, radii, values, style in curves:
        group = label.split(" (")[0]
        colour = colours.setdefault(group, cycle[len(colours) % len(cycle)])
        ax.plot(radii, values, label=label, color=colour, **CURVE_STYLES.get(style, {"linestyle": style}))
    ax.set_xscale(xscale)
    if xscale == "symlog":  # counts: no negative side
        ax.set_xlim(left=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    return _finish(plt, fig, ax, path, title)


def plot_sigma_histogram(
    sigmas: Mapping[str, np.ndarray], path: str | os.PathLike, scale: float | None = None, title: str = ""
) -> Path | None:
    """Histograms of per-sample sigmas (e.g. ``{"training": ..., "test": ...}``), with ``scale`` (sigma0) marked, to
    a PNG, atomically. Needs matplotlib; without it, logs a warning and returns ``None``."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    values = [np.asarray(v, dtype=float) for v in sigmas.values()]
    low, high = min(v.min() for v in values), max(v.max() for v in values)
    bins = np.linspace(low, high if high > low else low + 1e-6, 41)
    for label, v in zip(sigmas, values):
        ax.hist(v, bins=bins, alpha=0.55, label=f"{label} (n={len(v)}, mean {np.mean(v):.4f})")
    if scale is not None:
        ax.axvline(scale, color="k", linestyle=":", label=f"sigma0 = {scale:g}")
    ax.set_xlabel("sigma")
    ax.set_ylabel("samples")
    return _finish(plt, fig, ax, path, title)
