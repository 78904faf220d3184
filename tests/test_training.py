"""Member initialisation and training (``art_certssbd.training``)."""

from __future__ import annotations

import pytest
import torch
from helpers import Linear2

from art_certssbd.training import init_member, optimizer_factory_from, train_members


def test_init_member_is_seeded_and_isolated():
    template = Linear2()
    state = torch.random.get_rng_state().clone()
    a, b = init_member(template, 5), init_member(template, 5)
    c = init_member(template, 6)
    assert torch.equal(state, torch.random.get_rng_state())
    torch.testing.assert_close(a.lin.weight, b.lin.weight, rtol=0, atol=0)
    assert not torch.equal(a.lin.weight, c.lin.weight)


@pytest.mark.parametrize("noise", ["fixed", "fresh"])
def test_members_trained_alone_or_together_are_the_same(noise):
    x, y = torch.rand(64, 4), torch.randint(0, 2, (64,))
    sigma = torch.full((64,), 0.2)
    opt = torch.optim.SGD(Linear2().parameters(), lr=0.05, momentum=0.9)
    kw = dict(loss_fn=torch.nn.CrossEntropyLoss(), optimizer_factory=optimizer_factory_from(opt), random_state=1,
              nb_epochs=2, batch_size=16, noise=noise)  # fmt: skip
    together = train_members(Linear2(), x, y, sigma, [0, 1, 2], vectorize=True, **kw)
    alone = train_members(Linear2(), x, y, sigma, [2], vectorize=False, **kw)
    for name, tensor in alone[0].items():
        torch.testing.assert_close(together[2][name], tensor, rtol=1e-5, atol=1e-6)
    assert not torch.equal(together[0]["lin.weight"], together[1]["lin.weight"])


def test_train_members_refuses_unknown_noise():
    with pytest.raises(ValueError, match="noise must be one of .* got 'pink'"):
        train_members(Linear2(), torch.rand(4, 4), torch.zeros(4, dtype=torch.long), torch.ones(4), [0],
                      loss_fn=torch.nn.CrossEntropyLoss(), optimizer_factory=optimizer_factory_from(
                          torch.optim.SGD(Linear2().parameters(), lr=0.1)), random_state=0, nb_epochs=1,
                      batch_size=2, noise="pink")  # fmt: skip
