"""The on-disk formats: the ensemble checkpoint directory (art_certssbd.checkpoint) and the certification memory file.

Guards: the manifest records what is needed to trust and reproduce a checkpoint; a write interrupted at any point
leaves the previous state loadable and no temporary file behind; a file that fails its checksum is refused; a file
whose checksum was forged to match still cannot run code (``weights_only``); a manifest of another format, version
or kind is refused. Bad-input cases of ``load_ensemble`` (truncated files, other versions, wrong sizes) are in
tests/test_bad_input.py; the memory's round trip and version check are in tests/test_memory.py.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import pickle
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import digits_estimator

import art_certssbd
from art_certssbd import CertificationMemory, CertSSBDEstimator, _io
from art_certssbd import checkpoint as checkpoint_module
from art_certssbd import memory as memory_module
from art_certssbd.checkpoint import FORMAT, FORMAT_VERSION, MANIFEST, CheckpointError, EnsembleCheckpoint
from art_certssbd.datasets import load_digits

SMALL = dict(nb_models=3, scale=0.25, alpha=0.1, random_state=5, sigma_steps=2, sigma_samples=2, warmup_epochs=1)


def make(**kwargs):
    return digits_estimator(**{**SMALL, **kwargs})


@pytest.fixture(scope="module", autouse=True)
def _one_thread_for_the_module():
    """The whole module on one torch thread, the shared fixture ``trained`` included: the checkpoint records the
    thread count (CPU kernels round by it) and the resume tests compare with it, whatever the machine's default
    (tox leaves OMP_NUM_THREADS unset: 2 threads on the CI machines)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    x_train, y_train, x_test, _ = load_digits(random_state=0)
    return x_train[:100], y_train[:100], x_test[:6]


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    """A fitted estimator, its training checkpoint and its saved ensemble."""
    root = tmp_path_factory.mktemp("ck")
    est = make()
    est.fit(digits[0], digits[1], nb_epochs=1, batch_size=50, checkpoint_dir=root / "training")
    est.save_ensemble(root / "saved")
    return est, root / "training", root / "saved"


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def tiny_state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"weight": torch.randn(3, 4, generator=g), "bias": torch.randn(3, generator=g)}


def rewrite_entry(directory: Path, name: str, data: bytes) -> None:
    """Replace an entry's file *and* forge its checksum in the manifest, as an attacker with write access could."""
    manifest = json.loads((directory / MANIFEST).read_text())
    entry = manifest["entries"][name]
    (directory / entry["file"]).write_bytes(data)
    entry["sha256"] = hashlib.sha256(data).hexdigest()
    (directory / MANIFEST).write_text(json.dumps(manifest))


class MkdirOnLoad:
    """A pickle payload: unpickling it calls ``os.mkdir(marker)``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


# ------------------------------------------------------------------------------------------------- manifest
def _check_manifest(directory: Path, kind: str, names: set[str]) -> dict:
    manifest = json.loads((directory / MANIFEST).read_text())
    assert manifest["format"] == FORMAT and manifest["format_version"] == FORMAT_VERSION
    assert manifest["kind"] == kind
    assert manifest["package_version"] == art_certssbd.__version__
    assert manifest["torch_version"] == torch.__version__
    assert set(manifest["entries"]) == names
    for entry in manifest["entries"].values():  # per-file SHA-256 of the bytes on disk
        assert hashlib.sha256((directory / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
    files = {entry["file"] for entry in manifest["entries"].values()} | {MANIFEST}
    assert {p.name for p in directory.iterdir()} == files  # nothing else: no temporary files left behind
    return manifest


def test_training_manifest_records_versions_config_seeds_and_checksums(trained, digits):
    _, training, _ = trained
    names = {"base", "train_sigma"} | {f"member_{k:05d}" for k in range(3)}
    config = _check_manifest(training, "training", names)["config"]
    assert config["random_state"] == SMALL["random_state"]  # the seed every stream is derived from
    for key in ("nb_models", "scale", "alpha", "bound", "noise", "sigma_steps", "nb_epochs", "batch_size"):
        assert key in config
    x, y = digits[0], digits[1].astype(np.int64)
    assert config["data_sha256"] == hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()


def test_saved_ensemble_manifest(trained):
    est, _, saved = trained
    names = {"base", "train_sigma", "test_noise_seeds", "memory"} | {f"member_{k:05d}" for k in range(3)}
    config = _check_manifest(saved, "ensemble", names)["config"]
    assert config == {
        "nb_models": 3,
        "nb_classes": 10,
        "input_shape": [1, 8, 8],
        "scale": 0.25,
        "random_state": 5,
        "train_noise_copies": 1,  # noise="fixed": each member saw one noisy copy of the training set
        "grown": False,  # not stopped by a growth rule (fit with growth=...)
    }
    seeds = EnsembleCheckpoint.open(saved).load("test_noise_seeds")
    assert [int(s) for s in seeds] == est.test_noise_seeds_


def test_loads_use_weights_only(trained, monkeypatch):
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "load", spy)
    make().load_ensemble(trained[2])
    assert len(calls) == 7 and all(flag is True for flag in calls)  # base, sigmas, seeds, memory, 3 members


# ------------------------------------------------------------------------------------------- atomic writes
class Crash(RuntimeError):
    pass


def _no_temporaries(directory: Path) -> None:
    assert not [p.name for p in directory.iterdir() if p.name.endswith((".tmp", ".old"))]


def test_atomic_write_crash_mid_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old content")

    def half_then_crash(handle):
        handle.write(b"new con")
        raise Crash("killed mid-write")

    with pytest.raises(Crash):
        _io.atomic_write(path, half_then_crash)
    assert path.read_bytes() == b"old content"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_atomic_write_crash_at_the_rename_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "file.txt"
    path.write_text("old")
    monkeypatch.setattr(_io.os, "replace", lambda *a: (_ for _ in ()).throw(Crash("power cut")))
    with pytest.raises(Crash):
        _io.atomic_write(path, lambda handle: handle.write("new"), mode="w")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]


def test_crash_while_writing_a_member_leaves_the_checkpoint_as_it_was(tmp_path, monkeypatch):
    store = EnsembleCheckpoint(tmp_path / "ck", {"seed": 1})
    store.save_member(0, tiny_state(0))
    before, manifest_before = tree_bytes(tmp_path / "ck"), json.dumps(store.manifest)
    real_fsync = os.fsync

    def crash_fsync(fd):  # the member's bytes are in the temporary file when the process "dies"
        raise Crash("killed before the rename")

    monkeypatch.setattr(_io.os, "fsync", crash_fsync)
    with pytest.raises(Crash):
        store.save_member(1, tiny_state(1))
    monkeypatch.setattr(_io.os, "fsync", real_fsync)
    assert tree_bytes(tmp_path / "ck") == before and json.dumps(store.manifest) == manifest_before
    reopened = EnsembleCheckpoint(tmp_path / "ck", {"seed": 1})
    assert reopened.finished_members() == [0] and states_equal(reopened.load_member(0), tiny_state(0))
    reopened.save_member(1, tiny_state(1))  # and the next attempt succeeds
    assert EnsembleCheckpoint(tmp_path / "ck").finished_members() == [0, 1]


def _crash_on_manifest(monkeypatch, message: str):
    """Make every write of the manifest raise ``Crash(message)`` (other files are written); returns the real
    ``atomic_write``, to restore it."""
    real = checkpoint_module.atomic_write

    def crash_on_manifest(path, write, mode="wb"):
        if Path(path).name == MANIFEST:
            raise Crash(message)
        return real(path, write, mode)

    monkeypatch.setattr(checkpoint_module, "atomic_write", crash_on_manifest)
    return real


def test_crash_while_writing_the_manifest_keeps_the_previous_manifest(tmp_path, monkeypatch):
    store = EnsembleCheckpoint(tmp_path / "ck", {"seed": 1})
    store.save_member(0, tiny_state(0))
    manifest_bytes = (tmp_path / "ck" / MANIFEST).read_bytes()
    _crash_on_manifest(monkeypatch, "killed while writing the manifest")
    with pytest.raises(Crash):
        store.save_member(1, tiny_state(1))
    assert (tmp_path / "ck" / MANIFEST).read_bytes() == manifest_bytes
    assert store.finished_members() == [0]  # the in-memory manifest did not move ahead of the disk either
    # the member file reached the disk but is not listed: a resume trains member 1 again and overwrites it
    assert EnsembleCheckpoint(tmp_path / "ck").finished_members() == [0]
    _no_temporaries(tmp_path / "ck")


def test_a_resumed_writer_removes_what_a_killed_write_left(tmp_path):
    store = EnsembleCheckpoint(tmp_path / "ck", {"seed": 1})
    store.save_member(0, tiny_state(0))
    stale = tmp_path / "ck" / ".member_00001.pt.k3j4h5.tmp"  # as atomic_open names it; the writer was SIGKILLed
    stale.write_bytes(b"half a member")
    EnsembleCheckpoint(tmp_path / "ck")  # a reader leaves the directory alone
    assert stale.exists()
    EnsembleCheckpoint(tmp_path / "ck", {"seed": 1})  # a writer resuming with the same config cleans up
    assert not stale.exists() and EnsembleCheckpoint(tmp_path / "ck").finished_members() == [0]


def test_overwriting_an_entry_never_touches_the_file_the_manifest_points_to(tmp_path, monkeypatch):
    store = EnsembleCheckpoint(tmp_path / "ck")
    store.save("base", tiny_state(0))
    old_file = store.manifest["entries"]["base"]["file"]
    real = _crash_on_manifest(monkeypatch, "killed between the new file and the manifest")
    with pytest.raises(Crash):
        store.save("base", tiny_state(1))
    monkeypatch.setattr(checkpoint_module, "atomic_write", real)
    # the old entry still loads (its file was not overwritten in place), and a completed overwrite cleans up
    assert states_equal(EnsembleCheckpoint(tmp_path / "ck").load("base"), tiny_state(0))
    store.save("base", tiny_state(2))
    assert states_equal(EnsembleCheckpoint(tmp_path / "ck").load("base"), tiny_state(2))
    assert store.manifest["entries"]["base"]["file"] != old_file
    listed = {entry["file"] for entry in store.manifest["entries"].values()} | {MANIFEST}
    present = {p.name for p in (tmp_path / "ck").iterdir()}
    assert old_file not in present and listed <= present
    assert len(present - listed) <= 1  # at most the unlisted file of the crashed attempt, never read


def test_save_ensemble_is_all_or_nothing(trained, tmp_path, monkeypatch):
    est, _, saved = trained
    target = tmp_path / "ens"
    est.save_ensemble(target)
    before = tree_bytes(target)
    calls = {"n": 0}
    real = EnsembleCheckpoint.save

    def crash_after_two(self, name, obj):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Crash("killed in the middle of save_ensemble")
        return real(self, name, obj)

    monkeypatch.setattr(EnsembleCheckpoint, "save", crash_after_two)
    with pytest.raises(Crash):
        est.save_ensemble(target)
    assert tree_bytes(target) == before  # the previous save is intact: no mix of old and new members
    assert [p.name for p in tmp_path.iterdir()] == ["ens"]  # and the staging directory is gone
    monkeypatch.setattr(EnsembleCheckpoint, "save", real)
    est.save_ensemble(target)  # replacing a complete save works and leaves nothing behind
    assert [p.name for p in tmp_path.iterdir()] == ["ens"]
    make().load_ensemble(target)


def test_save_ensemble_refuses_to_replace_a_directory_that_is_not_a_checkpoint(trained, tmp_path):
    est = trained[0]
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"\xff\xd8 not really")
    with pytest.raises(CheckpointError, match=r"holds no manifest.json: refusing to replace"):
        est.save_ensemble(tmp_path / "photos")
    est.save_ensemble(tmp_path / "ens")
    (tmp_path / "ens" / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match=r"holds files that are not part of the checkpoint \(\['notes.txt'\]\)"):
        est.save_ensemble(tmp_path / "ens")
    assert (tmp_path / "photos" / "holiday.jpg").exists() and (tmp_path / "ens" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ens", "photos"]


# ----------------------------------------------------------------------------------- checksums and pickles
def test_a_corrupted_member_is_refused_by_its_checksum(trained, tmp_path):
    _, _, saved = trained
    target = tmp_path / "ens"
    trained[0].save_ensemble(target)
    member = target / "member_00002.pt"
    data = bytearray(member.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    member.write_bytes(bytes(data))
    est = make()
    with pytest.raises(CheckpointError, match=rf"'{member}' fails its SHA-256 check"):
        est.load_ensemble(target)
    assert not hasattr(est, "ensemble_")


def test_a_corrupted_training_checkpoint_stops_the_resume(trained, digits, tmp_path):
    import shutil

    copy = tmp_path / "training"
    shutil.copytree(trained[1], copy)
    sigma = copy / "train_sigma.pt"
    sigma.write_bytes(sigma.read_bytes()[:-8] + b"\x00" * 8)
    before, est = tree_bytes(copy), make()
    with pytest.raises(CheckpointError, match=rf"'{sigma}' fails its SHA-256 check"):
        est.fit(digits[0], digits[1], nb_epochs=1, batch_size=50, checkpoint_dir=copy)
    assert tree_bytes(copy) == before and not hasattr(est, "ensemble_")


def _flip_a_byte(path: Path) -> bytes:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return bytes(data)


def test_a_damaged_or_missing_member_is_set_aside_and_trained_again(trained, digits, tmp_path):
    """One bad member file must not block a resume forever: it is kept beside the others, renamed, with a warning,
    and trained again; the resumed ensemble equals the uninterrupted one bitwise."""
    reference, training, _ = trained
    copy = tmp_path / "training"
    shutil.copytree(training, copy)
    damaged = _flip_a_byte(copy / "member_00001.pt")
    (copy / "member_00002.pt").unlink()
    est = make()
    with pytest.warns(UserWarning) as record:
        est.fit(digits[0], digits[1], nb_epochs=1, batch_size=50, checkpoint_dir=copy)
    messages = [str(w.message) for w in record if "set aside" in str(w.message)]
    assert len(messages) == 2
    assert f"'{copy / 'member_00001.pt'}' fails its SHA-256 check" in messages[0]
    assert f"the damaged file is kept as '{copy / 'member_00001.pt.damaged'}'" in messages[0]
    assert f"'{copy / 'member_00002.pt'}' is listed in the manifest but missing" in messages[1]
    assert "member_00002 is set aside and trained again" in messages[1]
    assert (copy / "member_00001.pt.damaged").read_bytes() == damaged
    for k in range(3):
        assert states_equal(est.ensemble_.state_dict(k), reference.ensemble_.state_dict(k))
    store = EnsembleCheckpoint(copy)
    assert store.finished_members() == [0, 1, 2]
    for k in range(3):  # the new files pass their checks
        assert states_equal(store.load_member(k), reference.ensemble_.state_dict(k))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left to set aside
        warnings.filterwarnings("ignore", "CertSSBDEstimator with 3 member", UserWarning)  # a toy size, on purpose
        make().fit(digits[0], digits[1], nb_epochs=1, batch_size=50, checkpoint_dir=copy)


def test_a_saved_ensemble_with_a_damaged_member_is_still_refused(trained, tmp_path):
    """Setting aside is for resuming a training checkpoint; a saved ensemble cannot retrain anything."""
    target = tmp_path / "ens"
    trained[0].save_ensemble(target)
    _flip_a_byte(target / "member_00000.pt")
    with pytest.raises(CheckpointError, match="fails its SHA-256 check"):
        make().load_ensemble(target)


# ------------------------------------------------------------------ a fit's checkpoint_dir as an ensemble
@pytest.mark.parametrize("stream", [False, True])
def test_load_ensemble_reads_a_finished_fits_checkpoint_dir(trained, digits, stream):
    """The guide says the formats are the same: a fit's checkpoint loads like a saved ensemble, with the same seeds,
    sigmas, base model and certificates."""
    fitted, training, _ = trained
    est = make()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 'saved without its certification memory' warning: it never certified
        est.load_ensemble(training, stream=stream)
    assert est.test_noise_seeds_ == fitted.test_noise_seeds_ and est.random_state_ == fitted.random_state_
    assert est.train_noise_copies_ == fitted.train_noise_copies_ == 1
    np.testing.assert_array_equal(est.train_sigma_, fitted.train_sigma_)
    assert states_equal(est.base_model.state_dict(), fitted.base_model.state_dict())
    for k in range(3):
        assert states_equal(est.ensemble_.state_dict(k), fitted.ensemble_.state_dict(k))
    ours = est.certify(digits[2], return_details=True, update_memory=False)
    theirs = fitted.certify(digits[2], return_details=True, update_memory=False)
    np.testing.assert_array_equal(ours.votes, theirs.votes)
    np.testing.assert_array_equal(ours.radius, theirs.radius)


def test_load_ensemble_of_a_checkpoint_without_warmup_rebuilds_the_initial_base(digits, tmp_path):
    fitted = make(warmup_epochs=0, noise="fresh", sigma_steps=0)
    fitted.fit(digits[0], digits[1], nb_epochs=2, batch_size=50, checkpoint_dir=tmp_path / "ck")
    assert not EnsembleCheckpoint(tmp_path / "ck").has("base")
    est = make(warmup_epochs=0, noise="fresh", sigma_steps=0)
    est.load_ensemble(tmp_path / "ck")
    assert states_equal(est.base_model.state_dict(), fitted.base_model.state_dict())
    assert est.train_noise_copies_ == fitted.train_noise_copies_ == 2  # fresh noise: one copy per epoch


def test_load_ensemble_refuses_an_unfinished_fits_checkpoint_dir(trained, tmp_path):
    copy = tmp_path / "training"
    shutil.copytree(trained[1], copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    del manifest["entries"]["member_00002"]
    (copy / MANIFEST).write_text(json.dumps(manifest))
    est = make()
    with pytest.raises(ValueError, match=r"unfinished fit's checkpoint \(2 of nb_models=3 members\): resume it"):
        est.load_ensemble(copy)
    assert not hasattr(est, "ensemble_")


# --------------------------------------------------------------------- the training path of a resume
def test_a_resume_with_the_other_vectorize_is_refused_naming_both_values(trained, digits, tmp_path):
    copy = tmp_path / "training"
    shutil.copytree(trained[1], copy)
    (copy / "member_00002.pt").unlink()
    before, est = tree_bytes(copy), make(vectorize=False)
    with pytest.raises(CheckpointError, match=r"trained with vectorize=True, but this run has vectorize=False"):
        est.fit(digits[0], digits[1], nb_epochs=1, batch_size=50, checkpoint_dir=copy)
    assert tree_bytes(copy) == before and not hasattr(est, "ensemble_")


@pytest.mark.parametrize(
    "key, value", [("device", "cuda"), ("executor", "ray"), ("vectorize", False), ("torch_threads", 4)]
)
def test_the_training_path_is_recorded_and_checked(tmp_path, key, value):
    store = EnsembleCheckpoint(tmp_path / "ck", {"run": 1})
    path = {"vectorize": True, "device": "cpu", "executor": "local", "torch_threads": 1}
    store.check_training_path(path)
    store.save_member(0, tiny_state(0))
    assert json.loads((tmp_path / "ck" / MANIFEST).read_text())["training_path"] == path
    again = EnsembleCheckpoint(tmp_path / "ck", {"run": 1})
    again.check_training_path(path)  # the same: accepted
    with pytest.raises(CheckpointError, match=rf"trained with {key}='?{path[key]}'?, but this run has {key}='?{value}"):
        again.check_training_path({**path, key: value})


def test_a_resume_with_another_torch_thread_count_is_refused(trained, digits, tmp_path):
    """torch's CPU kernels round by thread count: members trained on 2 threads differ from those on 1."""
    copy = tmp_path / "training"
    shutil.copytree(trained[1], copy)
    (copy / "member_00002.pt").unlink()
    before, threads = tree_bytes(copy), torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(
            CheckpointError, match=r"torch_threads=1, but this run has torch_threads=2.*set_num_threads\(1\)"
        ):
            make().fit(digits[0], digits[1], nb_epochs=1, batch_size=50, checkpoint_dir=copy)
    finally:
        torch.set_num_threads(threads)
    assert tree_bytes(copy) == before


def test_a_key_missing_from_the_record_is_taken_as_its_old_default(tmp_path, monkeypatch):
    store = EnsembleCheckpoint(tmp_path / "ck", {"run": 1})
    store.check_training_path({"vectorize": True})
    store.save_member(0, tiny_state(0))
    monkeypatch.setattr(checkpoint_module, "TRAINING_PATH_DEFAULTS", {"newer": "old-way"})
    again = EnsembleCheckpoint(tmp_path / "ck", {"run": 1})
    again.check_training_path({"vectorize": True, "newer": "old-way"})
    with pytest.raises(CheckpointError, match="trained with newer='old-way', but this run has newer='new-way'"):
        again.check_training_path({"vectorize": True, "newer": "new-way"})


def test_a_checkpoint_without_a_training_path_resumes_with_a_warning(trained, digits, tmp_path):
    """Checkpoints written before the record existed still resume (their config compares as before)."""
    copy = tmp_path / "training"
    shutil.copytree(trained[1], copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    del manifest["training_path"], manifest["entries"]["member_00002"]  # as if killed before member 2 was stored
    (copy / MANIFEST).write_text(json.dumps(manifest))
    (copy / "member_00002.pt").unlink()
    est = make()
    with pytest.warns(UserWarning, match="does not record how its members were trained"):
        est.fit(digits[0], digits[1], nb_epochs=1, batch_size=50, checkpoint_dir=copy)
    for k in range(3):
        assert states_equal(est.ensemble_.state_dict(k), trained[0].ensemble_.state_dict(k))
    recorded = json.loads((copy / MANIFEST).read_text())["training_path"]
    assert recorded == {"vectorize": True, "device": "cpu", "executor": "local", "torch_threads": 1}


def test_compile_leaves_the_trained_members_bitwise_unchanged(trained, digits, tmp_path, monkeypatch):
    """``compile`` is an option of the votes: training never sees it, so a resume may change it (it is not
    recorded). torch.compile raising here proves that fit never calls it. (``amp`` does reach training: it is
    recorded and a resume that changes it is refused, tests/test_amp_cpu.py.)"""

    def no_compile(*args, **kwargs):
        raise AssertionError("torch.compile called during fit")

    monkeypatch.setattr(torch, "compile", no_compile)
    copy = tmp_path / "training"
    shutil.copytree(trained[1], copy)
    (copy / "member_00001.pt").unlink()
    (copy / "member_00002.pt").unlink()
    est = make(compile=True)
    with pytest.warns(UserWarning, match="set aside"):
        est.fit(digits[0], digits[1], nb_epochs=1, batch_size=50, checkpoint_dir=copy)
    for k in range(3):
        assert states_equal(est.ensemble_.state_dict(k), trained[0].ensemble_.state_dict(k))


@pytest.mark.parametrize("container", ["torch.save", "raw pickle"])
def test_a_pickle_payload_with_a_forged_checksum_is_refused_without_running(trained, tmp_path, container):
    target = tmp_path / "ens"
    trained[0].save_ensemble(target)
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    if container == "torch.save":
        torch.save({"weight": MkdirOnLoad(marker)}, buffer)
    else:
        pickle.dump({"weight": MkdirOnLoad(marker)}, buffer, protocol=2)
    payload = buffer.getvalue()
    # control: the payload is live (a plain unpickling runs it)
    if container == "torch.save":
        torch.load(io.BytesIO(payload), weights_only=False)
    else:
        pickle.loads(payload)
    assert marker.is_dir()
    marker.rmdir()
    rewrite_entry(target, "member_00001", payload)
    est = make()
    weights = {k: v.clone() for k, v in est.base_model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"passes its checksum but is refused by torch.load\(weights_only=True\)"):
        est.load_ensemble(target)
    assert not marker.exists()
    assert not hasattr(est, "ensemble_")
    assert all(torch.equal(v, weights[k]) for k, v in est.base_model.state_dict().items())


def test_a_training_checkpoint_with_a_pickle_payload_is_refused_on_resume(trained, digits, tmp_path):
    import shutil

    copy = tmp_path / "training"
    shutil.copytree(trained[1], copy)
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save(MkdirOnLoad(marker), buffer)
    rewrite_entry(copy, "base", buffer.getvalue())
    with pytest.raises(CheckpointError, match=r"refused by torch.load\(weights_only=True\)"):
        make().fit(digits[0], digits[1], nb_epochs=1, batch_size=50, checkpoint_dir=copy)
    assert not marker.exists()


def test_a_member_that_is_not_a_state_dict_is_refused(trained, tmp_path):
    target = tmp_path / "ens"
    trained[0].save_ensemble(target)
    buffer = io.BytesIO()
    torch.save([torch.zeros(3)], buffer)  # loads fine with weights_only, but is no state_dict
    rewrite_entry(target, "member_00000", buffer.getvalue())
    with pytest.raises(CheckpointError, match=r"member_00000 is not a state_dict of tensors"):
        make().load_ensemble(target)


@pytest.mark.parametrize(
    "entry, match",
    [
        ({"file": "../outside.pt", "sha256": "0" * 64}, r"entry 'member_00000' -> .* is not a plain file"),
        ({"file": "/etc/passwd", "sha256": "0" * 64}, r"is not a plain file in the directory"),
        ({"file": MANIFEST, "sha256": "0" * 64}, r"is not a plain file in the directory"),
        ({"file": "member_00000.pt", "sha256": "abc"}, r"entry 'member_00000' has sha256 'abc'"),
        ({"file": "member_00000.pt"}, r"is not a plain file in the directory"),
    ],
)
def test_a_manifest_pointing_outside_the_directory_is_refused(trained, tmp_path, entry, match):
    target = tmp_path / "ens"
    trained[0].save_ensemble(target)
    manifest = json.loads((target / MANIFEST).read_text())
    manifest["entries"]["member_00000"] = entry
    (target / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=match):
        make().load_ensemble(target)


def test_a_training_manifest_of_another_version_is_refused_on_resume(trained, digits, tmp_path):
    import shutil

    copy = tmp_path / "training"
    shutil.copytree(trained[1], copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["format_version"] = 0
    (copy / MANIFEST).write_text(json.dumps(manifest))
    before = tree_bytes(copy)
    with pytest.raises(CheckpointError, match=r"has format_version 0; .* reads format_version 1"):
        make().fit(digits[0], digits[1], nb_epochs=1, batch_size=50, checkpoint_dir=copy)
    assert tree_bytes(copy) == before


def test_a_checkpoint_from_another_torch_version_resumes_with_a_warning(tmp_path, caplog):
    store = EnsembleCheckpoint(tmp_path / "ck", {"seed": 1})
    store.save_member(0, tiny_state(0))
    manifest = json.loads((tmp_path / "ck" / MANIFEST).read_text())
    manifest["torch_version"] = "1.0.0"
    (tmp_path / "ck" / MANIFEST).write_text(json.dumps(manifest))
    with caplog.at_level("WARNING", logger="art_certssbd.checkpoint"):
        assert EnsembleCheckpoint(tmp_path / "ck", {"seed": 1}).finished_members() == [0]
    assert "written with torch 1.0.0" in caplog.text


def test_config_is_compared_after_the_json_round_trip(tmp_path):
    EnsembleCheckpoint(tmp_path / "ck", {"shape": (1, 8, 8), "seed": np.int64(4), "s": np.float32(0.5)}).save(
        "base", tiny_state(0)
    )
    EnsembleCheckpoint(tmp_path / "ck", {"shape": [1, 8, 8], "seed": 4, "s": 0.5})  # the same config
    with pytest.raises(CheckpointError, match=r"written with seed=4, but this run has seed=5"):
        EnsembleCheckpoint(tmp_path / "ck", {"shape": [1, 8, 8], "seed": 5, "s": 0.5})
    with pytest.raises(CheckpointError, match=r"config must be JSON-serialisable with finite numbers"):
        EnsembleCheckpoint(tmp_path / "other", {"scale": float("nan")})
    with pytest.raises(ValueError, match=r"name must be a plain file-name stem .*got '../x'"):
        EnsembleCheckpoint(tmp_path / "ck").save("../x", tiny_state(0))


# --------------------------------------------------------------------------------------- certification memory
def _memory() -> CertificationMemory:
    rng = np.random.default_rng(0)
    memory = CertificationMemory()
    memory.update(rng.normal(size=(20, 4)), rng.integers(0, 3, 20), rng.uniform(0.1, 1, 20), sigma=0.5)
    return memory


def test_memory_file_holds_plain_arrays_only(tmp_path):
    _memory().save(tmp_path / "memory.npz")
    with np.load(tmp_path / "memory.npz", allow_pickle=False) as data:
        assert str(data["format"]) == "art-certssbd/certification-memory" and int(data["format_version"]) == 2
        assert all(data[name].dtype != object for name in data.files)


def test_memory_save_crash_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "memory.npz"
    CertificationMemory().save(path)
    before = path.read_bytes()

    def partial_savez(handle, **arrays):
        handle.write(b"PK\x03\x04 half an archive")
        raise Crash("killed while saving the memory")

    monkeypatch.setattr(memory_module.np, "savez", partial_savez)
    with pytest.raises(Crash):
        _memory().save(path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["memory.npz"]
    assert len(CertificationMemory.load(path)) == 0


def test_memory_file_with_a_flipped_byte_is_refused_by_its_crc(tmp_path):
    path = tmp_path / "memory.npz"
    _memory().save(path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("radii.npy")
    data[info.header_offset + 30 + len(info.filename) + len(info.extra) + info.file_size - 3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"is not a CertificationMemory file: Bad CRC-32 for file 'radii.npy'"):
        CertificationMemory.load(path)


def test_memory_file_with_a_pickle_payload_is_refused_without_running(tmp_path):
    path, marker = tmp_path / "memory.npz", tmp_path / "pwned"
    _memory().save(path)
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["centers"] = np.array([MkdirOnLoad(marker)], dtype=object)  # a valid archive, CRCs and all
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"Object arrays cannot be loaded when allow_pickle=False"):
        CertificationMemory.load(path)
    assert not marker.exists()


# ------------------------------------------------------------------------ the memory saved with the ensemble
MEMORY_FIELDS = ("centers", "labels", "radii", "radii_conservative", "sigmas")


@pytest.fixture(scope="module")
def remembering():
    """A fitted estimator that certifies some inputs (trained longer than ``trained``, alpha 0.5: three members can
    certify), and probes: inputs it certifies, and others."""
    x_train, y_train, x_test, _ = load_digits(random_state=0)
    est = make(alpha=0.5)
    est.fit(x_train[:200], y_train[:200], nb_epochs=3, batch_size=25)
    return est, x_test[:12]


def certified(remembering) -> CertSSBDEstimator:
    """A copy of ``remembering`` after certifying a few inputs (so its memory holds regions)."""
    est = copy.deepcopy(remembering[0])
    est.certify(remembering[1][:6])
    assert len(est.memory_) > 0
    return est


def assert_memories_equal(a: CertificationMemory, b: CertificationMemory) -> None:
    assert len(a) == len(b)
    for name in MEMORY_FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_the_memory_is_saved_and_restored_with_the_ensemble(remembering, tmp_path):
    # Issue 10 item 6: on 477d0a2 save_ensemble dropped memory_ and load_ensemble started an empty one.
    est = certified(remembering)
    est.save_ensemble(tmp_path / "ens")
    assert EnsembleCheckpoint.open(tmp_path / "ens").has("memory")
    loaded = make(alpha=0.5)
    loaded.load_ensemble(tmp_path / "ens")
    assert_memories_equal(loaded.memory_, est.memory_)
    # Later certificates are those of the estimator that was never reloaded, memory and all.
    probes = np.concatenate([remembering[1][3:], remembering[1][:4] + 0.01]).clip(0, 1)
    a = est.certify(probes, return_details=True)
    b = loaded.certify(probes, return_details=True)
    for name in ("pred", "radius", "radius_conservative", "pred_before_memory", "votes"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert_memories_equal(loaded.memory_, est.memory_)


def test_an_ensemble_saved_before_memories_were_saved_loads_an_empty_one_with_a_warning(remembering, tmp_path):
    est = certified(remembering)
    est.save_ensemble(tmp_path / "ens")
    manifest = json.loads((tmp_path / "ens" / MANIFEST).read_text())
    (tmp_path / "ens" / manifest["entries"].pop("memory")["file"]).unlink()  # the layout of 477d0a2's saves
    (tmp_path / "ens" / MANIFEST).write_text(json.dumps(manifest))
    loaded = make()
    with pytest.warns(UserWarning, match=r"saved without its certification memory .* restarts from an empty memory"):
        loaded.load_ensemble(tmp_path / "ens")
    assert len(loaded.memory_) == 0
    without = make(use_memory=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        without.load_ensemble(tmp_path / "ens")  # nothing is lost when the memory is off
    assert without.memory_ is None


def test_a_saved_memory_is_ignored_with_use_memory_off_and_an_estimator_without_one_saves_an_empty_one(
    remembering, tmp_path
):
    est = certified(remembering)
    est.save_ensemble(tmp_path / "ens")
    off = make(use_memory=False)
    off.load_ensemble(tmp_path / "ens")
    assert off.memory_ is None
    off.save_ensemble(tmp_path / "off")
    assert len(CertificationMemory.from_state_dict(EnsembleCheckpoint.open(tmp_path / "off").load("memory"))) == 0


def test_a_bad_saved_memory_is_refused_and_leaves_the_estimator_as_it_was(remembering, tmp_path):
    est = certified(remembering)
    est.save_ensemble(tmp_path / "ens")
    state = EnsembleCheckpoint.open(tmp_path / "ens").load("memory")
    cases = [
        ({**state, "centers": state["centers"][:, :5]}, r"the saved memory holds centers of 5 features, not 64"),
        ({**state, "radii": -state["radii"]}, r"the saved memory is not a certification memory: non-finite centers"),
        ({**state, "format_version": torch.tensor(7)}, r"not a certification memory: format version 7"),
        ({k: v for k, v in state.items() if k != "sigmas"}, r"not a certification memory: missing fields \['sigmas'\]"),
        (
            {**state, "radii_conservative": state["radii"] * 2},
            r"not a certification memory: conservative radii outside \[0, radius\]",
        ),
    ]
    for i, (bad, match) in enumerate(cases):
        target = tmp_path / f"bad{i}"
        shutil.copytree(tmp_path / "ens", target)
        buffer = io.BytesIO()
        torch.save(bad, buffer)
        rewrite_entry(target, "memory", buffer.getvalue())
        fresh = make()
        with pytest.raises(CheckpointError, match=match):
            fresh.load_ensemble(target)
        assert not hasattr(fresh, "ensemble_")
    damaged = tmp_path / "bad0" / "memory.pt"
    damaged.write_bytes(damaged.read_bytes()[:-20])
    with pytest.raises(CheckpointError, match=r"memory.pt' fails its SHA-256 check"):
        make().load_ensemble(tmp_path / "bad0")


def test_atomic_write_gives_the_file_ordinary_permissions(tmp_path):
    """A file written atomically is readable like one written by ``open`` (0o666 less the umask), not the temporary
    file's private 0o600."""
    old = os.umask(0o022)
    try:
        _io.atomic_write(tmp_path / "results.json", lambda handle: handle.write("{}"), mode="w")
    finally:
        os.umask(old)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o644
