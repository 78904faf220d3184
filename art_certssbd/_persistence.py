"""Saving and loading a fitted smoothed ensemble (the checkpoint format, kind ``"ensemble"``): a mixin of the
estimator shell, so that :meth:`save_ensemble` / :meth:`load_ensemble` sit beside ART's ``save``.

The storage-update memory is part of the certificate's state and travels with the ensemble (entry ``"memory"``,
:meth:`CertificationMemory.state_dict`); a save written before that entry existed loads with an empty memory and a
warning.
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
    """The config of a saved ensemble for a fit's training checkpoint: what ``fit`` derives from its own config."""
    config = store.config
    seed, nb_models, members = config.get("random_state"), config.get("nb_models"), store.finished_members()
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise CheckpointError(f"{str(directory)!r}: random_state {seed!r} is not an integer")
    if len(members) != nb_models or not store.has("train_sigma"):
        raise ValueError(
            f"{str(directory)!r} is an unfinished fit's checkpoint ({len(members)} of nb_models={nb_models} members"
            f"{'' if store.has('train_sigma') else ', no training sigmas yet'}): resume it with "
            "fit(..., checkpoint_dir=...) first"
        )
    return {
        **config,
        "grown": False,  # a fit grown by a rule stops short of nb_models and is refused above
        "test_noise_seeds": torch.tensor([derive_seed(seed, "test_noise", k) for k in range(nb_models)]),
        "train_noise_copies": config.get("nb_epochs") if config.get("noise") == "fresh" else 1,
    }


def _initial_base(model: torch.nn.Module, seed: int) -> dict:
    """The base model of a fit without warm-up (not stored: its initial weights, from the run's seed)."""
    return init_member(model, derive_seed(seed, "init", BASE_MEMBER)).state_dict()


class PersistenceMixin:
    """``save``, ``save_ensemble`` and ``load_ensemble`` for :class:`~art_certssbd._shell._SmoothedEnsembleEstimator`:
    the record ``fitted_`` (:class:`~art_certssbd.fitted.FittedEnsemble`) to and from disk."""

    def save(self, filename: str, path: str | None = None) -> None:
        """Save the whole fitted ensemble (members, base model, sigmas, seeds) to the directory ``path/filename``
        with :meth:`save_ensemble`; ``path`` defaults to ART's ``config.ART_DATA_PATH``, as in ART. Load it back with
        ``estimator.load_ensemble(os.path.join(path, filename))`` on an estimator of the same parameters. (ART's
        ``PyTorchClassifier.save`` writes one network's ``state_dict``, which would lose the ensemble.)

        :param filename: Name of the directory to write.
        :param path: Folder to write it in (default ``art.config.ART_DATA_PATH``).
        """
        if path is None:
            from art import config

            path = config.ART_DATA_PATH
        self.save_ensemble(os.path.join(path, filename))

    def save_ensemble(self, directory: str | os.PathLike) -> None:
        """Write the fitted ensemble, base model, sigmas, seeds and the storage-update memory to ``directory`` (the
        checkpoint format, kind ``"ensemble"``, every entry checksummed) all at once: an earlier save in
        ``directory`` is replaced only once the new one is complete.

        The memory is saved as it is now (empty when ``use_memory=False``), so a reload continues the same sequence
        of stored regions. Two processes that load one save each continue with their own copy: the storage-update
        guarantee holds within each process's query order, not across them (memories are not merged), and if both
        save to the same directory the last complete save wins, atomically.
        """
        self._check_fitted()
        record = self.fitted_
        config = {
            "nb_models": record.nb_models,  # fewer than self.nb_models when a growth rule stopped it
            "grown": record.growth_history is not None,
            "nb_classes": self.nb_classes,
            "input_shape": list(self.input_shape),
            "scale": self.scale,
            "random_state": record.random_state,
            "train_noise_copies": record.train_noise_copies,  # noise="fresh": nb_epochs
        }
        with EnsembleCheckpoint.staged(directory, config, kind="ensemble") as store:
            store.save("base", self.base_model.state_dict())
            store.save("train_sigma", torch.from_numpy(record.train_sigma))
            store.save("test_noise_seeds", torch.tensor(record.test_noise_seeds, dtype=torch.int64))
            memory = record.memory
            store.save("memory", (CertificationMemory() if memory is None else memory).state_dict())
            for k in range(record.nb_models):
                store.save_member(k, record.members.state_dict(k))

    def load_ensemble(self, directory: str | os.PathLike, stream: bool = False) -> None:
        """Load an ensemble written by :meth:`save_ensemble`, or a finished fit's ``checkpoint_dir`` (the same
        format, kind ``"training"``: the test-noise seeds are derived from its ``random_state`` as ``fit`` derives
        them, and the memory starts empty), with checksums verified and ``weights_only`` loading; the estimator is
        changed only once everything has loaded. An unfinished ``checkpoint_dir`` is refused (resume it with
        ``fit(..., checkpoint_dir=...)``).

        With ``stream=True`` the members stay on disk: ``ensemble_`` is a
        :class:`~art_certssbd.streaming.SavedEnsemble` and every vote reads them in blocks of at most
        ``memory_budget`` bytes of weights (:func:`~art_certssbd.streaming.stream_votes`), with the same votes and
        certificates as the loaded ensemble, for ensembles larger than memory. The directory must stay in place.

        With ``use_memory=True`` the saved storage-update memory is restored, so later certificates are trimmed
        against every region certified before the save. A save without a memory entry (written before
        art-certssbd saved it) loads an empty memory, with a warning: certificates issued before that save are not
        remembered. With ``use_memory=False`` the saved memory is ignored (``memory_`` is ``None``).
        """
        store = EnsembleCheckpoint.open(directory, kind=None)
        training = store.kind == "training"
        config = _as_saved(store, directory) if training else store.config
        if config.get("nb_classes") != self.nb_classes or list(config.get("input_shape", [])) != list(self.input_shape):
            raise ValueError(
                f"{str(directory)!r} holds an ensemble for nb_classes={config.get('nb_classes')}, "
                f"input_shape={config.get('input_shape')}, not {self.nb_classes}, {self.input_shape}"
            )
        if config.get("scale") != self.scale:  # the members were trained with noise at the stored scale
            raise ValueError(
                f"{str(directory)!r} holds an ensemble trained at scale={config.get('scale')!r}, not {self.scale!r}"
            )
        members = store.finished_members()
        grown = bool(config.get("grown", False))  # a growth rule stopped it: up to nb_models members
        size_ok = len(members) <= self.nb_models if grown else len(members) == self.nb_models
        if not members or members != list(range(len(members))) or not size_ok:
            raise ValueError(f"{str(directory)!r} holds {len(members)} members, nb_models is {self.nb_models}")
        if grown and self.bound != "anytime":
            raise ValueError(
                f"{str(directory)!r} holds {len(members)} of nb_models={self.nb_models} members, an ensemble grown "
                "until a stopping rule (fit with growth=...): its size depends on its votes, so only bound='anytime' "
                f"certifies it, got bound={self.bound!r}"
            )
        if stream:  # one member loads, to refuse another architecture now; the others are read when they vote
            load_block(directory, self.base_model, 0, 1)
            ensemble = SavedEnsemble(directory, self.base_model, self.memory_budget)
        else:
            ensemble = StackedEnsemble.from_state_dicts(self.base_model, [store.load_member(k) for k in members])
        base = store.load("base") if store.has("base") else _initial_base(self.base_model, config["random_state"])
        StackedEnsemble.from_state_dicts(self.base_model, [base])  # refuses a base model of another architecture
        train_sigma = store.load("train_sigma")
        seeds = config["test_noise_seeds"] if training else store.load("test_noise_seeds")
        if not isinstance(train_sigma, torch.Tensor) or train_sigma.dim() != 1 or not bool((train_sigma > 0).all()):
            raise CheckpointError(f"{str(directory)!r}: train_sigma is not a 1-D tensor of positive sigmas")
        if not isinstance(seeds, torch.Tensor) or tuple(seeds.shape) != (len(members),) or seeds.is_floating_point():
            raise CheckpointError(f"{str(directory)!r}: test_noise_seeds is not {len(members)} integer seeds")
        if isinstance(config.get("random_state"), bool) or not isinstance(config.get("random_state"), int):
            raise CheckpointError(f"{str(directory)!r}: random_state {config.get('random_state')!r} is not an integer")
        memory = self._load_memory(store, directory) if store.has("memory") else None
        copies = config.get("train_noise_copies")
        if copies is None:  # a save written before the count was recorded: known only for noise="fixed"
            if self.noise != "fixed":
                raise ValueError(
                    f"{str(directory)!r} holds an ensemble trained with noise={self.noise!r}, and how many noisy "
                    "copies of each training sample a member saw (nb_epochs) is not recorded in it: the certified "
                    "radius depends on it (it shrinks by sqrt(nb_epochs)), so it cannot be loaded; refit it"
                )
            copies = 1
        record = FittedEnsemble(
            ensemble.to(self._device),
            train_sigma.numpy(),
            random_state=config["random_state"],
            train_noise_copies=copies,
            test_noise_seeds=[int(s) for s in seeds],
            growth_history=[] if grown else None,  # (the history itself is not saved; [] marks a grown ensemble)
            memory=(CertificationMemory() if memory is None else memory) if self.use_memory else None,
        )
        self.base_model.load_state_dict(base)
        self.fitted_ = record
        if self.use_memory and not store.has("memory") and not training:  # a fit's checkpoint never certified
            warnings.warn(
                f"{str(directory)!r} was saved without its certification memory (before art-certssbd saved it): "
                "the storage-update step restarts from an empty memory, so certificates issued before that save are "
                "not taken into account",
                stacklevel=2,
            )

    def _load_memory(self, store: EnsembleCheckpoint, directory) -> CertificationMemory:
        """The saved memory, checked (format, shapes, radii; centers of this estimator's input size)."""
        try:
            memory = CertificationMemory.from_state_dict(store.load("memory"))
        except CheckpointError:
            raise
        except ValueError as err:
            raise CheckpointError(f"{str(directory)!r}: the saved memory is not a certification memory: {err}") from err
        features = int(np.prod(self.input_shape))
        if memory.dim is not None and memory.dim != features:
            raise CheckpointError(
                f"{str(directory)!r}: the saved memory holds centers of {memory.dim} features, not {features}"
            )
        return memory
