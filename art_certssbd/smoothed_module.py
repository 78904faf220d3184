"""The fitted ensemble as one differentiable ``torch.nn.Module``: what a fitted estimator's ``model`` returns.

ART's attacks and defences that read ``estimator.model`` (and, e.g., wrap it in a new ``PyTorchClassifier`` with
their own loss: ``AutoProjectedGradientDescent`` with ``loss_type``, ``AutoAttack``, ``BrendelBethgeAttack``) need a
network that *is* the classifier under attack. A smoothed ensemble has none: the members vote on noisy copies of the
input. :class:`SmoothedEnsembleModule` is the network ART's gradient attacks can optimise against:

``forward(x) = log( 1 / (M D) * sum_{k < M, j < D} softmax( f_k(x + sigma * e_{k, j}) ) )``

the log of the members' mean softmax score on the estimator's *fixed test noise* ``e_{k, j}`` (member ``k``'s
``D = draws_per_model`` draws, the same draws its votes use), at one noise level ``sigma``. It returns
log-probabilities, which ART's losses read as logits (the cross-entropy of them is the negative log of the
ensemble's mean score of the class). Differences to the certified classifier, on purpose:

* soft scores, not hard votes (votes have no gradient); its argmax is the soft-vote prediction, which may differ
  from the majority vote where the vote is close;
* ``sigma`` is the estimator's ``scale`` (sigma0) for every input. RAB's certify uses exactly that; Cert-SSBD's
  certify uses a per-input ``sigma_x`` found by gradient ascent on the base network, which is neither fixed nor
  differentiable, so the module uses sigma0, as ``loss_gradient`` does.

The members' weights are not parameters of the module (they stay in the ensemble, detached): the module cannot be
trained, and moving it to a device does not move them; inputs are moved to the members' device and the output back.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from art_certssbd.noise import add_noise

#: Bound on ``members * draws * inputs`` evaluated in one pass (as :func:`art_certssbd.ensemble.vote`).
MAX_IMAGES_PER_PASS = 8192


class SmoothedEnsembleModule(torch.nn.Module):
    """The smoothed ensemble as a differentiable module (module docstring).

    :param ensemble: The members: a :class:`~art_certssbd.ensemble.StackedEnsemble` or
           :class:`~art_certssbd.streaming.SavedEnsemble` (anything with ``nb_models``, ``device`` and
           ``logits(x, m0, m1, vectorize)``).
    :param noise_fn: The members' fixed test noise ``(members, draws, shape) -> (len(members), draws, *shape)``.
    :param sigma: The noise level (the estimator's ``scale``).
    :param draws_per_model: Test noise draws per member.
    :param vectorize: Use the vectorised forward pass of the members (``False``: the loop twin).
    """

    def __init__(
        self,
        ensemble,
        noise_fn: Callable,
        sigma: float,
        draws_per_model: int = 1,
        vectorize: bool = True,
    ):
        super().__init__()
        self.ensemble, self.noise_fn, self.sigma = ensemble, noise_fn, float(sigma)
        self.draws_per_model, self.vectorize = int(draws_per_model), bool(vectorize)

    @property
    def nb_models(self) -> int:
        """Number of members M."""
        return self.ensemble.nb_models

    def mean_scores(self, x: torch.Tensor) -> torch.Tensor:
        """The members' mean softmax score ``(N, C)`` on ``x + sigma * e_{k, j}`` (differentiable in ``x``)."""
        device = getattr(self.ensemble, "device", x.device)
        x_d = x.to(device)
        draws, size, shape = self.draws_per_model, x_d.shape[0], tuple(x_d.shape[1:])
        chunk = max(1, MAX_IMAGES_PER_PASS // max(1, draws * size))
        chunk = min(chunk, getattr(self.ensemble, "members_per_block", chunk))  # a saved ensemble's memory budget
        total = None
        for m0 in range(0, self.nb_models, chunk):
            m1 = min(m0 + chunk, self.nb_models)
            eps = self.noise_fn(range(m0, m1), draws, shape).to(device, x_d.dtype)  # (Mc, D, *shape)
            noisy = add_noise(x_d[None, None], self.sigma, eps.unsqueeze(2))  # (Mc, D, N, *shape)
            logits = self.ensemble.logits(noisy.reshape((m1 - m0, draws * size) + shape), m0, m1, self.vectorize)
            part = torch.softmax(logits.float(), dim=-1).sum(dim=0).reshape(draws, size, -1).sum(dim=0)
            total = part if total is None else total + part
        return (total / (self.nb_models * draws)).to(x.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``log`` of :meth:`mean_scores`: the ensemble's log-probabilities ``(N, C)``, read by ART as logits."""
        return torch.log(self.mean_scores(x).clamp_min(torch.finfo(torch.float32).tiny))

    def extra_repr(self) -> str:
        return f"nb_models={self.nb_models}, draws_per_model={self.draws_per_model}, sigma={self.sigma}"
