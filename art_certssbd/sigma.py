"""Sample-specific sigma by stochastic gradient ascent on a differentiable radius surrogate (pure torch).

For each sample ``x`` the optimiser maximises

    R(s) = s / 2 * (Phi^-1(p1(s)) - Phi^-1(p2(s)))

where ``p(s)`` is the model's softmax averaged over ``S`` reparameterised noisy copies ``x + s * eps`` and ``p1``,
``p2`` are its two largest entries, clamped to ``[0.02, 0.98]`` (method.md, step 1; DDRS, Alfarra et al. 2022).

The ``S`` noise draws of each step are *common random numbers*: one tensor ``eps[t]`` of shape ``(S, *input_shape)``
per step, shared by every sample. Each sample's optimisation is separate, so sharing draws across samples costs no
statistical validity and makes ``sigma_x`` a function of ``(x, model, random_state)`` alone: the same input gets the
same sigma whatever batch, order or chunk it arrives in (up to floating-point rounding of the model's kernels).

``sigma0`` (the starting sigma and the default lower bound) is what the estimators and ART call ``scale``.

Speed: all samples of a batch ascend together (one forward and one backward pass per step for the whole batch). On
CPU the default batch holds about 256 noisy images (cache-resident activations), and a module's convolution
weights are evaluated from a private channels-last copy (oneDNN's fast layout); on CUDA batches are larger. Forward-
mode differentiation (``torch.func.jvp``, one pass for all per-sample derivatives) was measured as no faster than
the reverse pass here, so the reverse pass is kept (``benchmarks/speed.py``).

Early stopping (``early_stop=True``, off by default): a step is *settled* for a sample when the projection held its
sigma at a bound against the update (the unprojected ``s + lr * grad`` lay beyond ``sigma_min`` or ``sigma_max``) or
when the step moved its sigma by less than ``tol * sigma0``; a sample stops after ``patience`` consecutive settled
steps (or after ``steps`` steps). Finished samples leave the batch and the next samples of ``x`` take their places,
each at its own step index ``t`` with its own draws ``eps[t]``, so no forward pass is spent on a finished sample and
a sample's sigma still depends only on its own trajectory (``benchmarks/sigma_early_stop.py`` measures the saving).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
from collections.abc import Callable, Iterator

import torch
from tqdm.auto import tqdm

from art_certssbd.accelerators import autocast, check_accelerators
from art_certssbd.ensemble import module_to_channels_last
from art_certssbd.noise import add_noise, sigma_noise

logger = logging.getLogger(__name__)

SIGMA_UPDATES = ("gradient", "reference")


def radius_surrogate(
    probs: torch.Tensor, sigma: torch.Tensor, p_min: float = 0.02, p_max: float = 0.98
) -> tuple[torch.Tensor, torch.Tensor]:
    """The differentiable radius ``s/2 * (Phi^-1(p1) - Phi^-1(p2))`` and its gap ``Phi^-1(p1) - Phi^-1(p2)``.

    :param probs: Mean class probabilities, shape ``(N, C)`` with ``C >= 2``.
    :param sigma: Noise magnitudes, shape ``(N,)``.
    :param p_min: Lower clamp of the probabilities (keeps ``Phi^-1`` finite).
    :param p_max: Upper clamp of the probabilities.
    :return: ``(radius, gap)``, each of shape ``(N,)``.
    """
    top2 = probs.topk(2, dim=1).values.clamp(p_min, p_max)
    gap = torch.special.ndtri(top2[:, 0]) - torch.special.ndtri(top2[:, 1])
    return sigma / 2 * gap, gap


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode and restore its previous mode afterwards (the caller's model is left as it was)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def default_batch_size(device: torch.device, n_samples: int) -> int:
    """Samples per ascent batch when none is given: ``max(1, 256 // n_samples)`` on CPU (about 256 images per pass),
    256 on CUDA."""
    return 256 if torch.device(device).type == "cuda" else max(1, 256 // max(1, n_samples))


def optimize_sigma(
    model: torch.nn.Module | Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    sigma0: float,
    *,
    steps: int = 30,
    lr: float = 5e-3,
    n_samples: int = 16,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    update: str = "gradient",
    random_state: int = 0,
    batch_size: int | None = None,
    p_clamp: tuple[float, float] = (0.02, 0.98),
    verbose: bool = False,
    early_stop: bool = False,
    tol: float = 1e-3,
    patience: int = 3,
    amp: str | None = None,
) -> torch.Tensor:
    """Optimise one sigma per sample of ``x`` by stochastic gradient ascent on :func:`radius_surrogate`.

    Gradients are taken with respect to the sigmas only (``torch.autograd.grad``): the model's parameters, their
    ``.grad`` fields and its train/eval mode are left exactly as they were.

    :param model: Classifier returning logits of shape ``(N, C)``; evaluated in eval mode.
    :param x: Inputs, shape ``(N, *input_shape)``, on the model's device.
    :param sigma0: Starting sigma of every sample: the estimators' ``scale`` (ART's name for the smoothing sigma).
           It is also the default ``sigma_min``; ``sigma0`` here and ``scale`` in the estimators are the same value.
    :param steps: Number of ascent steps ``T`` (0 returns ``sigma0`` everywhere).
    :param lr: Step size.
    :param n_samples: Noise draws ``S`` per step.
    :param sigma_min: Lower bound on sigma (default ``sigma0``: sigma never shrinks below the RAB value).
    :param sigma_max: Upper bound on sigma (default ``4 * sigma0``).
    :param update: ``"gradient"`` (true gradient through the model, default) or ``"reference"`` (the official code's
           detached update ``s += lr * gap / 2``, under which sigma never decreases).
    :param random_state: Seed of the common random numbers (:func:`~art_certssbd.noise.sigma_noise`; the fit passes
           ``derive_seed(random_state, "sigma_train")``, certification ``derive_seed(random_state, "sigma_test")``).
    :param batch_size: Samples per batch; memory grows with ``batch_size * n_samples``. Default: about 256 noisy
           images per pass on CPU (``max(1, 256 // n_samples)`` samples), 256 samples on CUDA. The result does not
           depend on it beyond floating-point rounding.
    :param p_clamp: Clamp of the probabilities inside the surrogate.
    :param verbose: Show a progress bar over batches (over samples with ``early_stop``).
    :param early_stop: Stop each sample once its sigma has settled (default ``False``: every sample runs all
           ``steps`` steps, bitwise as before this option existed). A step is *settled* for a sample when its sigma
           sits at ``sigma_min`` or ``sigma_max`` after a step whose update pushed it further out (the projection
           held it), or when the step moved its sigma by less than ``tol * sigma0``; the sample stops after
           ``patience`` consecutive settled steps. Finished samples are replaced in the batch by the next samples of
           ``x`` (each at its own step index, with the shared draws ``eps[t]`` of that index), so finished samples
           cost no forward pass and the result of a sample does not depend on which others share its batch.
    :param tol: Relative movement below which a step counts as settled (``early_stop`` only; ``0`` keeps only the
           bound rule).
    :param patience: Consecutive settled steps after which a sample stops (``early_stop`` only).
    :param amp: Mixed precision of the model's forward pass (``"bf16"`` on CUDA or a CPU with native bfloat16,
           ``"fp16"`` on CUDA; see :func:`art_certssbd.accelerators.check_accelerators`); the surrogate and the
           step are computed in ``x``'s dtype.
    :return: Sigmas, shape ``(N,)``, on ``x``'s device, detached.
    """
    sigma_min = sigma0 if sigma_min is None else sigma_min
    sigma_max = 4 * sigma0 if sigma_max is None else sigma_max
    if not sigma0 > 0:
        raise ValueError(f"sigma0 must be > 0, got {sigma0!r}")
    if not 0 < sigma_min <= sigma0 <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma0 <= sigma_max, got ({sigma_min!r}, {sigma0!r}, {sigma_max!r})")
    if update not in SIGMA_UPDATES:
        raise ValueError(f"update must be one of {SIGMA_UPDATES}, got {update!r}")
    if batch_size is None:
        batch_size = default_batch_size(x.device, n_samples)
    if steps < 0 or n_samples < 1 or batch_size < 1:
        raise ValueError(f"need steps >= 0, n_samples >= 1, batch_size >= 1, got ({steps}, {n_samples}, {batch_size})")
    if not isinstance(early_stop, bool):
        raise ValueError(f"early_stop must be True or False, got {early_stop!r}")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol!r}")
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise ValueError(f"patience must be an int >= 1, got {patience!r}")
    check_accelerators(x.device, amp, False)

    sigma = torch.full((x.shape[0],), float(sigma0), device=x.device, dtype=x.dtype)
    if steps == 0 or x.shape[0] == 0:
        return sigma
    logger.info("Optimising the sigma of %d samples (%d SGA steps each).", x.shape[0], steps)
    # Common random numbers: eps[t] is shared by all samples at step t.
    eps = sigma_noise(random_state, steps, n_samples, x.shape[1:], x.device, x.dtype)

    context = _eval_mode(model) if isinstance(model, torch.nn.Module) else contextlib.nullcontext()
    with context:
        model = _fast_copy(model, x.device)
        if amp is not None:
            model = functools.partial(_autocast_forward, model, x.device, amp, x.dtype)
        if early_stop:
            rule = (tol * float(sigma0), patience)
            return _ascend_pool(
                model, x, sigma, eps, lr, sigma_min, sigma_max, update, p_clamp, batch_size, rule, verbose
            )
        for start in tqdm(range(0, x.shape[0], batch_size), desc="Sigma SGA", disable=not verbose):
            x_b = x[start : start + batch_size]
            sigma[start : start + batch_size] = _ascend(
                model, x_b, sigma[start : start + batch_size], eps, lr, sigma_min, sigma_max, update, p_clamp
            )
    return sigma


def _fast_copy(model, device: torch.device):
    """On CPU, a frozen eval-mode copy of ``model`` with channels-last convolution weights (the caller's model is
    not touched); ``model`` itself elsewhere, for non-modules, or where it cannot be copied."""
    if device.type != "cpu" or not isinstance(model, torch.nn.Module):
        return model
    if not any(p.dim() == 4 for p in model.parameters()):
        return model
    try:
        fast = copy.deepcopy(model)
    except (copy.Error, TypeError, RuntimeError) as err:
        logger.debug("model cannot be copied (%s): sigma optimised with the model as given", err)
        return model
    return module_to_channels_last(fast.requires_grad_(False).eval())


def _autocast_forward(model, device: torch.device, amp: str, dtype: torch.dtype, z: torch.Tensor) -> torch.Tensor:
    """``model(z)`` under ``amp`` autocast, the logits cast back to ``dtype``."""
    with autocast(device, amp):
        return model(z).to(dtype)


def _step(model, x_b, s, eps_b, lr, update, p_clamp) -> tuple[torch.Tensor, torch.Tensor]:
    """One ascent step of a batch, before projection: ``(s, lr * grad)``; ``eps_b`` broadcasts against
    ``(n_b, S, *input_shape)`` (``(1, S, ...)`` shared, or ``(n_b, S, ...)`` one step index per sample)."""
    n_b, n_samples = x_b.shape[0], eps_b.shape[1]
    s = s.detach().requires_grad_(update == "gradient")
    with torch.set_grad_enabled(update == "gradient"):
        # Step 1: S reparameterised noisy copies of every sample, x + s * eps.
        noisy = add_noise(x_b.unsqueeze(1), s, eps_b)
        # Step 2: mean softmax over the copies.
        logits = model(noisy.reshape((n_b * n_samples,) + tuple(x_b.shape[1:])))
        probs = torch.softmax(logits, dim=-1).reshape(n_b, n_samples, -1).mean(dim=1)
        # Step 3: the radius surrogate and its derivative in s.
        radius, gap = radius_surrogate(probs, s, *p_clamp)
        if update == "gradient":
            (grad,) = torch.autograd.grad(radius.sum(), s)
        else:
            grad = gap.detach() / 2
    return s.detach(), lr * grad


def _ascend_pool(model, x, sigma, eps, lr, sigma_min, sigma_max, update, p_clamp, batch_size, rule, verbose):
    """Early-stopped ascent: a pool of at most ``batch_size`` active samples, each at its own step index; finished
    samples write their sigma and are replaced by the next samples of ``x``."""
    min_move, patience = rule
    steps, n = eps.shape[0], x.shape[0]
    device = x.device
    idx = torch.empty(0, dtype=torch.long, device=device)  # samples in the pool
    s = sigma[:0].clone()  # their current sigma
    t = torch.empty(0, dtype=torch.long, device=device)  # their next step index
    settled = torch.empty(0, dtype=torch.long, device=device)  # their consecutive settled steps
    next_sample = 0
    with tqdm(total=n, desc="Sigma SGA", disable=not verbose) as bar:
        while True:
            take = min(batch_size - idx.numel(), n - next_sample)
            if take > 0:
                new = torch.arange(next_sample, next_sample + take, device=device)
                next_sample += take
                idx, s = torch.cat([idx, new]), torch.cat([s, sigma[new]])
                t = torch.cat([t, torch.zeros(take, dtype=torch.long, device=device)])
                settled = torch.cat([settled, torch.zeros(take, dtype=torch.long, device=device)])
            if idx.numel() == 0:
                break
            eps_b = eps[t[0]].unsqueeze(0) if bool((t == t[0]).all()) else eps[t]
            s_old, move = _step(model, x[idx], s, eps_b, lr, update, p_clamp)
            target = s_old + move
            s = target.clamp(sigma_min, sigma_max)
            held = (target > sigma_max) | (target < sigma_min)
            still = held | ((s - s_old).abs() < min_move)
            settled = torch.where(still, settled + 1, torch.zeros_like(settled))
            t = t + 1
            done = (t >= steps) | (settled >= patience)
            if bool(done.any()):
                sigma[idx[done]] = s[done]
                keep = ~done
                idx, s, t, settled = idx[keep], s[keep], t[keep], settled[keep]
                bar.update(int(done.sum()))
    return sigma


def _ascend(model, x_b, s, eps, lr, sigma_min, sigma_max, update, p_clamp) -> torch.Tensor:
    """Run all ascent steps for one batch of samples (every sample at the same step index)."""
    for eps_t in eps:
        s, move = _step(model, x_b, s, eps_t.unsqueeze(0), lr, update, p_clamp)
        # Step 4: ascend and project onto [sigma_min, sigma_max].
        s = (s + move).clamp(sigma_min, sigma_max)
    return s.detach()
