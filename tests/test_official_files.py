"""Official Cert-SSB checkpoints and sigma files: safe loading, logits, seeds, numeric ordering, refusals."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil

import numpy as np
import pytest
import torch

from art_certssbd.models import BinaryLogitAdapter, MnistCNN
from art_certssbd.official import (
    load_official_checkpoint,
    load_official_ensemble,
    load_sigma_file,
    official_model_seed,
    official_test_noise,
)

NAMES = [f"smoothed_{k}.model" for k in range(4)]


@pytest.fixture
def probes(probe_inputs):
    return torch.from_numpy(probe_inputs)


def test_checkpoints_give_expected_logits(reference_dir, expected, probes):
    model = MnistCNN(nb_classes=1).eval()
    for name in NAMES:
        state = load_official_checkpoint(reference_dir / name)
        model.load_state_dict(state)
        with torch.no_grad():
            logits = model(probes).squeeze(1)
        np.testing.assert_allclose(logits.numpy(), expected[name]["logits"], atol=1e-5)


def test_seeds_match_sha256_mod_2_32(reference_dir, expected):
    for name in NAMES:
        seed = official_model_seed(reference_dir / name)
        assert seed == expected[name]["sha256_mod_2_32"]
        digest = hashlib.sha256((reference_dir / name).read_bytes()).digest()
        assert seed == int.from_bytes(digest, "big") % 2**32


def test_ensemble_loads_into_adapter(reference_dir, expected, probes):
    template, states, seeds, paths = load_official_ensemble(reference_dir)
    assert isinstance(template, BinaryLogitAdapter) and not template.training
    assert [p.name for p in paths] == NAMES
    assert seeds == [expected[name]["sha256_mod_2_32"] for name in NAMES]
    params = {key: torch.stack([s[key] for s in states]) for key in states[0]}
    logits = torch.vmap(lambda p, x: torch.func.functional_call(template, p, (x,)), in_dims=(0, None))(params, probes)
    assert logits.shape == (4, len(probes), 2)
    want = torch.tensor([expected[name]["logits"] for name in NAMES])
    torch.testing.assert_close(logits[..., 1], want, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.softmax(logits, -1)[..., 1], torch.sigmoid(want), atol=1e-6, rtol=0)
    template_raw, raw_states, _, _ = load_official_ensemble(reference_dir, nb_models=2, nb_classes=1)
    assert isinstance(template_raw, MnistCNN) and len(raw_states) == 2 and "conv1.weight" in raw_states[0]


def test_sigma_file_matches_expected(reference_dir, expected):
    sigma = load_sigma_file(reference_dir / "mnist_onepixel_sigma0.12.pth")
    figures = expected["sigma_file"]
    assert sigma.dtype == np.float32 and list(sigma.shape) == figures["shape"]
    np.testing.assert_allclose([sigma.min(), sigma.mean(), sigma.max()], [figures[k] for k in ("min", "mean", "max")])
    np.testing.assert_allclose(sigma[:5], figures["first5"])


def test_numeric_sort_and_nb_models(reference_dir, tmp_path):
    for k, source in ((10, "smoothed_0.model"), (2, "smoothed_1.model"), (0, "smoothed_2.model")):
        shutil.copyfile(reference_dir / source, tmp_path / f"smoothed_{k}.model")
    (tmp_path / "smoothed_x.model").write_text("ignored")
    _, _, seeds, paths = load_official_ensemble(tmp_path)
    assert [p.name for p in paths] == ["smoothed_0.model", "smoothed_2.model", "smoothed_10.model"]
    assert seeds[2] == official_model_seed(reference_dir / "smoothed_0.model")
    _, states, _, paths = load_official_ensemble(tmp_path, nb_models=2)
    assert len(states) == 2 and paths[-1].name == "smoothed_2.model"
    with pytest.raises(ValueError, match="nb_models=4 but only 3"):
        load_official_ensemble(tmp_path, nb_models=4)
    with pytest.raises(ValueError, match="nb_models"):
        load_official_ensemble(tmp_path, nb_models=0)
    with pytest.raises(ValueError, match="nb_classes"):
        load_official_ensemble(tmp_path, nb_classes=10)


def test_truncated_checkpoint_is_refused(reference_dir, tmp_path):
    broken = tmp_path / "smoothed_0.model"
    broken.write_bytes((reference_dir / "smoothed_0.model").read_bytes()[:1000])
    with pytest.raises(ValueError, match="smoothed_0.model"):
        load_official_checkpoint(broken)
    with pytest.raises(ValueError, match="smoothed_0.model"):
        load_official_ensemble(tmp_path)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.model"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _Exploit(marker)}, path)
    with pytest.raises(ValueError, match="evil.model"):
        load_official_checkpoint(path)
    with pytest.raises(ValueError, match="evil.model"):
        load_sigma_file(path)
    assert not marker.exists()


def test_wrong_content_is_refused(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.model")
    with pytest.raises(ValueError, match="not a state_dict"):
        load_official_checkpoint(tmp_path / "list.model")
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "smoothed_0.model")
    with pytest.raises(ValueError, match="does not fit the official MNIST CNN"):
        load_official_ensemble(tmp_path)
    torch.save({"sigma": torch.ones(3)}, tmp_path / "sigma.pth")
    with pytest.raises(ValueError, match="does not hold a tensor"):
        load_sigma_file(tmp_path / "sigma.pth")
    torch.save(torch.tensor([0.1, -0.2]), tmp_path / "negative.pth")
    with pytest.raises(ValueError, match="non-positive"):
        load_sigma_file(tmp_path / "negative.pth")


def test_missing_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        load_official_ensemble(tmp_path / "no_such_dir")
    with pytest.raises(ValueError, match="no smoothed_"):
        load_official_ensemble(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.model"):
        load_official_checkpoint(tmp_path / "missing.model")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_sigma_file(tmp_path / "missing.pth")


def test_official_test_noise_reproduces_numpy_fix_pert(reference_dir):
    path = reference_dir / "smoothed_0.model"
    seed = official_model_seed(path)
    saved = np.random.get_state()
    try:  # the official 224 px fix_pert, line for line
        rand = np.random.randint(2**32 - 1)
        np.random.seed(seed)
        official = torch.FloatTensor(np.random.randn(1, 3, 16, 16)) * 0.25
        np.random.seed(rand)
    finally:
        np.random.set_state(saved)
    before = np.random.get_state()[1].copy()
    noise = official_test_noise(path, (1, 3, 16, 16), 0.25)
    assert noise.dtype == torch.float32 and torch.equal(noise, official)
    assert np.array_equal(np.random.get_state()[1], before)
    assert torch.equal(official_test_noise(path, (1, 3, 16, 16), 0.25), noise)
    assert not torch.equal(official_test_noise(reference_dir / "smoothed_1.model", (1, 3, 16, 16), 0.25), noise)
    with pytest.raises(ValueError, match="sigma"):
        official_test_noise(path, (1, 1, 28, 28), -1.0)
    with pytest.raises(ValueError, match="shape"):
        official_test_noise(path, (1, 0, 28), 0.1)
