"""The training pipeline of a smoothed ensemble (the method's training steps), resumable from a checkpoint.

::

    1. base  <- init(model); fit base on x + sigma0 * b               (warm-up: the sigma optimiser's model)
    2. sigma <- sigma_fn(base, x)                                     (one sigma per training sample; sigma0 for RAB)
    3. for k in 1..M: f_k <- init(model); fit f_k on x_i + sigma_i * b_{k,i}

Every random choice derives from ``random_state`` (:func:`~art_certssbd.noise.derive_seed`), so the result depends
on the architecture of ``model`` and on the data, not on ``model``'s current weights. ``scale`` is the estimators'
``scale`` (ART's name for the smoothing sigma, the paper's and :func:`~art_certssbd.sigma.optimize_sigma`'s
``sigma0``). With a ``store`` (an :class:`~art_certssbd.checkpoint.EnsembleCheckpoint`) each finished step and member
is saved as soon as it is done and a later call with the same store skips what is there; the outcome is the same as
an uninterrupted run.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator

import torch
from tqdm.auto import tqdm

from art_certssbd.checkpoint import EnsembleCheckpoint
from art_certssbd.ensemble import StackedEnsemble
from art_certssbd.noise import derive_seed
from art_certssbd.training import fit_model, init_member, train_members

logger = logging.getLogger(__name__)

BASE_MEMBER = 2**31  # the base model's index in the seed derivation, clear of every member index

#: ``runner(template, x, y, sigma, members, **train_options)`` yields ``(k, state_dict)`` for every member ``k`` of
#: ``members``, in any order (``train_options``: those of :func:`~art_certssbd.training.train_members`).
MemberRunner = Callable[..., Iterator[tuple[int, dict]]]


def _train_here(template, x, y, sigma, members, *, members_per_chunk: int, verbose: bool, **train_options):
    """The local runner: ``members_per_chunk`` members at a time, in this process, with one progress bar over all the
    members (and, for a chunk trained together, a passing one over its epochs)."""
    with tqdm(total=len(members), desc="Members", unit="member", disable=not verbose) as bar:
        for start in range(0, len(members), members_per_chunk):
            chunk = members[start : start + members_per_chunk]
            inner = verbose and len(chunk) > 1
            for k, state in zip(chunk, train_members(template, x, y, sigma, chunk, verbose=inner, **train_options)):
                bar.update(1)
                yield k, state


def train_smoothed_ensemble(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    random_state: int,
    sigma_fn: Callable[[torch.nn.Module, torch.Tensor, int], torch.Tensor],
    nb_models: int,
    scale: float,
    warmup_epochs: int,
    loss_fn: Callable,
    optimizer_factory: Callable,
    nb_epochs: int,
    batch_size: int,
    noise: str = "fixed",
    vectorize: bool = True,
    amp: str | None = None,
    members_per_chunk: int = 1,
    store: EnsembleCheckpoint | None = None,
    member_runner: MemberRunner | None = None,
    wave_size: int | None = None,
    stop: Callable[[torch.nn.Module, torch.Tensor, dict, int], bool] | None = None,
    verbose: bool = False,
) -> tuple[torch.nn.Module, torch.Tensor, StackedEnsemble]:
    """Train the base model, the training sigmas and the ``nb_models`` members.

    :param model: The architecture (re-initialised from ``random_state``; its weights are not used or changed).
    :param x: Training inputs on the device of the computation.
    :param y: Integer labels ``(N,)`` on the same device.
    :param random_state: The run's seed (the estimators' ``random_state``): every generator is seeded from it through
           :func:`~art_certssbd.noise.derive_seed`.
    :param sigma_fn: ``sigma_fn(base, x, sigma_seed) -> (N,)`` sigmas (the sigma optimiser, or ``scale``
           everywhere); ``sigma_seed`` is ``derive_seed(random_state, "sigma_train")``.
    :param nb_models: Number of members M.
    :param scale: The estimators' ``scale`` (ART's name; ``sigma0`` in the paper and in
           :func:`~art_certssbd.sigma.optimize_sigma`): the noise level of the warm-up.
    :param warmup_epochs: Epochs of the warm-up (0: the base model keeps its initial weights).
    :param loss_fn: Training loss.
    :param optimizer_factory: ``parameters -> optimizer``, called once per model.
    :param nb_epochs: Epochs per member.
    :param batch_size: Mini-batch size.
    :param noise: ``"fixed"`` (one draw b_{k,i} per member and sample) or ``"fresh"`` (a new draw every epoch).
    :param vectorize: Train the members of a chunk together (see :func:`~art_certssbd.training.train_members`).
    :param amp: Mixed precision of the warm-up and the members' training (see
           :func:`~art_certssbd.training.train_members`); the sigma optimiser gets it through ``sigma_fn``.
    :param members_per_chunk: Members trained, and checkpointed, together.
    :param store: Checkpoint to resume from and save to.
    :param member_runner: How the members are trained (:data:`MemberRunner`; default: here, ``members_per_chunk``
           at a time; the Ray executor runs them as tasks). Each member is checkpointed as soon as it is handed back.
    :param wave_size: With ``stop``: members per wave (members ``0 .. K-1`` are trained in order, a wave at a time).
    :param stop: ``stop(base, train_sigma, states, K) -> bool`` after each wave (``K`` members so far, ``states[k]``
           weights): True ends the training with ``K`` members (:mod:`art_certssbd.growth`). On a resume it is asked
           again at every wave boundary, so it sees what an uninterrupted run saw.
    :param verbose: Progress bars.
    :return: ``(base, train_sigma, ensemble)``; the ensemble has fewer than ``nb_models`` members when ``stop``
        ended the training.
    """
    if store is not None:  # what changes the members' values must not change on a resume (chunking does not)
        executor = "local" if member_runner is None else getattr(member_runner, "executor_name", "ray")
        threads = torch.get_num_threads() if x.device.type == "cpu" else None  # CPU kernels round by thread count
        store.check_training_path(
            {"vectorize": bool(vectorize), "device": x.device.type, "executor": executor, "torch_threads": threads}
        )
    # Step 1: the warm-up, at sigma0, of a fresh copy of the architecture.
    base_seed = derive_seed(random_state, "init", BASE_MEMBER)  # the base model's initial weights and warm-up
    base = init_member(model, base_seed).to(x.device)
    if store is not None and store.has("base"):
        base.load_state_dict(store.load("base"))
    elif warmup_epochs > 0:
        fit_model(
            base,
            x,
            y,
            scale,
            loss_fn=loss_fn,
            optimizer=optimizer_factory(base.parameters()),
            random_state=base_seed,
            nb_epochs=warmup_epochs,
            batch_size=batch_size,
            amp=amp,
            verbose=verbose,
        )
        if store is not None:
            store.save("base", base.state_dict())
    # Step 2: one sigma per training sample.
    if store is not None and store.has("train_sigma"):
        train_sigma = store.load("train_sigma").to(x.device)
    else:
        train_sigma = sigma_fn(base, x, derive_seed(random_state, "sigma_train"))
        if store is not None:
            store.save("train_sigma", train_sigma.cpu())
    # Step 3: M members trained from scratch on x_i + sigma_i * b_{k,i}, chunk by chunk.
    states = store.load_members() if store is not None else {}  # a damaged member is set aside, trained again
    runner = member_runner or functools.partial(_train_here, members_per_chunk=members_per_chunk, verbose=verbose)
    train_options = dict(
        loss_fn=loss_fn,
        optimizer_factory=optimizer_factory,
        random_state=random_state,
        nb_epochs=nb_epochs,
        batch_size=batch_size,
        noise=noise,
        vectorize=vectorize,
        amp=amp,
    )
    wave = nb_models if stop is None else wave_size
    logger.info("Training %d of %d members.", nb_models - len(states), nb_models)
    size = 0
    while size < nb_models:
        end = min(size + wave, nb_models)
        todo = [k for k in range(size, end) if k not in states]
        for k, state in runner(model, x, y, train_sigma, todo, **train_options) if todo else ():
            states[k] = state
            if store is not None:
                store.save_member(k, state)
        size = end
        if stop is not None and size < nb_models and stop(base, train_sigma, states, size):
            logger.info("The growth rule stopped the ensemble at %d of %d members.", size, nb_models)
            break
    ensemble = StackedEnsemble.from_state_dicts(model, [states[k] for k in range(size)])
    return base, train_sigma, ensemble
