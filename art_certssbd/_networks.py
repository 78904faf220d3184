"""ART's calls on the network for the smoothed ensemble: a mixin of the estimator shell.

ART's ``PyTorchClassifier`` assumes one network; here (the "ART conventions" section of the user guide says where and
why it differs from ART):

* ``model`` (ART's network, which some attacks wrap in a classifier of their own) is, once fitted, the smoothed
  ensemble as one differentiable module (:class:`~art_certssbd.smoothed_module.SmoothedEnsembleModule`); before
  ``fit`` it is the base network, with a warning;
* ``loss_gradient`` / ``compute_loss``: the ensemble's expected loss under its fixed test noise at ``scale``;
  ``class_gradient`` is not available (as in ART's ``PyTorchRandomizedSmoothing``);
* ``get_activations`` reads a trained member (``base_model`` is untrained for RAB).

It reads the fitted state only through the record ``fitted_`` (:class:`~art_certssbd.fitted.FittedEnsemble`) and
ART's own attributes (``_device``, ``_loss``, ``_layer_names``, ``input_shape``, ``scale``, ...).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from art_certssbd._validation import check_choice, check_inputs, check_int, check_labels
from art_certssbd.fitted import require_fitted
from art_certssbd.noise import add_noise
from art_certssbd.smoothed_module import SmoothedEnsembleModule


def _numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


class NetworkMixin:
    """``model``, the losses and gradients, and ``get_activations`` of
    :class:`~art_certssbd._shell.SmoothedEnsembleEstimator`."""

    @property
    def model(self) -> torch.nn.Module:
        """The network ART's attacks and defences read (some wrap it in a ``PyTorchClassifier`` of their own, e.g.
        ``AutoProjectedGradientDescent`` with ``loss_type``, ``AutoAttack``, ``BrendelBethgeAttack``).

        Once fitted (``fit``, ``from_official``, ``load_ensemble``): the smoothed ensemble as one differentiable
        module, the log of the members' mean softmax score on the fixed test noise at ``scale``
        (:class:`~art_certssbd.smoothed_module.SmoothedEnsembleModule`), built anew on each access. Before: the base
        network (:attr:`base_model`), with a ``UserWarning``, since an attack built on it attacks a network that is
        not the smoothed classifier (for RAB an untrained one). Read :attr:`base_model` for the base network itself.
        """
        record = self.__dict__.get("fitted_")
        if record is None:
            warnings.warn(
                f"model of an unfitted {type(self).__name__} is its base network (for RAB an untrained one), not the "
                "smoothed ensemble: an ART attack or defence built on it attacks that network; fit the estimator "
                "first (or read base_model for the base network itself)",
                UserWarning,
                stacklevel=2,
            )
            return self.base_model
        noise = record.test_noise(self._device)
        return SmoothedEnsembleModule(record.members, noise, self.scale, self.draws_per_model, self.vectorize).eval()

    # ---------------------------------------------------------------------------------------- losses, gradients
    def _labels(self, y, nb_samples: int) -> torch.Tensor:
        return torch.from_numpy(check_labels(_numpy(y), nb_samples, self.nb_classes)).to(self._device)

    def _smoothed_loss(self, x_t: torch.Tensor, y_t: torch.Tensor, backward: bool) -> torch.Tensor | None:
        """``mean_k loss(f_k(x + scale * e_k), y)`` over the members (chunked; with ``backward`` each chunk's part is
        back-propagated into ``x_t.grad`` and nothing is returned)."""
        record = require_fitted(self)
        nb_models, noise = record.nb_models, record.test_noise(self._device)
        chunk, total = max(1, 8192 // len(x_t)), None
        for m0 in range(0, nb_models, chunk):
            m1 = min(m0 + chunk, nb_models)
            eps = noise(range(m0, m1), 1, tuple(x_t.shape[1:]))[:, 0]
            logits = record.members.logits(
                add_noise(x_t.unsqueeze(0), self.scale, eps.unsqueeze(1)), m0, m1, self.vectorize
            )
            part = sum(self._loss(logits[m], y_t) for m in range(m1 - m0)) / nb_models
            if backward:
                part.backward()
            else:
                total = part if total is None else total + part
        return total

    def loss_gradient(self, x, y, training_mode: bool = False, **kwargs):
        """Gradient w.r.t. ``x`` of the ensemble's expected loss ``mean_k loss(f_k(x + scale * e_k), y)`` (the smoothed
        surrogate ART's evasion attacks need), with the members' fixed test noise at ``scale``.

        :param x: Inputs, shape ``(N, *input_shape)`` (numpy, or a tensor as ART's PyTorch attacks pass).
        :param y: Labels in any format ART accepts (indices ``(N,)`` / ``(N, 1)``, one-hot, soft or all-zero rows:
               a ``(N, nb_classes)`` matrix is read as its row-wise argmax, as ART does).
        :return: Gradients of the same shape and kind as ``x``.
        """
        require_fitted(self)
        as_tensor = isinstance(x, torch.Tensor)
        x_np = check_inputs(_numpy(x), self.input_shape, None)
        y_t = self._labels(y, len(x_np))
        x_t = torch.from_numpy(x_np).to(self._device).requires_grad_(True)
        self._smoothed_loss(x_t, y_t, backward=True)
        return x_t.grad.to(x.device) if as_tensor else x_t.grad.cpu().numpy()

    def compute_loss(self, x, y, reduction: str = "none", **kwargs):
        """The ensemble's expected loss ``mean_k loss(f_k(x + scale * e_k), y)`` (the quantity :meth:`loss_gradient`
        differentiates), per input or reduced.

        :param x: Inputs, shape ``(N, *input_shape)`` (numpy, or a tensor: then a tensor is returned).
        :param y: Labels in any format ART accepts (see :meth:`loss_gradient`).
        :param reduction: ``"none"`` (shape ``(N,)``), ``"mean"`` or ``"sum"``.
        """
        require_fitted(self)
        check_choice(reduction, "reduction", ("none", "mean", "sum"))
        as_tensor = isinstance(x, torch.Tensor)
        x_np = check_inputs(_numpy(x), self.input_shape, None)
        y_t = self._labels(y, len(x_np))
        x_t = x.to(self._device) if as_tensor else torch.from_numpy(x_np).to(self._device)
        previous = self._loss.reduction
        self._loss.reduction = reduction
        try:
            with torch.set_grad_enabled(as_tensor and torch.is_grad_enabled()):
                loss = self._smoothed_loss(x_t, y_t, backward=False)
        finally:
            self._loss.reduction = previous
        return loss if as_tensor else loss.detach().cpu().numpy()

    def class_gradient(self, x, label=None, training_mode: bool = False, **kwargs):
        """Not available for a smoothed ensemble, as in ART's ``PyTorchRandomizedSmoothing``: the smoothed classifier
        is a vote count, without class scores to differentiate; attacks that need class gradients (DeepFool, JSMA,
        ...) cannot run against it, those built on :meth:`loss_gradient` (FGM, PGD, ...) can.

        :raises NotImplementedError: Always.
        """
        raise NotImplementedError(
            f"class_gradient is not available for {type(self).__name__} (a smoothed vote has no class gradient, as in "
            "ART's PyTorchRandomizedSmoothing); use loss_gradient"
        )

    # ------------------------------------------------------------------------------------------- activations
    def get_activations(
        self, x, layer: int | str | None = None, batch_size: int = 128, framework: bool = False, member: int = 0
    ):
        """Output of layer ``layer`` of a trained ensemble member on the inputs ``x`` themselves (no smoothing noise).

        ART's detectors (``ActivationDefence``, ``SpectralSignatureDefense``) read these. An ensemble has no single
        network: ``model`` is the base network of the sigma optimiser (untrained for RAB, warmed up at ``scale`` for
        Cert-SSBD), so the activations come from member ``member`` (default 0), which was trained on the whole
        (possibly poisoned) training set under its own noise. Layer names and indices are those of ``layer_names``
        (the members share ``model``'s architecture).

        :param x: Inputs, shape ``(N, *input_shape)`` (numpy; a tensor when ``framework=True``).
        :param layer: Index into ``layer_names`` or a layer name.
        :param batch_size: Inputs per pass.
        :param framework: Return a tensor attached to the graph (the inputs must then be a tensor or are converted).
        :param member: Index of the member whose activations are returned.
        """
        members = require_fitted(self).members
        member = check_int(member, "member", minimum=0)
        if member >= members.nb_models:
            raise ValueError(f"member must be in [0, {members.nb_models - 1}] (nb_models), got {member}")
        names = list(self._layer_names)
        if isinstance(layer, str):
            if layer not in names:
                raise ValueError(f"layer {layer!r} is not one of layer_names {names}")
            name = layer
        elif isinstance(layer, int | np.integer) and not isinstance(layer, bool) and -len(names) <= layer < len(names):
            name = names[layer]
        else:
            raise ValueError(f"layer must be an index into layer_names (0..{len(names) - 1}) or a name, got {layer!r}")
        module = members.member(member)
        last: dict[str, torch.Tensor] = {}  # a module called twice in forward (a shared ReLU): its last output, as ART

        def keep(mod, args, out) -> None:
            last["out"] = out

        hook = dict(module.named_modules())[name].register_forward_hook(keep)
        try:
            if framework:
                x_t = x if isinstance(x, torch.Tensor) else torch.from_numpy(check_inputs(x, self.input_shape))
                module(x_t.to(self._device))
                return last["out"]
            x_np = check_inputs(_numpy(x), self.input_shape)
            batch_size = check_int(batch_size, "batch_size")
            outputs = []
            with torch.no_grad():
                for start in range(0, len(x_np), batch_size):
                    module(torch.from_numpy(x_np[start : start + batch_size]).to(self._device))
                    outputs.append(last["out"].detach().cpu().numpy())
        finally:
            hook.remove()
        return np.concatenate(outputs)
