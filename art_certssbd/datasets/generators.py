"""The data of an ART ``DataGenerator``, read once (``fit_generator`` of the estimators fits once on all of it)."""

from __future__ import annotations

import numpy as np
import torch


def _numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def read_generator(generator) -> tuple[np.ndarray, np.ndarray]:
    """All ``(x, y)`` of an ART data generator, read once."""
    from art.data_generators import NumpyDataGenerator, PyTorchDataGenerator

    if isinstance(generator, NumpyDataGenerator):
        return np.asarray(generator.x), np.asarray(generator.y)
    if isinstance(generator, PyTorchDataGenerator):
        from torch.utils.data import DataLoader, IterableDataset, RandomSampler, SequentialSampler

        loader = generator.iterator
        plain = type(loader.sampler) is SequentialSampler or (
            type(loader.sampler) is RandomSampler
            and not loader.sampler.replacement
            and loader.sampler._num_samples is None
        )
        if plain and not isinstance(loader.dataset, IterableDataset) and loader.batch_size is not None:
            loader = DataLoader(loader.dataset, batch_size=loader.batch_size, collate_fn=loader.collate_fn)
        batches = [tuple(batch)[:2] for batch in loader]
    else:
        if generator.size is None:
            raise ValueError(f"{type(generator).__name__} has size None: fit_generator needs the number of samples")
        batches, seen = [], 0
        while seen < generator.size:  # get_batch loops over the data indefinitely
            batch = tuple(generator.get_batch())[:2]
            if len(batch[0]) == 0:
                break
            batches.append(batch)
            seen += len(batch[0])
    if not batches:
        raise ValueError(f"{type(generator).__name__} yielded no data")
    x = np.concatenate([_numpy(b[0]) for b in batches])
    y = np.concatenate([_numpy(b[1]) for b in batches])
    if not isinstance(generator, PyTorchDataGenerator) and generator.size is not None:
        x, y = x[: generator.size], y[: generator.size]
    return x, y
