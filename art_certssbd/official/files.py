"""Official Cert-SSB / RAB checkpoints and sigma files: safe loading, seeds, and the official evaluation pipeline.

Everything is loaded with ``torch.load(..., map_location="cpu", weights_only=True)``: a file that would need
arbitrary unpickling is refused, never executed.

* :func:`load_official_checkpoint`, :func:`load_official_ensemble`, :func:`load_sigma_file`: the files;
* :func:`official_model_seed`, :func:`official_test_noise`: the official per-model seed and test noise;
* the official MNIST ensemble as a fitted estimator: :meth:`art_certssbd.CertSSBDEstimator.from_official` (its
  ``certify`` is our sound default);
* :func:`~art_certssbd.official.evaluation.certify_reference` and
  :func:`~art_certssbd.official.evaluation.official_certified_accuracy`: the official evaluation, reproduced, as a
  preset beside the default.

This module reads files only: it imports no estimator.

**The official evaluation pipeline** (NcepuQiaoTing/Cert-SSB, commit 959c20c, ``eval.py``; RAB's
AI-secure/Robustness-Against-Backdoor-Attacks ``eval.py`` / ``utils.py`` is the same loop):

1. ``certificate_over_dataset`` (eval.py l. 90-116) loops over ``smoothed_0.model`` ... ``smoothed_{N_m-1}.model``
   (numeric names, loaded one by one), computes ``hashval = int(sha256(file bytes).hexdigest(), 16) % 2**32``
   (l. 96), calls ``model.fix_pert(sigma=sigma0, hash_num=hashval)`` (l. 97) and scores every test image in file
   order (DataLoader without shuffle, dataloader.py l. 28-29) as ``p = sigmoid(logit)``, stacked as ``[1-p, p]``.
2. **Soft votes**: ``gx`` is the mean of those scores over models (l. 108); ``pA = max``, ``pB = runner-up``,
   prediction = argmax. No hard vote counts.
3. **Hoeffding with n = 1000 hard-coded** (l. 39): ``pA_lower = max(1e-8, pA - sqrt(ln(1/alpha) / 2000))``,
   ``pB_upper = min(1 - 1e-8, pB + same)`` whatever ``N_m`` is (200 for the 224 px models). RAB's first commit
   (ac0278d) had the same line marked ``#TODO``; RAB's HEAD uses ``N_m``.
4. **Radius** ``0.5 * sigma_i * (Phi^-1(pA_lower) - Phi^-1(pB_upper))`` (l. 45) with ``sigma_i`` the stored
   per-test-sample sigma from ``sigma/{dataset}/{dataset}_{shape}_sigma{sigma0}.pth`` (l. 34-36), while the test
   noise in step 1 was drawn at ``sigma0``. There is no abstain: a negative radius simply fails ``radius > r``;
   certified accuracy at ``r`` counts ``radius > r`` (strict) and ``prediction == label``.
5. The triggered test set (``Cert wm acc``) relabels *every* test image to the target class 0 (dataloader.py
   ``test_label_wm=True``), so that row is "certified and predicted 0", and it reuses the clean images' sigmas.

Where this differs from ``method.md`` (our defaults): we use hard votes with Clopper-Pearson (or Hoeffding with the
true ``n``), draw the test noise at ``sigma_x`` (the sigma that enters the radius), abstain when
``pA_lower <= pB_upper``, and seed the noise explicitly.

**Test-noise seeding** (Cert-SSB ``modelloader.py`` l. 34-41, 80-87, 177-184; RAB ``mnist_cnn_model.py``
l. 23-30, ``imagenet_dnn_model.py`` l. 22-29): ``fix_pert`` draws *one* noise tensor of shape ``(1, C, H, W)``
per model, shared (broadcast) by every test image. It saves numpy's global state, calls
``np.random.seed(hashval)`` and then

- MNIST and CIFAR: ``torch.FloatTensor(1, C, H, W).normal_(0, sigma)``, which uses *torch's* global CPU generator;
  the numpy seed has no effect. Torch seeds that generator non-deterministically at start-up (``CPUGeneratorImpl``:
  ``getNonDeterministicRandom()``) and the eval script never calls ``torch.manual_seed``, so the official MNIST/CIFAR
  test noise is unseeded and cannot be reproduced (hence "expect differences in the third decimal").
- 224 px (ImageNet-style): ``torch.FloatTensor(np.random.randn(1, 3, 224, 224)) * sigma``, which *is* determined by
  the hash: numpy's legacy MT19937 seeded with ``hashval``, float64 normals cast to float32, times ``sigma``.
  :func:`official_test_noise` reproduces exactly this (and, for MNIST/CIFAR shapes, what the hash seeding was
  evidently meant to do, not what those official runs drew).
"""

from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from art_certssbd._io import sha256_file
from art_certssbd._validation import existing_file
from art_certssbd.models import BinaryLogitAdapter, MnistCNN

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^smoothed_(\d+)\.model$")


def _safe_load(path: Path, what: str) -> object:
    """``torch.load`` restricted to tensors and plain containers; any failure becomes a ValueError naming ``path``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... depending on the damage
        raise ValueError(
            f"cannot load {what} {path} safely (weights_only=True): {type(exc).__name__}: {exc}. The file is "
            "truncated, not a torch file, or holds objects other than tensors; no code in it was run."
        ) from exc


def load_official_checkpoint(path: str | os.PathLike) -> OrderedDict[str, torch.Tensor]:
    """Load an official ``smoothed_{k}.model`` (a state_dict written by ``torch.save``) onto the CPU, without
    unpickling code.

    :param path: Checkpoint file.
    :return: The state dict (parameter name -> CPU tensor).
    :raises FileNotFoundError: ``path`` does not exist.
    :raises ValueError: The file is truncated, not a torch file, needs arbitrary unpickling, or is not a mapping of
        names to tensors.
    """
    path = existing_file(path, "official checkpoint")
    state = _safe_load(path, "official checkpoint")
    if not isinstance(state, dict) or not state:
        raise ValueError(f"official checkpoint {path} is not a state_dict (got {type(state).__name__})")
    bad = [key for key, value in state.items() if not isinstance(key, str) or not isinstance(value, torch.Tensor)]
    if bad:
        raise ValueError(f"official checkpoint {path} is not a state_dict of tensors: bad entries {bad[:5]}")
    return OrderedDict((key, value.detach()) for key, value in state.items())


def official_model_seed(path: str | os.PathLike) -> int:
    """The per-model seed of RAB and Cert-SSB: ``int(sha256(file bytes).hexdigest(), 16) % 2**32``.

    Equal to ``int.from_bytes(sha256(...).digest(), "big") % 2**32`` (the digest's last four bytes). The official
    code passes it to ``np.random.seed`` before drawing the model's test noise; see the module docstring for why
    that only fixes the noise of the 224 px models.

    :param path: Checkpoint file.
    :return: Seed in ``[0, 2**32)``.
    """
    path = existing_file(path, "official checkpoint")
    return int(sha256_file(path), 16) % (2**32)


def official_test_noise(
    path: str | os.PathLike, shape: tuple[int, ...] = (1, 1, 28, 28), sigma: float = 0.12
) -> torch.Tensor:
    """The hash-seeded test noise of the official ``fix_pert``: ``float32(RandomState(seed).randn(*shape)) * sigma``.

    Bit-exact for the official 224 px models (``shape=(1, 3, 224, 224)``), whose ``fix_pert`` draws with numpy
    after ``np.random.seed(seed)``. The official MNIST/CIFAR ``fix_pert`` draws from torch's unseeded global
    generator instead, so for those shapes this is the intended, reproducible version of the official noise, not
    the noise the official runs used. The global numpy state is not touched.

    :param path: Checkpoint file (its bytes give the seed, :func:`official_model_seed`).
    :param shape: Noise shape; the official code uses ``(1, C, H, W)``, broadcast over the test batch.
    :param sigma: Noise standard deviation (the official eval passes ``sigma0``).
    :return: A float32 CPU tensor of shape ``shape``.
    """
    if not isinstance(sigma, (int, float)) or isinstance(sigma, bool) or not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    shape = tuple(shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in shape):
        raise ValueError(f"shape must be a non-empty tuple of positive integers, got {shape!r}")
    normals = np.random.RandomState(official_model_seed(path)).randn(*shape)
    return torch.from_numpy(normals).float() * sigma


def _find_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for entry in directory.iterdir():
        match = CHECKPOINT_PATTERN.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def load_official_ensemble(
    directory: str | os.PathLike, nb_models: int | None = None, nb_classes: int = 2
) -> tuple[torch.nn.Module, list[OrderedDict[str, torch.Tensor]], list[int], list[Path]]:
    """Load the official MNIST ensemble ``smoothed_{k}.model``, sorted by ``k`` numerically.

    All state dicts are held in memory (about 1.1 MB each, 1.1 GB for the 1000 official models).

    :param directory: Folder holding ``smoothed_0.model``, ``smoothed_1.model``, ...
    :param nb_models: Load the first ``nb_models`` in numeric order (default: all).
    :param nb_classes: ``2``: template ``BinaryLogitAdapter(MnistCNN(nb_classes=1))`` and keys prefixed
        ``"model."`` (softmax = ``[1 - sigmoid, sigmoid]``); ``1``: template ``MnistCNN(nb_classes=1)`` with the
        official keys.
    :return: ``(template, state_dicts, seeds, paths)``: an eval-mode template module whose ``load_state_dict`` (or
        ``torch.func.functional_call``) accepts each state dict, the state dicts, the :func:`official_model_seed`
        of each file, and the files.
    """
    if nb_classes not in (1, 2):
        raise ValueError(f"nb_classes must be 1 or 2 for the official one-logit checkpoints, got {nb_classes!r}")
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"official checkpoint directory not found: {directory}")
    found = _find_checkpoints(directory)
    if not found:
        raise ValueError(f"no smoothed_{{k}}.model checkpoints in {directory}")
    if nb_models is not None:
        if isinstance(nb_models, bool) or not isinstance(nb_models, int) or nb_models < 1:
            raise ValueError(f"nb_models must be a positive integer or None, got {nb_models!r}")
        if nb_models > len(found):
            raise ValueError(f"nb_models={nb_models} but only {len(found)} checkpoints in {directory}")
        found = found[:nb_models]
    indices = [k for k, _ in found]
    if indices != list(range(len(indices))):
        logger.warning("checkpoint indices in %s are not 0..%d: %s...", directory, len(indices) - 1, indices[:10])

    inner = MnistCNN(nb_classes=1)
    template = BinaryLogitAdapter(inner) if nb_classes == 2 else inner
    prefix = "model." if nb_classes == 2 else ""
    expected = {key: value.shape for key, value in template.state_dict().items()}
    state_dicts, seeds, paths = [], [], []
    for _, path in found:
        state = OrderedDict((prefix + key, value) for key, value in load_official_checkpoint(path).items())
        shapes = {key: value.shape for key, value in state.items()}
        if shapes != expected:
            missing, unexpected = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
            wrong = sorted(k for k in set(expected) & set(shapes) if expected[k] != shapes[k])
            raise ValueError(
                f"checkpoint {path} does not fit the official MNIST CNN: missing {missing}, unexpected {unexpected}, "
                f"wrong shapes {wrong}"
            )
        state_dicts.append(state)
        seeds.append(official_model_seed(path))
        paths.append(path)
    logger.info("loaded %d official checkpoints from %s", len(paths), directory)
    return template.eval(), state_dicts, seeds, paths


def load_sigma_file(path: str | os.PathLike) -> np.ndarray:
    """Load an official per-test-sample sigma file (a tensor saved from CUDA with ``requires_grad=True``).

    ``weights_only=True`` accepts it (the tensor rebuild with ``requires_grad`` is on torch's allow-list) and
    ``map_location="cpu"`` removes the CUDA dependency of the official ``torch.load(sigma_path)``.

    :param path: ``.pth`` file, e.g. ``mnist_onepixel_sigma0.12.pth``.
    :return: float32 array of shape ``(N,)``, one sigma per test image in the test file's order.
    """
    path = existing_file(path, "sigma file")
    sigma = _safe_load(path, "sigma file")
    if not isinstance(sigma, torch.Tensor):
        raise ValueError(f"sigma file {path} does not hold a tensor (got {type(sigma).__name__})")
    if sigma.dim() == 0 or sigma.numel() != sigma.shape[0]:
        raise ValueError(f"sigma file {path} must hold one sigma per sample, got shape {tuple(sigma.shape)}")
    values = sigma.detach().cpu().reshape(-1).to(torch.float32).numpy()
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"sigma file {path} holds non-finite or non-positive sigmas (min {values.min()!r})")
    return values
