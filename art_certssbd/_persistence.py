"""Saving and loading the estimator's fitted record: a mixin of the estimator shell, so that :meth:`save_ensemble` /
:meth:`load_ensemble` sit beside ART's ``save``. The format is :mod:`art_certssbd.saved`'s.
"""

from __future__ import annotations

import os

from art_certssbd.fitted import require_fitted
from art_certssbd.saved import load_record, save_record


class PersistenceMixin:
    """``save``, ``save_ensemble`` and ``load_ensemble`` for :class:`~art_certssbd._shell.SmoothedEnsembleEstimator`:
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
        save_record(directory, require_fitted(self), self.base_model.state_dict(), nb_classes=self.nb_classes,
                    input_shape=self.input_shape, scale=self.scale)  # fmt: skip

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
        base, record = load_record(directory, self.base_model, nb_classes=self.nb_classes, input_shape=self.input_shape,
                                   scale=self.scale, nb_models=self.nb_models, bound=self.bound, noise=self.noise,
                                   use_memory=self.use_memory, memory_budget=self.memory_budget, device=self._device,
                                   stream=stream)  # fmt: skip
        self.base_model.load_state_dict(base)  # everything has loaded: now the estimator changes
        self.fitted_ = record
