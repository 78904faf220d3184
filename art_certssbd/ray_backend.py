"""Scale-out on Ray: the members, the sigma optimisation and the votes of a smoothed ensemble as Ray tasks.

The three pieces of work are independent, which is Ray's task model:

* **members** (training step 3): member ``k`` depends only on ``(random_state, k)``, the data and the training sigmas
  (:mod:`art_certssbd.noise`), so blocks of members train as tasks and each finished member is handed back to the
  driver, which checkpoints it at once (:class:`~art_certssbd.checkpoint.EnsembleCheckpoint`): a restarted ``fit``
  trains only what is missing, and a task whose worker dies is retried from scratch with the same seeds;
* **sigmas** (training step 2, test step 4): every sample's SGA is separate and its noise draws are shared by step
  index (:func:`~art_certssbd.noise.sigma_noise`), so the samples are sharded in whole optimiser batches and the
  result does not depend on the sharding;
* **votes** (test step 5): blocks of members vote as tasks and the driver adds the integer vote counts, so the
  certificate is the one of the in-memory path.

The training data goes into the object store once per call (``ray.put``); tasks ask for ``num_cpus`` CPUs and
``num_gpus`` GPUs (fractional, so several small members share one GPU). Nothing here imports Ray until a Ray executor
is used; without Ray installed that raises an ImportError naming the extra (``pip install 'art-certssbd[ray]'``).

**Bitwise equality with the local path** (CPU): a task runs with ``torch.set_num_threads(threads)``, by default
the driver's own ``torch.get_num_threads()`` when the task is sent; torch's CPU kernels round differently with
different thread counts, so with that default the ensemble, sigmas and votes are bitwise those of the local run in
the same process (a Ray fit resumed locally, or the reverse, gives the uninterrupted ensemble). Set ``threads`` (for
example to ``int(num_cpus)``, so that tasks do not oversubscribe their CPUs) to trade that equality for speed: the
results then equal a local run with that many torch threads.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable, Iterator, Sequence

import torch
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")


def import_ray():
    """Ray, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError as err:
        raise ImportError(
            "executor='ray' needs Ray, which is not installed: pip install 'art-certssbd[ray]' (or pip install ray)"
        ) from err
    return ray


@dataclasses.dataclass(frozen=True)
class RayExecutor:
    """Where and how the Ray tasks run (the estimator parameter ``executor``; ``executor="ray"`` is
    ``RayExecutor()``).

    :param address: Address of a running Ray cluster (``"auto"``, ``"ray://host:10001"``); ``None`` (default) joins
           the Ray instance of this process or starts a local one (``ray.init()``).
    :param num_cpus: CPUs per task.
    :param num_gpus: GPUs per task (fractions share a GPU between tasks); ``None`` (default): 0.25 when the estimator
           computes on CUDA, else 0.
    :param threads: torch intra-op threads in a task (default: the driver's ``torch.get_num_threads()``, so that the
           results equal the local path's bitwise).
    :param members_per_task: Members trained, or voting, per task.
    :param samples_per_task: Samples per sigma-optimisation task (rounded to whole optimiser batches; default: the
           samples split into one task per cluster CPU).
    :param max_retries: Retries of a failed task (an exception or a dead worker); finished members are kept.
    :param init_kwargs: Extra arguments of ``ray.init`` when this executor starts Ray.
    """

    address: str | None = None
    num_cpus: float = 1.0
    num_gpus: float | None = None
    threads: int | None = None
    members_per_task: int = 1
    samples_per_task: int | None = None
    max_retries: int = 3
    init_kwargs: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        def number(name, value, minimum, integer=False, optional=False):
            if optional and value is None:
                return
            kind = int if integer else int | float
            if isinstance(value, bool) or not isinstance(value, kind) or value < minimum:
                what = "an integer" if integer else "a number"
                raise ValueError(f"{name} must be {what} >= {minimum}{' or None' if optional else ''}, got {value!r}")

        number("num_cpus", self.num_cpus, 0)
        number("num_gpus", self.num_gpus, 0, optional=True)
        number("threads", self.threads, 1, integer=True, optional=True)
        number("members_per_task", self.members_per_task, 1, integer=True)
        number("samples_per_task", self.samples_per_task, 1, integer=True, optional=True)
        number("max_retries", self.max_retries, 0, integer=True)
        if not isinstance(self.init_kwargs, dict):
            raise ValueError(f"init_kwargs must be a dict, got {self.init_kwargs!r}")

    # ------------------------------------------------------------------------------------------------ plumbing
    def _start(self):
        ray = import_ray()
        if not ray.is_initialized():
            ray.init(address=self.address, **self.init_kwargs)
        return ray

    def _remote(self, fn: Callable, device: torch.device):
        ray = self._start()
        gpus = self.num_gpus if self.num_gpus is not None else (0.25 if device.type == "cuda" else 0)
        return ray.remote(fn).options(
            num_cpus=self.num_cpus, num_gpus=gpus, max_retries=self.max_retries, retry_exceptions=True
        )

    def _threads(self) -> int:
        return self.threads if self.threads is not None else torch.get_num_threads()

    def _results(self, ray, refs: dict, desc: str, verbose: bool) -> Iterator[tuple[object, object]]:
        """``(key, result)`` of each task as it finishes (a task that fails after its retries raises here)."""
        pending = dict(refs)
        with tqdm(total=len(pending), desc=desc, disable=not verbose) as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                key = pending.pop(done[0])
                yield key, ray.get(done[0])
                bar.update(1)

    # ---------------------------------------------------------------------------------------------- the work
    def train_members(
        self, template, x, y, sigma, members: Sequence[int], *, verbose: bool = False, **train_kwargs
    ) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        """Train ``members`` as tasks of ``members_per_task``; yields ``(k, state_dict)`` as each block finishes
        (the caller checkpoints them). ``train_kwargs``: those of :func:`art_certssbd.training.train_members`."""
        ray = self._start()
        device = x.device
        data = ray.put((template, x.cpu(), y.cpu(), sigma.cpu()))
        task = self._remote(_train_block, device)
        blocks = [list(members[i : i + self.members_per_task]) for i in range(0, len(members), self.members_per_task)]
        refs = {task.remote(data, block, device.type, self._threads(), train_kwargs): tuple(block) for block in blocks}
        for block, states in self._results(ray, refs, "Ensemble (Ray)", verbose):
            yield from zip(block, states)

    def optimize_sigma(
        self, model, x: torch.Tensor, *, batch_size: int | None = None, verbose: bool = False, **options
    ):
        """:func:`art_certssbd.sigma.optimize_sigma` on shards of whole optimiser batches (the same sigmas: each
        sample's ascent is separate and its noise is shared by step index). ``options``: those of
        ``optimize_sigma`` (``sigma0``, ``steps``, ``n_samples``, ...)."""
        ray = self._start()
        n = x.shape[0]
        from art_certssbd.sigma import default_batch_size, optimize_sigma

        if batch_size is None:  # optimize_sigma's own default, so that the batches (and the rounding) are the same
            batch_size = default_batch_size(x.device, options.get("n_samples", 16))
        if n == 0:
            return optimize_sigma(model, x, batch_size=batch_size, **options)
        per = self.samples_per_task or math.ceil(n / max(1, int(ray.cluster_resources().get("CPU", 1))))
        per = max(batch_size, math.ceil(per / batch_size) * batch_size)  # whole batches: the sharding is invisible
        task = self._remote(_sigma_block, x.device)
        model_ref = ray.put(model)
        refs = {
            task.remote(model_ref, x[i : i + per].cpu(), x.device.type, self._threads(), batch_size, options): i
            for i in range(0, n, per)
        }
        parts = dict(self._results(ray, refs, "Sigma (Ray)", verbose))
        return torch.cat([parts[i] for i in sorted(parts)]).to(x.device)

    def vote(self, ensemble, x, sigma, noise_fn, nb_classes: int, *, draws_per_model: int, start_vote: int = 0,
             nb_votes: int | None = None, verbose: bool = False, **vote_kwargs) -> torch.Tensor:  # fmt: skip
        """:func:`art_certssbd.ensemble.vote` with blocks of ``members_per_task`` members voting as tasks; the
        integer vote counts add up to those of one local call (``ensemble``: in memory or a
        :class:`~art_certssbd.streaming.SavedEnsemble`, whose tasks read their members from its directory)."""
        from art_certssbd.streaming import block_source, member_blocks, shifted_noise

        ray = self._start()
        total = ensemble.nb_models * draws_per_model
        nb_votes = total if nb_votes is None else nb_votes
        task = self._remote(_vote_block, x.device)
        inputs = ray.put((x.cpu(), sigma.cpu()))
        refs = {}
        for m0, m1, s, e in member_blocks(draws_per_model, start_vote, nb_votes, self.members_per_task):
            source = block_source(ensemble, m0, m1)
            shifted = functools.partial(shifted_noise, noise_fn, m0)
            args = (source, inputs, shifted, nb_classes, draws_per_model, s, e, x.device.type, self._threads())
            refs[task.remote(*args, vote_kwargs)] = m0
        counts = torch.zeros(x.shape[0], nb_classes, dtype=torch.int64)
        for _, part in self._results(ray, refs, "Votes (Ray)", verbose):
            counts += part
        return counts.to(x.device)


def resolve_executor(executor) -> RayExecutor | None:
    """``None`` for the local path, a :class:`RayExecutor` for Ray (``"ray"`` gives the defaults)."""
    if isinstance(executor, RayExecutor):
        return executor
    if executor == "ray":
        return RayExecutor()
    if executor == "local":
        return None
    raise ValueError(f"executor must be 'local', 'ray' or a RayExecutor, got executor={executor!r}")


# --------------------------------------------------------------------------------- the tasks (run on the workers)
def _worker_device(kind: str) -> torch.device:
    return torch.device("cuda" if kind == "cuda" and torch.cuda.is_available() else "cpu")


def _train_block(data, members, device_kind, threads, train_kwargs):
    from art_certssbd.training import train_members

    torch.set_num_threads(threads)
    template, x, y, sigma = data
    device = _worker_device(device_kind)
    return train_members(template, x.to(device), y.to(device), sigma.to(device), members, **train_kwargs)


def _sigma_block(model, x, device_kind, threads, batch_size, sigma_kwargs):
    from art_certssbd.sigma import optimize_sigma

    torch.set_num_threads(threads)
    device = _worker_device(device_kind)
    return optimize_sigma(model.to(device), x.to(device), batch_size=batch_size, **sigma_kwargs).cpu()


def _vote_block(source, inputs, noise_fn, nb_classes, draws, start, stop, device_kind, threads, vote_kwargs):
    from art_certssbd.ensemble import vote

    torch.set_num_threads(threads)
    device = _worker_device(device_kind)
    x, sigma = inputs
    ensemble = source().to(device)
    counts = vote(ensemble, x.to(device), sigma.to(device), noise_fn, nb_classes, draws_per_model=draws,
                  start_vote=start, nb_votes=stop, **vote_kwargs)  # fmt: skip
    return counts.cpu()
