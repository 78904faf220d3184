"""``certssbd fit``: load (and optionally poison) a training set, train a RAB or Cert-SSBD ensemble, save it.

A fit directory, once complete::

    config.toml    the resolved options (``certssbd fit --config DIR/config.toml`` repeats the run)
    fit.json       data, poisoning, training sigmas, timings, versions
    ensemble/      the fitted ensemble (``save_ensemble`` format; ``certssbd certify DIR`` reads it)

While training, everything lives in ``DIR.partial/`` (the same files plus ``checkpoint/``, where every finished member
is stored at once), renamed to ``DIR`` only when the ensemble is saved. So ``DIR`` is always a complete fit, and an
interrupted fit (Ctrl-C, a kill, a crash) leaves ``DIR.partial/``: running the same command again resumes from it and
ends with the same ensemble as an uninterrupted run. A mistake found before training (a wrong option, missing data,
an unknown class) creates nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from art_certssbd._version import __version__
from art_certssbd.checkpoint import CheckpointError
from art_certssbd.runs.build import (
    COMMON_PARAMS,
    SIGMA_PARAMS,
    auto_model,
    build_estimator,
    build_model,
    estimator_params,
    load_data,
    make_trigger,
)
from art_certssbd.runs.config import read_config, toml_text
from art_certssbd.runs.options import UsageError, options_of
from art_certssbd.runs.outputs import (
    SESSIONS,
    check_writable_parent,
    earlier_sessions,
    exclusive,
    json_values,
    keep_damaged,
    runs_dir,
    write_sessions,
)

logger = logging.getLogger(__name__)

#: Options that change how fast a fit runs or where it goes, not what it learns.
NOT_IDENTITY = ("output", "device", "quiet", "vectorize", "members_per_chunk", "executor", "ray_address")
_EARLY_STOP = ("sigma_tol", "sigma_patience")
#: Options left out of the identity when unset (``None``), so that runs written before they existed keep their names.
_NEW_OPTIONS = ("channels",)
#: Options outside the identity that still change the members' values (``vmap`` against the loop differs in
#: rounding): an unfinished fit resumes only with the value it was started with. ``members_per_chunk`` does not
#: (tests/test_pipeline.py, tests/test_resume.py), nor ``device`` here (the checkpoint records the device type).
RESUME_CHECKED = ("vectorize",)


def identity(values: dict[str, Any]) -> dict[str, Any]:
    """The options that determine the fitted ensemble (without the SGA's early stop when it is off, so that runs
    written before it existed keep their names)."""
    off = values.get("sigma_tol") is None
    unset = {key for key in _NEW_OPTIONS if values.get(key) is None}
    return json_values(
        {k: v for k, v in values.items() if k not in NOT_IDENTITY and not (off and k in _EARLY_STOP) and k not in unset}
    )


def stored_fit_options(directory: Path) -> dict[str, Any]:
    """The resolved options in ``directory/config.toml`` (every fit option, ``None`` where the file has none)."""
    stored = read_config(directory / "config.toml", "fit")
    return {option.key: stored.get(option.key) for option in options_of("fit")}


def _first_difference(stored: dict, wanted: dict, resume: bool = False) -> str | None:
    """The first option, with both values, that differs between a stored fit and this command; with ``resume``, the
    options that change the members' values without naming the run (:data:`RESUME_CHECKED`) count too."""
    # (a config.toml without the key: not checked here; the checkpoint's training-path record still is)
    extra = {k: (stored.get(k), wanted.get(k)) for k in RESUME_CHECKED if stored.get(k) is not None} if resume else {}
    stored, wanted = identity(stored), identity(wanted)
    for key, (old, new) in extra.items():
        stored[key], wanted[key] = old, new
    for key in sorted(set(stored) | set(wanted)):
        if stored.get(key) != wanted.get(key):
            return f"--{key.replace('_', '-')} {stored.get(key)!r} (this command: {wanted.get(key)!r})"
    return None


def run_fit(values: dict[str, Any], command: str = "certssbd fit") -> Path:
    """Run ``certssbd fit`` with resolved options; return the fit directory."""
    if values.get("data") is None:
        raise UsageError("--data is required (for example --data mnist:/path/to/mnist), as a flag or in --config")
    spec = values["data"].resolved()
    data, _ = load_data(spec, "train", values)
    input_shape = tuple(int(d) for d in data.x.shape[1:])
    if values["poison"] != "none" and not values["target"] < data.nb_classes:
        raise UsageError(f"--target {values['target']}: expected a label in 0..{data.nb_classes - 1} {data.names()}")
    if len(np.unique(data.y)) < 2:
        raise UsageError(f"--data {str(spec)!r}: the training set holds only one class ({data.names()[data.y[0]]})")
    model_name = values["model"]
    if model_name == "auto":
        model_name, reason = auto_model(input_shape)
        logger.info("--model auto: %s, for %s (name another with --model)", model_name, reason)
    net = build_model(model_name, data.nb_classes, input_shape, values["model_args"], values["seed"])
    params = estimator_params(values)
    # every estimator option explicit (the estimator's defaults filled in; None for Cert-SSBD's options with RAB)
    resolved = {**values, "data": spec, "model": model_name, "memory": params.get("use_memory")}
    resolved.update({key: params.get(key) for key in COMMON_PARAMS + SIGMA_PARAMS if key != "use_memory"})
    digest = hashlib.sha256(json.dumps(identity(resolved), sort_keys=True).encode()).hexdigest()[:10]
    output = Path(values["output"] or runs_dir() / f"{values['method']}-{spec.kind}-{digest}").absolute()
    resolved["output"] = output
    check_writable_parent(output)
    if _finished(output, resolved):
        return output
    staging = output.with_name(output.name + ".partial")
    if staging.exists():
        difference = (
            _first_difference(stored_fit_options(staging), resolved, resume=True)
            if (staging / "config.toml").is_file()
            else None
        )
        if difference is not None:
            raise UsageError(
                f"--output {str(output)!r}: the unfinished fit in {str(staging)!r} was started with {difference}; "
                "re-run the command that started it to resume, or delete that directory"
            )
    trigger = make_trigger(values["poison"], values["delta"])
    x, y, is_poison = data.x, data.y, np.zeros(len(data.y), dtype=bool)
    if trigger is not None:
        from art_certssbd.attacks import poison_dataset

        try:
            x, y, is_poison = poison_dataset(x, y, trigger, values["rate"], values["target"], values["seed"])
        except ValueError as err:
            raise UsageError(f"--rate {values['rate']} --target {values['target']}: {err}") from None
    chunk = values.get("members_per_chunk")
    if chunk is None and (values["device"] == "cpu" or not torch.cuda.is_available()):
        chunk = 1  # members train one by one on the CPU: store each as soon as it is done
    if chunk is not None:  # the estimator trains (and checkpoints) memory_budget // x.nbytes members together
        params["memory_budget"] = chunk * max(1, x.nbytes)
    est = build_estimator(values, params, net, data, values["poison"])
    _warn_if_nothing_can_be_certified(params, data.nb_classes)
    _warn_if_sigma_may_fall_below_scale(params)

    created = not staging.exists()
    staging.mkdir(parents=True, exist_ok=True)
    with exclusive(staging, "--output"):
        if created or not (staging / "config.toml").is_file():
            _write_config(staging / "config.toml", resolved, command)
        tic = time.perf_counter()
        logger.info(
            "Fitting %s (%d members) on %d images %s; checkpoints in %s",
            values["method"],
            params["nb_models"],
            len(y),
            input_shape,
            staging / "checkpoint",
        )
        earlier = earlier_sessions(staging)
        try:
            try:
                est.fit(
                    x, y, batch_size=values["batch_size"], nb_epochs=values["epochs"],
                    checkpoint_dir=staging / "checkpoint",
                )  # fmt: skip
            except BaseException as err:  # Ctrl-C, a kill (SIGTERM) or a crash: count this session's time
                if not isinstance(err, ValueError):
                    write_sessions(staging, [*earlier, time.perf_counter() - tic])
                raise
        except CheckpointError as err:
            raise UsageError(
                f"--output {str(output)!r}: the unfinished fit in {str(staging)!r} does not match this command ({err})"
            ) from None
        except ValueError as err:
            if created:
                shutil.rmtree(staging, ignore_errors=True)
            raise UsageError(f"fit: {err}") from None
        sessions = [*earlier, time.perf_counter() - tic]
        est.save_ensemble(staging / "ensemble")
        _write_summary(staging / "fit.json", resolved, command, spec, data, is_poison, est, sessions)
        (staging / SESSIONS).unlink(missing_ok=True)
        (staging / ".lock").unlink(missing_ok=True)
        staging.rename(output)
    keep_damaged(output)
    shutil.rmtree(output / "checkpoint", ignore_errors=True)
    logger.info("Fitted in %.1f s (%d session(s)): %s", sum(sessions), len(sessions), output)
    logger.info(
        "Largest certifiable radius (unanimous votes of %d members at sigma0 = %g, alpha = %g): %.4g",
        est.nb_models,
        est.scale,
        est.alpha,
        est.max_certifiable_radius,
    )
    return output


def _finished(output: Path, resolved: dict) -> bool:
    """Whether ``output`` already holds this very fit (then there is nothing to do); refuse any other content."""
    if not output.exists() or (output.is_dir() and not any(output.iterdir())):
        return False
    if not ((output / "config.toml").is_file() and (output / "ensemble").is_dir()):
        raise UsageError(f"--output {str(output)!r}: exists and is not a certssbd fit directory; choose another")
    difference = _first_difference(stored_fit_options(output), resolved)
    if difference is not None:
        raise UsageError(
            f"--output {str(output)!r}: already holds a fit with {difference}; choose another --output or delete it"
        )
    shutil.rmtree(output / "checkpoint", ignore_errors=True)  # left by a crash right after the final rename
    logger.warning("%s already holds this fit: nothing to do", output)
    return True


def _warn_if_nothing_can_be_certified(params: dict, nb_classes: int) -> None:
    """Warn when even a unanimous vote cannot be certified (too few members for alpha), before hours of training."""
    from art_certssbd.certification import certify_votes
    from art_certssbd.stats import ABSTAIN

    votes = params["nb_models"] * params["draws_per_model"]
    counts = np.zeros((1, nb_classes), dtype=np.int64)
    counts[0, 0] = votes
    best = certify_votes(
        counts, 1.0, alpha=params["alpha"], bound=params["bound"], draws_per_model=params["draws_per_model"]
    )
    if best.pred[0] == ABSTAIN:
        logger.warning(
            "with %d votes (--nb-models x --draws-per-model), --alpha %g and --bound %s no input can be certified, "
            "even with every vote for one class: use more members or a larger --alpha",
            votes,
            params["alpha"],
            params["bound"],
        )


def _warn_if_sigma_may_fall_below_scale(params: dict) -> None:
    """``--sigma-bounds`` below ``--scale``: the SGA may give samples less noise than sigma0 (the default keeps
    sigma0 the minimum), which shrinks the conservative radius and the noise the backdoor is smoothed with."""
    bounds = params.get("sigma_bounds")
    if bounds is not None and params.get("sigma_steps", 0) > 0 and bounds[0] < params["scale"]:
        logger.warning(
            "--sigma-bounds %g,%g starts below --scale %g: samples may get less noise than sigma0 (by default sigma0 "
            "is the minimum), which shrinks the conservative radius and weakens the smoothing of a trigger",
            bounds[0],
            bounds[1],
            params["scale"],
        )


def _write_config(path: Path, resolved: dict, command: str) -> None:
    from art_certssbd.report import write_text

    keys = [option.key for option in options_of("fit") if option.key not in ("quiet",)]
    text = toml_text(
        "fit",
        {key: json_values({"v": resolved.get(key)})["v"] for key in keys},
        comment=f"Written by {command!r} (art-certssbd {__version__}): every option, resolved.\n"
        "Repeat the run with: certssbd fit --config THIS_FILE",
    )
    write_text(path, text)


def _write_summary(path, resolved, command, spec, data, is_poison, est, sessions) -> None:
    from art_certssbd.experiment import environment
    from art_certssbd.report import write_json

    sigma = est.train_sigma_
    write_json(
        path,
        {
            "kind": "fit",
            "command": command,
            "art_certssbd": __version__,
            "options": json_values(resolved),
            "data": {
                "source": str(spec),
                "split": "train",
                "nb_samples": int(len(data.y)),
                "input_shape": list(data.x.shape[1:]),
                "class_names": data.names(),
                "class_counts": np.bincount(data.y, minlength=data.nb_classes).tolist(),
                "nb_poisoned": int(is_poison.sum()),
                "poisoned": np.flatnonzero(is_poison).tolist(),
            },
            "random_state": int(est.random_state_),
            "train_sigma": {"min": float(sigma.min()), "mean": float(sigma.mean()), "max": float(sigma.max())},
            # unanimous votes at sigma0: 0 means that every input will abstain (too few members for alpha)
            "max_certifiable_radius": float(est.max_certifiable_radius),
            "timings_s": {
                "fit": sum(sessions),
                "fit_sessions": sessions,
                "note": "fit: the training time summed over the sessions of a resumed fit (one per interruption; a "
                "session ended by SIGKILL is not counted)",
            },
            "environment": environment(),
        },
    )
