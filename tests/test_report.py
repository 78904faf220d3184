"""Tables, plots and files of ``art_certssbd.report``: values by hand, round trips, atomic writes, no matplotlib."""

from __future__ import annotations

import csv
import json
import logging
import sys

import numpy as np
import pytest

from art_certssbd import report
from art_certssbd.report import (
    DEFAULT_RADII,
    certified_accuracy_rows,
    markdown_table,
    plot_certified_accuracy,
    plot_curves,
    plot_sigma_histogram,
    write_csv,
    write_json,
    write_npz,
    write_results,
    write_text,
)
from art_certssbd.result import CertificationResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _result(pred, radius, radius_conservative) -> CertificationResult:
    n = len(pred)
    return CertificationResult(
        pred=np.asarray(pred),
        radius=np.asarray(radius, dtype=float),
        radius_conservative=np.asarray(radius_conservative, dtype=float),
        sigma=np.full(n, 0.25),
        p_a_lower=np.full(n, 0.9),
        votes=np.zeros((n, 2), dtype=np.int64),
        pred_before_memory=np.asarray(pred),
    )


def _leftovers(directory):
    """Temporary files an atomic write would leave behind (``.name.XXXX.tmp``)."""
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_default_radii():
    np.testing.assert_allclose(DEFAULT_RADII, np.arange(11) * 0.25)


def test_certified_accuracy_rows_by_hand():
    y = np.array([0, 1, 1, 0])
    results = {
        "a": _result([0, 1, -1, 1], [0.5, 0.2, 0.0, 0.9], [0.3, 0.2, 0.0, 0.9]),
        "b": _result([0, 1, 1, 0], [1.0, 1.0, 0.1, 0.0], [0.1, 0.1, 0.1, 0.0]),
    }
    # a: correct 0, 1 (the abstention and the wrong input 3 are not); b: all correct, radii 1, 1, 0.1, 0.
    rows = certified_accuracy_rows(results, y, [0.0, 0.2, 0.5])
    assert rows == {"a": [0.5, 0.5, 0.25], "b": [1.0, 0.5, 0.5]}
    rows_c = certified_accuracy_rows(results, y, [0.0, 0.2, 0.5], conservative=True)
    assert rows_c == {"a": [0.5, 0.5, 0.0], "b": [1.0, 0.0, 0.0]}
    assert all(type(v) is float for values in rows.values() for v in values)


def test_markdown_table_exact_and_parsable():
    rows = {"RAB": [0.91234, 0.5, 0.0], "Cert-SSBD": [1.0, 0.6666, 0.125]}
    table = markdown_table(rows, [0.0, 0.25, 1.5], first="defence")
    assert table == (
        "| defence | r=0 | r=0.25 | r=1.5 |\n"
        "|---|---:|---:|---:|\n"
        "| RAB | 0.912 | 0.500 | 0.000 |\n"
        "| Cert-SSBD | 1.000 | 0.667 | 0.125 |"
    )
    lines = table.splitlines()
    assert len({line.count("|") for line in lines}) == 1  # every line has the same number of columns
    parsed = {cells[0]: [float(c) for c in cells[1:]] for cells in (line.strip("|").split("|") for line in lines[2:])}
    parsed = {name.strip(): values for name, values in parsed.items()}
    for name, values in rows.items():
        np.testing.assert_allclose(parsed[name], values, atol=5e-4)


def test_write_json_round_trips_numpy_values_atomically(tmp_path):
    payload = {
        "name": "run",
        "acc": np.float32(0.75),
        "n": np.int64(12),
        "radii": np.array([0.0, 0.25]),
        "nested": {"votes": np.arange(3, dtype=np.int32), "ok": np.bool_(True)},
    }
    path = write_json(tmp_path / "sub" / "out.json", payload)  # the parent directory is created
    assert path == tmp_path / "sub" / "out.json"
    text = path.read_text()
    assert text.endswith("}\n")
    assert json.loads(text) == {
        "name": "run",
        "acc": 0.75,
        "n": 12,
        "radii": [0.0, 0.25],
        "nested": {"votes": [0, 1, 2], "ok": True},
    }
    assert list(json.loads(text)) == list(payload)  # key order kept
    assert _leftovers(path.parent) == []


def test_write_json_refuses_unknown_types_and_keeps_the_old_file(tmp_path):
    path = write_json(tmp_path / "out.json", {"a": 1})
    with pytest.raises(TypeError, match="cannot write object as JSON"):
        write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert _leftovers(tmp_path) == []


def test_write_text_round_trips(tmp_path):
    text = "| a | b |\nünïcode ✓\n"
    path = write_text(tmp_path / "t.md", text)
    assert path.read_text() == text
    write_text(path, "short")  # replaces, not appends
    assert path.read_text() == "short"


def test_write_results_writes_the_json_and_the_markdown_side_by_side(tmp_path):
    json_path, md_path = write_results(tmp_path / "res", "bench-cpu", {"ratio": np.float64(0.25)}, "| a |\n|---|")
    assert (json_path.name, md_path.name) == ("bench-cpu.json", "bench-cpu.md")
    assert json.loads(json_path.read_text()) == {"ratio": 0.25}
    assert md_path.read_text() == "| a |\n|---|\n"


def test_write_csv_round_trips_full_precision(tmp_path):
    x = 0.1 + 0.2  # 0.30000000000000004: '%g'-style formatting would lose it
    path = write_csv(tmp_path / "c.csv", {"index": np.arange(3), "radius": np.array([x, 1 / 3, 0.0]), "label": "abc"})
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["index", "radius", "label"]
    assert [int(r[0]) for r in rows[1:]] == [0, 1, 2]
    assert [float(r[1]) for r in rows[1:]] == [x, 1 / 3, 0.0]
    assert [r[2] for r in rows[1:]] == ["a", "b", "c"]


def test_write_csv_refuses_unequal_columns_without_writing(tmp_path):
    with pytest.raises(ValueError, match=r"equal lengths, got \[2, 3\]"):
        write_csv(tmp_path / "c.csv", {"a": [1, 2], "b": [1, 2, 3]})
    assert list(tmp_path.iterdir()) == []


def test_write_npz_round_trips_and_a_failed_write_keeps_the_old_file(tmp_path):
    arrays = {"pred": np.array([0, -1, 2], dtype=np.int64), "radius": np.array([0.5, 0.0, 1.25], dtype=np.float32)}
    path = write_npz(tmp_path / "r.npz", arrays)
    with np.load(path) as data:
        assert sorted(data.files) == ["pred", "radius"]
        for name, value in arrays.items():
            assert data[name].dtype == value.dtype
            np.testing.assert_array_equal(data[name], value)
    before = path.read_bytes()
    with pytest.raises(ValueError):  # a ragged array fails inside the write
        write_npz(path, {"ok": np.zeros(2), "bad": [[1, 2], [3]]})
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_plots_write_pngs_with_the_documented_styles(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    seen = {}
    finish = report._finish

    def spy(plt, fig, ax, path, title):
        seen[path.name] = [(line.get_label(), line.get_linestyle(), line.get_color()) for line in ax.get_lines()]
        seen[path.name + " markers"] = [(line.get_marker(), line.get_markerfacecolor()) for line in ax.get_lines()]
        return finish(plt, fig, ax, path, title)

    monkeypatch.setattr(report, "_finish", spy)
    curves = {"RAB (clean)": [0.9, 0.5], "RAB (trigger)": [0.8, 0.4], "Cert-SSBD (clean)": [0.95, 0.6]}
    path = plot_certified_accuracy(curves, [0.0, 0.5], tmp_path / "acc.png", title="t")
    assert path == tmp_path / "acc.png" and path.read_bytes().startswith(PNG_MAGIC)
    (l0, s0, c0), (l1, s1, c1), (l2, s2, c2) = seen["acc.png"]
    assert (l0, l1, l2) == tuple(curves)
    assert (s0, s1, s2) == ("-", "--", "-")  # dashed only for the triggered curve
    assert c0 == c1 != c2  # the two RAB curves share a colour
    # ... so clean and triggered differ by more than fine dashes: marker shape and fill (legend and grey print)
    (m0, f0), (m1, f1), _ = seen["acc.png markers"]
    assert (m0, m1) == ("o", "s") and f1 == "white" and f0 != "white"

    path = plot_curves([("x", [0, 1], [1.0, 0.0], ":")], tmp_path / "curves.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
    assert seen["curves.png"][0][1] == ":"

    # one repeated value (zero-width range) and a sigma0 marker
    hist = plot_sigma_histogram({"train": np.full(5, 0.25), "test": [0.25]}, tmp_path / "h.png", scale=0.25)
    assert hist.read_bytes().startswith(PNG_MAGIC)
    assert _leftovers(tmp_path) == []


def test_plots_without_matplotlib_warn_and_return_none(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # ``import matplotlib`` now raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with caplog.at_level(logging.WARNING, logger="art_certssbd.report"):
        assert plot_certified_accuracy({"a": [1.0]}, [0.0], tmp_path / "a.png") is None
        assert plot_curves([("a", [0.0], [1.0], "-")], tmp_path / "b.png") is None
        assert plot_sigma_histogram({"train": np.ones(3)}, tmp_path / "c.png") is None
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "matplotlib is not installed" in r.message
    ]
    assert len(warnings) == 3
    assert list(tmp_path.iterdir()) == []
