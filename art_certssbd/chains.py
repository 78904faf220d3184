"""The method's chains over a fitted record, without ART: what ``fit``, ``certify``, ``predict`` and
``certify_adaptive`` of the estimators do, as plain functions (the estimators only adapt ART's API to them)::

    fit:      check_output -> pipeline.train_smoothed_ensemble (warm-up at sigma0 -> sigma.optimize_sigma on every
              training sample -> training.train_members, checkpointed) [-> growth.growth_rule after each wave]
              -> FittedEnsemble
    certify:  test_sigma (sigma_x) -> count_votes (x + sigma_x * e_k) -> certification.certify_votes
              -> memory.apply_memory -> budget.attach_budgets
    predict:  the certify chain with update=False (or the majority vote, trimmed by the memory)
    adaptive: count_votes in looks -> sequential.run_sequential -> sequential.apply_memory_adaptive

Where the work runs (here, as Ray tasks, or with the members streamed from disk) is decided once per call, by an
:class:`~art_certssbd.execution.Executor`; the sigma optimiser's settings travel as one
:class:`~art_certssbd.execution.SigmaSearch`, the vote's as one :class:`~art_certssbd.execution.VoteSettings`.

| Paper link: https://arxiv.org/abs/2504.21730 (Cert-SSBD), https://arxiv.org/abs/2003.08904 (RAB)
"""

from __future__ import annotations

import functools
import hashlib
import logging

import numpy as np
import torch

from art_certssbd import stats
from art_certssbd._validation import check_int
from art_certssbd.budget import attach_budgets
from art_certssbd.certification import certify_votes
from art_certssbd.checkpoint import EnsembleCheckpoint
from art_certssbd.execution import Executor, SigmaSearch, VoteSettings
from art_certssbd.fitted import FittedEnsemble
from art_certssbd.growth import Growth, growth_rule
from art_certssbd.memory import CertificationMemory, apply_memory
from art_certssbd.noise import derive_seed
from art_certssbd.pipeline import train_smoothed_ensemble
from art_certssbd.sequential import AdaptiveResult, apply_memory_adaptive, check_looks, look_schedule, run_sequential

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------- fit
def checkpoint_config(params: dict, *, random_state: int, x: np.ndarray, y: np.ndarray, batch_size: int,
                      nb_epochs: int, model: torch.nn.Module, optimizer) -> dict:  # fmt: skip
    """Everything that determines the fitted ensemble (stored in, and checked against, a checkpoint): the estimator
    parameters ``params`` without those that only change the speed, the seed, the fit's arguments and the data's
    hash. ``amp=None`` and ``sigma_tol=None`` leave their keys out, so that checkpoints written before those options
    existed still resume."""
    speed_only = ("verbose", "vectorize", "memory_budget", "compile", "executor")  # the same fitted ensemble
    config = {key: value for key, value in params.items() if key not in speed_only}
    if config["amp"] is None:  # float32: the config (and checkpoints) as before amp reached the training
        del config["amp"]
    if config["sigma_tol"] is None:  # the full SGA run: the config (and checkpoints) as before these options existed
        del config["sigma_tol"], config["sigma_patience"]
    config.update(
        random_state=random_state,
        batch_size=batch_size,
        nb_epochs=nb_epochs,
        data_sha256=hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest(),
        model=type(model).__name__,
        optimizer=type(optimizer).__name__,
        optimizer_defaults={k: repr(v) for k, v in optimizer.defaults.items()},
    )
    return config


def run_seed(random_state: int | None, checkpoint_dir) -> int:
    """The run's seed: ``random_state``; else, resuming a checkpoint, its seed; else a fresh one."""
    if random_state is None and checkpoint_dir is not None:  # resuming with random_state=None: the checkpoint's seed
        random_state = EnsembleCheckpoint(checkpoint_dir).config.get("random_state")
    if random_state is None:
        random_state = int(np.random.SeedSequence().entropy % 2**63)
    return random_state


def check_output(model: torch.nn.Module, x: np.ndarray, nb_classes: int, input_shape, device) -> None:
    """Refuse a model that cannot process ``x`` or does not return ``(N, nb_classes)`` logits."""
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(torch.from_numpy(x).to(device))
    except RuntimeError as err:  # e.g. a layer sized for another input shape
        raise ValueError(f"model cannot process inputs of input_shape={tuple(input_shape)}: {err}") from err
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != nb_classes:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model returns outputs of shape {shape}, expected (N, nb_classes={nb_classes})")


def fit(
    model,
    x_t,
    y_t,
    *,
    random_state: int,
    search: SigmaSearch,
    votes: VoteSettings,
    nb_models: int,
    noise: str,
    warmup_epochs: int,
    loss_fn,
    optimizer_factory,
    nb_epochs: int,
    batch_size: int,
    members_per_chunk: int,
    store,
    growth: Growth | None,
    alpha: float,
    use_memory: bool,
    verbose: bool,
) -> tuple[torch.nn.Module, FittedEnsemble]:
    """The fit chain: warm-up -> training sigmas -> members (-> the growth rule after each wave) -> the record.

    :return: ``(base, record)``: the warmed-up base model (the sigma optimiser's) and the fitted record.
    """
    copies = nb_epochs if noise == "fresh" else 1  # noisy copies of each training sample per member
    history: list[dict] | None = None if growth is None else []
    stop = None
    if growth is not None:  # after each wave the validation votes decide whether more members are needed
        stop = growth_rule(growth, template=model, device=x_t.device, random_state=random_state, nb_models=nb_models,
                           search=search, nb_classes=votes.nb_classes, draws_per_model=votes.draws_per_model,
                           vectorize=votes.vectorize, alpha=alpha, noise_copies=copies, history=history)  # fmt: skip
    base, train_sigma, ensemble = train_smoothed_ensemble(
        model,
        x_t,
        y_t,
        random_state=random_state,
        sigma_fn=functools.partial(search.run, verbose=verbose),
        nb_models=nb_models,
        scale=search.scale,
        warmup_epochs=warmup_epochs,
        loss_fn=loss_fn,
        optimizer_factory=optimizer_factory,
        nb_epochs=nb_epochs,
        batch_size=batch_size,
        noise=noise,
        vectorize=votes.vectorize,
        amp=search.amp,
        members_per_chunk=members_per_chunk,
        store=store,
        member_runner=search.executor.member_runner(verbose),
        wave_size=None if growth is None else growth.wave_size,
        stop=stop,
        verbose=verbose,
    )
    logger.info(
        "Fitted %d members; training sigma in [%.4f, %.4f].", ensemble.nb_models, train_sigma.min(), train_sigma.max()
    )
    record = FittedEnsemble(
        ensemble.to(x_t.device),
        train_sigma.cpu().numpy(),
        random_state=random_state,
        train_noise_copies=copies,
        growth_history=history,
        memory=CertificationMemory() if use_memory else None,
    )
    return base, record


# ----------------------------------------------------------------------------------------------------- certify
def check_vote_count(n, sample_size: int, nb_models: int, draws_per_model: int) -> None:
    """Refuse a number of votes ``n`` (``None``: all) that the ensemble cannot cast."""
    if n is not None and not 1 <= check_int(n, "n") <= sample_size:
        raise ValueError(
            f"n must be in [1, {sample_size}], got n={n!r}: n counts votes and the ensemble has "
            f"{sample_size} (nb_models={nb_models} x draws_per_model={draws_per_model}); unlike "
            "ART's certify(x, n), n is not a Monte-Carlo sample size that can grow: refit with more members"
        )
    if n is not None and n % draws_per_model:
        raise ValueError(f"n must be a multiple of draws_per_model={draws_per_model}, got {n!r}")


def test_sigma(record: FittedEnsemble, model, x_t: torch.Tensor, search: SigmaSearch, verbose: bool) -> torch.Tensor:
    """Test step 4: the sigma of each test input (its own seeded stream, the same for every call)."""
    return search.run(model, x_t, derive_seed(record.random_state, "sigma_test"), verbose)


def count_votes(
    record: FittedEnsemble,
    x_t,
    sigma_t,
    executor: Executor,
    settings: VoteSettings,
    *,
    start_vote=0,
    nb_votes=None,
    batch_size=256,
    verbose=False,
) -> torch.Tensor:
    """Test step 5: the members' votes ``start_vote .. nb_votes - 1`` on ``x_t + sigma_t * e_k``."""
    return executor.vote(
        record.members,
        x_t,
        sigma_t,
        record.test_noise(x_t.device),
        settings,
        start_vote=start_vote,
        nb_votes=nb_votes,
        batch_size=batch_size,
        verbose=verbose,
    )


def certify(
    record: FittedEnsemble,
    x,
    sigma_x,
    counts,
    *,
    alpha: float,
    bound: str,
    draws_per_model: int,
    n=None,
    update_memory: bool = True,
    budgets=None,
    details: bool = False,
):
    """Test steps 6-7 on the votes: the certificate, the storage-update step, and (``details``) the budgets.

    :return: The :class:`~art_certssbd.result.CertificationResult` (with the budget decisions when ``details``).
    """
    # Step 6: the certificate (top class, bound, abstain, paper and conservative radius), in one place.
    record.check_bound(bound)  # a grown ensemble: only "anytime"
    result = certify_votes(counts, sigma_x, alpha=alpha, bound=bound, draws_per_model=draws_per_model, n=n,
                           train_sigma_min=record.train_sigma_min, noise_copies=record.train_noise_copies)  # fmt: skip
    # Step 7: the storage-update step trims against (and, with update_memory, adds to) the certified regions.
    result = apply_memory(record.memory, x, result, update=update_memory)
    return attach_budgets(result, record.train_sigma, budgets) if details else result


def predict(record: FittedEnsemble, x, sigma_x, counts, *, alpha: float, bound: str, draws_per_model: int,
            is_abstain: bool, nb_classes: int) -> np.ndarray:  # fmt: skip
    """The smoothed prediction in ART's format: one-hot rows, all-zero rows where the ensemble abstains (exactly
    where :func:`certify` does; with the memory, certify's trimmed class, and nothing is stored). Without
    ``is_abstain``: the majority vote, except inside a stored region of another label (that region's label)."""
    if not is_abstain:
        pred = counts.argmax(axis=1)
        if record.memory is not None:
            pred = record.memory.query(x, pred, np.zeros(len(pred)))[0]
    else:
        pred = certify(
            record, x, sigma_x, counts, alpha=alpha, bound=bound, draws_per_model=draws_per_model, update_memory=False
        ).pred
    out = np.zeros((len(pred), nb_classes), dtype=np.float32)
    keep = pred != stats.ABSTAIN
    out[np.flatnonzero(keep), pred[keep]] = 1.0
    return out


# ---------------------------------------------------------------------------------------------------- adaptive
def adaptive_looks(looks, nb_models: int, draws_per_model: int, bound: str, first_look: int, growth: float):
    """The looks of :func:`certify_adaptive`, checked: ``looks`` as given, or every vote for ``bound="anytime"`` (a
    confidence sequence holds at every number of votes), or a geometric schedule from ``first_look`` (rounded up to
    whole members) growing by ``growth``, on member boundaries."""
    total = nb_models * draws_per_model
    if looks is None and bound == "anytime":  # a confidence sequence: look after every vote
        looks = np.arange(1, total + 1)
    elif looks is None:  # with several draws per member the looks fall on member boundaries
        first = max(1, -(-check_int(first_look, "first_look") // draws_per_model))
        looks = draws_per_model * look_schedule(nb_models, first, growth)
    return check_looks(looks, total, draws_per_model)


def certify_adaptive(
    record: FittedEnsemble,
    x,
    x_t,
    sigma_t,
    executor: Executor,
    settings: VoteSettings,
    *,
    radius: float,
    alpha: float,
    bound: str,
    looks: np.ndarray,
    spending,
    futility_alpha,
    conservative: bool,
    batch_size: int,
    update_memory: bool,
) -> AdaptiveResult:
    """The adaptive chain: the members vote in ``looks`` on the inputs still undecided, each look certified at its
    level (:func:`~art_certssbd.sequential.run_sequential`), then the storage-update step in input order."""
    record.check_bound(bound)  # a grown ensemble: only "anytime"

    def draw(idx: np.ndarray, start: int, stop: int) -> np.ndarray:
        rows = torch.from_numpy(idx).to(x_t.device)
        counts = count_votes(
            record, x_t[rows], sigma_t[rows], executor, settings, start_vote=start, nb_votes=stop, batch_size=batch_size
        )
        return counts.cpu().numpy()

    sigma = sigma_t.cpu().numpy().astype(np.float64)
    result = run_sequential(
        draw,
        len(x),
        sigma,
        radius,
        alpha,
        looks,
        spending=spending,
        futility_alpha=futility_alpha,
        conservative=conservative,
        nb_classes=settings.nb_classes,
        bound=bound,
        draws_per_model=settings.draws_per_model,
        train_sigma_min=record.train_sigma_min,
        noise_copies=record.train_noise_copies,
    )
    # the storage-update step on the answers (nothing when use_memory=False)
    return apply_memory_adaptive(
        record.memory,
        x,
        result,
        sigma,
        train_sigma_min=record.train_sigma_min,
        noise_copies=record.train_noise_copies,
        conservative=conservative,
        update=update_memory,
    )
