"""Deep Partition Aggregation's certificate from partition votes (pure numpy; no torch, no ART).

ART's :class:`~art.estimators.classification.DeepPartitionEnsemble` trains one classifier per partition of the
training set (the partition of a sample is a hash of the sample itself) and predicts by majority vote, but returns no
certificate. DPA (Levine & Feizi, ICLR 2021) certifies, from the vote counts ``n_c`` alone: with the prediction
``c = argmax_c n_c``, ties broken towards the smaller class index,

    rho(x) = floor((n_c - max_{c' != c} (n_c' + 1[c' < c])) / 2)

insertions or deletions of training samples cannot change the prediction at ``x``. Each insertion or deletion
changes one partition, hence one vote: ``n_c`` loses at most one and some ``n_c'`` gains at most one. A *replaced*
sample (our threat model: a training input triggered and relabelled) is one deletion plus one insertion, so the
number of replaced samples certified is ``floor(rho / 2)``.

| Paper link: https://arxiv.org/abs/2006.14768
"""

from __future__ import annotations

import numpy as np

__all__ = ["dpa_votes", "dpa_certify", "dpa_certified_accuracy"]


def dpa_votes(raw_predictions: np.ndarray) -> np.ndarray:
    """Vote counts of the partition classifiers.

    :param raw_predictions: Scores of shape ``(nb_partitions, N, nb_classes)``, as
        ``DeepPartitionEnsemble.predict(x, raw=True)`` returns; each classifier votes for its ``argmax`` (the
        smaller index on ties, as ART's aggregation does).
    :return: Integer counts of shape ``(N, nb_classes)``; each row sums to ``nb_partitions``.
    """
    raw = np.asarray(raw_predictions)
    if raw.ndim != 3 or raw.shape[0] < 1 or raw.shape[2] < 1:
        raise ValueError(f"raw_predictions must have shape (nb_partitions, N, nb_classes), got {raw.shape}")
    nb_classes = raw.shape[2]
    top = np.argmax(raw, axis=2)  # (k, N)
    counts = np.zeros((raw.shape[1], nb_classes), dtype=np.int64)
    for row in top:
        counts[np.arange(raw.shape[1]), row] += 1
    return counts


def dpa_certify(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DPA's prediction and certified number of insertions/deletions, from vote counts.

    :param votes: Non-negative integer counts of shape ``(N, nb_classes)``.
    :return: ``(pred, certified)``: the majority class (ties to the smaller index) and
        ``floor((n_c - max_{c' != c}(n_c' + 1[c' < c])) / 2)``, both integer arrays of shape ``(N,)``.
        With one class the certificate is the number of votes (no other class can win).
    """
    votes = np.asarray(votes)
    if votes.ndim != 2 or votes.shape[1] < 1:
        raise ValueError(f"votes must have shape (N, nb_classes), got {votes.shape}")
    if not np.issubdtype(votes.dtype, np.integer):
        if not np.all(np.isfinite(votes)) or not np.all(np.mod(votes, 1) == 0):
            raise ValueError("votes must be integer counts")
        votes = votes.astype(np.int64)
    if np.any(votes < 0):
        raise ValueError("votes must be non-negative counts")
    n, nb_classes = votes.shape
    pred = np.argmax(votes, axis=1)  # first maximum: the smaller class index wins a tie
    if nb_classes == 1:
        return pred, votes[:, 0].astype(np.int64)
    rows = np.arange(n)
    n_c = votes[rows, pred]
    # n_c' + 1[c' < c] for every other class c'; the predicted class itself is excluded
    rivals = votes + (np.arange(nb_classes)[None, :] < pred[:, None])
    rivals[rows, pred] = np.iinfo(np.int64).min
    certified = (n_c - rivals.max(axis=1)) // 2
    return pred, certified.astype(np.int64)


def dpa_certified_accuracy(votes: np.ndarray, y: np.ndarray, counts) -> list[float]:
    """Fraction of inputs predicted correctly with a certificate of at least ``t`` insertions/deletions, per ``t``.

    :param votes: Vote counts ``(N, nb_classes)``.
    :param y: Integer labels ``(N,)``.
    :param counts: The numbers ``t`` of poisoned samples (insertions or deletions).
    """
    pred, certified = dpa_certify(votes)
    y = np.asarray(y)
    if y.shape != pred.shape:
        raise ValueError(f"y must have shape {pred.shape}, got {y.shape}")
    return [float(np.mean((pred == y) & (certified >= t))) for t in counts]
