"""The fitted record on disk (the checkpoint format, kind ``"ensemble"``): :func:`save_record` writes a
:class:`~art_certssbd.fitted.FittedEnsemble` with its base model, :func:`load_record` reads one back (or a finished
fit's checkpoint, kind ``"training"``) through the record's one constructor.

The storage-update memory is part of the certificate's state and travels with the ensemble (entry ``"memory"``,
:meth:`CertificationMemory.state_dict`); a save written before that entry existed loads with an empty memory and a
warning. A save written before the training noise copies were recorded loads for ``noise="fixed"`` (one copy) and is
refused for ``noise="fresh"``.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from art_certssbd.checkpoint import CheckpointError, EnsembleCheckpoint
from art_certssbd.ensemble import StackedEnsemble
from art_certssbd.fitted import FittedEnsemble
from art_certssbd.memory import CertificationMemory
from art_certssbd.noise import derive_seed
from art_certssbd.pipeline import BASE_MEMBER
from art_certssbd.streaming import SavedEnsemble, load_block
from art_certssbd.training import init_member


def _as_saved(store: EnsembleCheckpoint, directory) -> dict:
    """The config of a saved ensemble for a fit's training checkpoint: what ``fit`` derives from its own config (the
    test-noise seeds are the record's default, derived from ``random_state``)."""
    config = store.config
    nb_models, members = config.get("nb_models"), store.finished_members()
    if len(members) != nb_models or not store.has("train_sigma"):
        raise ValueError(
            f"{str(directory)!r} is an unfinished fit's checkpoint ({len(members)} of nb_models={nb_models} members"
            f"{'' if store.has('train_sigma') else ', no training sigmas yet'}): resume it with "
            "fit(..., checkpoint_dir=...) first"
        )
    return {
        **config,
        "grown": False,  # a fit grown by a rule stops short of nb_models and is refused above
        "train_noise_copies": config.get("nb_epochs") if config.get("noise") == "fresh" else 1,
    }


def _initial_base(model: torch.nn.Module, seed: int) -> dict:
    """The base model of a fit without warm-up (not stored: its initial weights, from the run's seed)."""
    return init_member(model, derive_seed(seed, "init", BASE_MEMBER)).state_dict()


def save_record(directory: str | os.PathLike, record: FittedEnsemble, base_state: dict, *, nb_classes: int,
                input_shape, scale: float) -> None:  # fmt: skip
    """Write ``record`` and the base model's weights to ``directory`` all at once (an earlier save there is replaced
    only once the new one is complete); ``nb_classes``, ``input_shape`` and ``scale`` are checked on load."""
    config = {
        "nb_models": record.nb_models,  # fewer than nb_models when a growth rule stopped it
        "grown": record.growth_history is not None,
        "nb_classes": nb_classes,
        "input_shape": list(input_shape),
        "scale": scale,
        "random_state": record.random_state,
        "train_noise_copies": record.train_noise_copies,  # noise="fresh": nb_epochs
    }
    with EnsembleCheckpoint.staged(directory, config, kind="ensemble") as store:
        store.save("base", base_state)
        store.save("train_sigma", torch.from_numpy(record.train_sigma))
        store.save("test_noise_seeds", torch.tensor(record.test_noise_seeds, dtype=torch.int64))
        memory = record.memory
        store.save("memory", (CertificationMemory() if memory is None else memory).state_dict())
        for k in range(record.nb_models):
            store.save_member(k, record.members.state_dict(k))


def load_record(directory: str | os.PathLike, template: torch.nn.Module, *, nb_classes: int, input_shape,
                scale: float, nb_models: int, bound: str, noise: str, use_memory: bool, memory_budget: int, device,
                stream: bool = False) -> tuple[dict, FittedEnsemble]:  # fmt: skip
    """Read a save (or a finished fit's checkpoint) for an estimator of these parameters: ``(base_state, record)``.

    :param template: A module of the members' architecture.
    :param stream: Keep the members on disk (a :class:`~art_certssbd.streaming.SavedEnsemble` reading blocks of at
           most ``memory_budget`` bytes).
    :raises ValueError: A save of other parameters, an unfinished checkpoint, a grown ensemble with a bound other
        than ``"anytime"``, or a ``noise="fresh"`` save without its training noise copies.
    :raises CheckpointError: A damaged or malformed save.
    """
    store = EnsembleCheckpoint.open(directory, kind=None)
    training = store.kind == "training"
    seed = store.config.get("random_state")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise CheckpointError(f"{str(directory)!r}: random_state {seed!r} is not an integer")
    config = _as_saved(store, directory) if training else store.config
    if config.get("nb_classes") != nb_classes or list(config.get("input_shape", [])) != list(input_shape):
        raise ValueError(
            f"{str(directory)!r} holds an ensemble for nb_classes={config.get('nb_classes')}, "
            f"input_shape={config.get('input_shape')}, not {nb_classes}, {input_shape}"
        )
    if config.get("scale") != scale:  # the members were trained with noise at the stored scale
        raise ValueError(
            f"{str(directory)!r} holds an ensemble trained at scale={config.get('scale')!r}, not {scale!r}"
        )
    members = store.finished_members()
    grown = bool(config.get("grown", False))  # a growth rule stopped it: up to nb_models members
    size_ok = len(members) <= nb_models if grown else len(members) == nb_models
    if not members or members != list(range(len(members))) or not size_ok:
        raise ValueError(f"{str(directory)!r} holds {len(members)} members, nb_models is {nb_models}")
    if grown and bound != "anytime":
        raise ValueError(
            f"{str(directory)!r} holds {len(members)} of nb_models={nb_models} members, an ensemble grown "
            "until a stopping rule (fit with growth=...): its size depends on its votes, so only bound='anytime' "
            f"certifies it, got bound={bound!r}"
        )
    if stream:  # one member loads, to refuse another architecture now; the others are read when they vote
        load_block(directory, template, 0, 1)
        ensemble = SavedEnsemble(directory, template, memory_budget)
    else:
        ensemble = StackedEnsemble.from_state_dicts(template, [store.load_member(k) for k in members])
    base = store.load("base") if store.has("base") else _initial_base(template, seed)
    StackedEnsemble.from_state_dicts(template, [base])  # refuses a base model of another architecture
    train_sigma = store.load("train_sigma")
    seeds = None if training else store.load("test_noise_seeds")  # a fit's checkpoint: the record derives them
    if not isinstance(train_sigma, torch.Tensor) or train_sigma.dim() != 1 or not bool((train_sigma > 0).all()):
        raise CheckpointError(f"{str(directory)!r}: train_sigma is not a 1-D tensor of positive sigmas")
    if seeds is not None and (
        not isinstance(seeds, torch.Tensor) or tuple(seeds.shape) != (len(members),) or seeds.is_floating_point()
    ):
        raise CheckpointError(f"{str(directory)!r}: test_noise_seeds is not {len(members)} integer seeds")
    memory = _load_memory(store, directory, input_shape) if store.has("memory") else None
    copies = config.get("train_noise_copies")
    if copies is None:  # a save written before the count was recorded: known only for noise="fixed"
        if noise != "fixed":
            raise ValueError(
                f"{str(directory)!r} holds an ensemble trained with noise={noise!r}, and how many noisy "
                "copies of each training sample a member saw (nb_epochs) is not recorded in it: the certified "
                "radius depends on it (it shrinks by sqrt(nb_epochs)), so it cannot be loaded; refit it"
            )
        copies = 1
    record = FittedEnsemble(
        ensemble.to(device),
        train_sigma.numpy(),
        random_state=seed,
        train_noise_copies=copies,
        test_noise_seeds=None if seeds is None else [int(s) for s in seeds],
        growth_history=[] if grown else None,  # (the history itself is not saved; [] marks a grown ensemble)
        memory=(CertificationMemory() if memory is None else memory) if use_memory else None,
    )
    if use_memory and not store.has("memory") and not training:  # a fit's checkpoint never certified
        warnings.warn(
            f"{str(directory)!r} was saved without its certification memory (before art-certssbd saved it): "
            "the storage-update step restarts from an empty memory, so certificates issued before that save are "
            "not taken into account",
            stacklevel=3,
        )
    return base, record


def _load_memory(store: EnsembleCheckpoint, directory, input_shape) -> CertificationMemory:
    """The saved memory, checked (format, shapes, radii; centers of ``input_shape``)."""
    try:
        memory = CertificationMemory.from_state_dict(store.load("memory"))
    except CheckpointError:
        raise
    except ValueError as err:
        raise CheckpointError(f"{str(directory)!r}: the saved memory is not a certification memory: {err}") from err
    features = int(np.prod(input_shape))
    if memory.dim is not None and memory.dim != features:
        raise CheckpointError(
            f"{str(directory)!r}: the saved memory holds centers of {memory.dim} features, not {features}"
        )
    return memory
