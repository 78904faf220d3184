"""Where runs are written, and how: whole directories appear at once, never half written.

* :func:`runs_dir`: the default home of fit and report outputs, in the user's data directory (never a source tree).
* :func:`staged_directory`: build a directory beside its target and rename it into place when complete; on an
  error the staging directory is removed, so no partial output is left behind.
* :func:`exclusive`: a lock file, so that two processes never write one fit's checkpoint at the same time.
* :func:`earlier_sessions` / :func:`write_sessions`: the training time of each interrupted session of a fit.
* :func:`keep_damaged`: member files a resume set aside, kept in the finished fit's ``damaged/``.
* :func:`json_values`: options as JSON values, as the summaries of fit and certify record them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from art_certssbd._io import fsync_dir
from art_certssbd.runs.options import UsageError

logger = logging.getLogger(__name__)

RUNS_ENV = "ART_CERTSSBD_RUNS"
#: In ``DIR.partial/``: the training time of each interrupted session (a SIGKILL's session is not counted).
SESSIONS = "sessions.json"


def json_values(values: dict[str, Any]) -> dict[str, Any]:
    """JSON values (paths and data specs as strings, tuples as lists)."""
    return json.loads(json.dumps(values, default=str))


def runs_dir() -> Path:
    """``$ART_CERTSSBD_RUNS`` when set, else ``$XDG_DATA_HOME/art-certssbd/runs`` (``~/.local/share/...``).

    Not created here.
    """
    env = os.environ.get(RUNS_ENV)
    if env:
        return Path(env).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home).expanduser() / "art-certssbd" / "runs"


def check_writable_parent(target: Path, option: str = "--output") -> None:
    """Refuse a ``target`` whose nearest existing ancestor is a file or not writable (before any work)."""
    ancestor = target
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if target.exists() and not target.is_dir():
        raise UsageError(f"{option} {str(target)!r}: exists and is not a directory")
    if not ancestor.is_dir():
        raise UsageError(f"{option} {str(target)!r}: {str(ancestor)!r} is a file, not a directory")
    if not os.access(ancestor, os.W_OK):
        raise UsageError(f"{option} {str(target)!r}: directory {str(ancestor)!r} is not writable")


@contextlib.contextmanager
def staged_directory(target: Path, replace: bool = False) -> Iterator[Path]:
    """Yield an empty directory beside ``target`` that becomes ``target`` when the block succeeds.

    :param target: The final directory.
    :param replace: Replace an existing ``target`` (else it must not exist). The old one is moved aside first and
           deleted only after the new one is in place.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 is for the temporary name, not for the result
    try:
        yield tmp
        fsync_dir(tmp)
        if target.exists():
            if not replace:
                raise UsageError(f"--output {str(target)!r} appeared while this command ran; nothing was replaced")
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.rename(target, old / target.name)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
        fsync_dir(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def exclusive(directory: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``directory/.lock`` (POSIX ``flock``; a no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    lock = directory / ".lock"
    with open(lock, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"{what} {str(directory)!r} is in use by another certssbd process") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def earlier_sessions(staging: Path) -> list[float]:
    """The training times of the earlier, interrupted sessions of an unfinished fit (none when there were none)."""
    try:
        return [float(v) for v in json.loads((staging / SESSIONS).read_text(encoding="utf-8"))["fit_s"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def write_sessions(staging: Path, sessions: list[float]) -> None:
    from art_certssbd.report import write_json

    if staging.is_dir():
        write_json(staging / SESSIONS, {"fit_s": sessions})


def keep_damaged(output: Path) -> None:
    """Move member files a resume set aside (``*.damaged``) to ``DIR/damaged/`` before the checkpoint goes."""
    damaged = sorted((output / "checkpoint").glob("*.damaged*"))
    if damaged:
        (output / "damaged").mkdir(exist_ok=True)
        for path in damaged:
            path.rename(output / "damaged" / path.name)
        logger.warning(
            "kept %d damaged checkpoint file(s), set aside and retrained, in %s", len(damaged), output / "damaged"
        )
