"""DPA's count certificate: against a brute-force search over vote changes, ties, and bad input."""

from __future__ import annotations

import itertools
from collections import deque

import numpy as np
import pytest

from art_certssbd.dpa import dpa_certified_accuracy, dpa_certify, dpa_votes


def _winner(votes: tuple[int, ...]) -> int:
    best = max(votes)
    return votes.index(best)  # DPA's rule: the smaller class index wins a tie


def _brute_force(votes: tuple[int, ...]) -> int:
    """Fewest partition changes (one vote moved from any class to any other, what one insertion or deletion can do)
    that change the winner, minus one: breadth-first search over vote vectors."""
    start = _winner(votes)
    seen, queue = {votes}, deque([(votes, 0)])
    while queue:
        state, depth = queue.popleft()
        if _winner(state) != start:
            return depth - 1
        for a, b in itertools.permutations(range(len(state)), 2):
            if state[a] > 0:
                nxt = list(state)
                nxt[a] -= 1
                nxt[b] += 1
                nxt = tuple(nxt)
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append((nxt, depth + 1))
    raise AssertionError("the winner never changes")  # only possible with one class


@pytest.mark.parametrize("nb_classes,nb_partitions", [(2, 7), (2, 8), (3, 6), (4, 5)])
def test_certificate_matches_brute_force_on_every_vote_vector(nb_classes, nb_partitions):
    vectors = [v for v in itertools.product(range(nb_partitions + 1), repeat=nb_classes) if sum(v) == nb_partitions]
    pred, certified = dpa_certify(np.array(vectors))
    for vector, p, c in zip(vectors, pred, certified):
        assert p == _winner(vector)
        assert c == _brute_force(vector), vector


def test_ties_go_to_the_smaller_index_and_cost_the_larger_one():
    pred, certified = dpa_certify(np.array([[2, 4, 4], [5, 5, 0], [0, 0, 0]]))
    assert pred.tolist() == [1, 0, 0]
    assert certified.tolist() == [0, 0, 0]  # a tie won is certified against nothing: one moved vote breaks it
    _, certified = dpa_certify(np.array([[4, 2], [2, 4]]))
    assert certified.tolist() == [1, 0]  # (4 - 2) // 2 = 1; (4 - 2 - 1) // 2 = 0 (class 0 wins ties against 1)


def test_votes_from_raw_scores_and_certified_accuracy():
    raw = np.array(
        [
            [[0.9, 0.1], [0.2, 0.8]],
            [[0.6, 0.4], [0.5, 0.5]],  # a tie in one classifier's scores votes for class 0
            [[0.3, 0.7], [0.1, 0.9]],
        ]
    )
    votes = dpa_votes(raw)
    assert votes.tolist() == [[2, 1], [1, 2]]
    assert dpa_certified_accuracy(votes, np.array([0, 1]), [0, 1]) == [1.0, 0.0]


def test_one_class_certifies_every_vote():
    pred, certified = dpa_certify(np.array([[5]]))
    assert pred.tolist() == [0] and certified.tolist() == [5]


@pytest.mark.parametrize(
    "votes,message",
    [(np.zeros(3), "shape"), (np.array([[1, -1]]), "non-negative"), (np.array([[0.5, 1.0]]), "integer")],
)
def test_bad_votes_are_refused(votes, message):
    with pytest.raises(ValueError, match=message):
        dpa_certify(votes)


def test_bad_raw_predictions_are_refused():
    with pytest.raises(ValueError, match="nb_partitions"):
        dpa_votes(np.zeros((3, 2)))
