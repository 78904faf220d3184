"""The on-disk ensemble format: a directory with a manifest, one file per entry, checksums, atomic writes.

Layout of a checkpoint directory::

    manifest.json        format name and version, kind ("training" or "ensemble"), package and torch versions, the
                         config (seeds included), and for every stored entry its file name and SHA-256
    member_00000.pt      state_dict of member 0 (torch.save of tensors only)
    ...
    base.pt, train_sigma.pt, ...   named extras (the warmed-up base model, the training sigmas, the test-noise seeds)

Two kinds share the format. A *training* checkpoint (``fit(..., checkpoint_dir=...)``) grows one entry at a time:
every file is written to a temporary name and renamed into place, then the manifest is rewritten the same way, so
an interrupted write leaves the previous state intact and an entry listed in the manifest is complete; an entry is
never overwritten in place (a new version gets a new file name, the manifest switches to it, then the old file
goes). A saved *ensemble* (:meth:`EnsembleCheckpoint.staged`, used by ``save_ensemble``) is written whole into a
temporary sibling directory that replaces the target only once it is complete, so a reader sees either the old
ensemble or the new one, never a mix.

Reading verifies the manifest (format, version, kind, well-formed entries), reads each file once into memory, checks
its SHA-256 and only then unpickles it with ``torch.load(weights_only=True)``: a tampered or truncated file is
refused by its checksum, and a file whose checksum was forged to match still cannot run code (anything beyond
tensors and plain containers is refused). One writer per directory: concurrent writers are not coordinated.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from art_certssbd._io import atomic_write, fsync_dir
from art_certssbd._version import __version__

logger = logging.getLogger(__name__)

FORMAT = "art-certssbd-ensemble"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: ``"training"``: fit's resumable checkpoint; ``"ensemble"``: a fitted ensemble written by ``save_ensemble``.
KINDS = ("training", "ensemble")
_KIND_HELP = {
    "training": "training checkpoint (fit's checkpoint_dir: resume it with fit(..., checkpoint_dir=...))",
    "ensemble": "saved ensemble (written by save_ensemble: read it with load_ensemble)",
}
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}$")  # entry and file names: no separators, no leading dot
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MEMBER = re.compile(r"^member_(\d+)$")


#: The value a key of the ``training_path`` record had before the key was recorded (a record written by an older
#: version lacks it). Empty while the record has every key it ever had.
TRAINING_PATH_DEFAULTS: dict[str, Any] = {}


#: How to resume with a recorded setting, where its key is not a parameter name.
_HOW = {"torch_threads": "{old} torch threads (torch.set_num_threads({old}), or OMP_NUM_THREADS={old} for the CLI)"}


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be used: another format, version or kind, a mismatched config, a bad
    checksum, or content that is not tensors."""


class DamagedEntryError(CheckpointError):
    """An entry whose file is missing or fails its SHA-256 check (a resume sets such a member aside)."""


def _member_key(k: int) -> str:
    return f"member_{k:05d}"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def to_json(config: dict[str, Any] | None) -> dict[str, Any]:
    """``config`` as plain JSON values (numpy scalars and arrays, tuples and paths converted), as stored."""
    try:
        return json.loads(json.dumps(config or {}, default=_json_default, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"config must be JSON-serialisable with finite numbers: {err}") from err


def _check_manifest(manifest: Any, path: Path) -> dict:
    """Structural checks of a manifest read from ``path`` (format, version, kind, config, entries)."""
    where = repr(str(path))
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{where} is not an {FORMAT} manifest (format={_get(manifest, 'format')!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{where} has format_version {manifest.get('format_version')!r}; this version of art-certssbd "
            f"({__version__}) reads format_version {FORMAT_VERSION}"
        )
    if manifest.get("kind", "training") not in KINDS:
        raise CheckpointError(f"{where} has kind {manifest.get('kind')!r}, expected one of {KINDS}")
    if not isinstance(manifest.get("config"), dict) or not isinstance(manifest.get("entries"), dict):
        raise CheckpointError(f"{where} is malformed: 'config' and 'entries' must be JSON objects")
    for name, entry in manifest["entries"].items():
        ok = isinstance(entry, dict) and isinstance(entry.get("file"), str) and isinstance(entry.get("sha256"), str)
        if not (ok and _NAME.match(name) and _NAME.match(entry["file"]) and entry["file"] != MANIFEST):
            raise CheckpointError(
                f"{where} is malformed: entry {name!r} -> {entry!r} is not a plain file in the directory"
            )
        if not _SHA256.match(entry["sha256"]):
            raise CheckpointError(f"{where} is malformed: entry {name!r} has sha256 {entry['sha256']!r}")
    return manifest


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None


class EnsembleCheckpoint:
    """A checkpoint directory (created on the first write).

    :param path: The directory.
    :param config: The JSON-serialisable configuration. When the directory already holds a manifest, its config
           must equal this one, key by key, or :class:`CheckpointError` names the first difference.
    :param kind: ``"training"`` (fit's resumable checkpoint, the default) or ``"ensemble"`` (a saved ensemble); an
           existing directory of the other kind is refused.
    :param must_exist: Refuse a directory without a manifest (:class:`FileNotFoundError` when it does not exist,
           :class:`CheckpointError` when it holds no manifest) instead of starting a new checkpoint.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        config: dict[str, Any] | None = None,
        *,
        kind: str = "training",
        must_exist: bool = False,
    ):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.path, self.kind, self._defer = Path(path), kind, False
        manifest_path = self.path / MANIFEST
        if self.path.exists() and not self.path.is_dir():
            raise CheckpointError(f"checkpoint path {str(self.path)!r} exists and is not a directory")
        if manifest_path.exists():
            self.manifest = self._read_manifest(manifest_path)
            stored = self.manifest.get("kind", kind)  # manifests written before kinds existed fit either
            if stored != kind:
                raise CheckpointError(f"{str(self.path)!r} holds a {_KIND_HELP[stored]}, not a {_KIND_HELP[kind]}")
            if self.manifest.get("torch_version") != torch.__version__:
                logger.warning(
                    "%s was written with torch %s, this is torch %s: resumed results may differ in rounding",
                    self.path,
                    self.manifest.get("torch_version"),
                    torch.__version__,
                )
            if config is not None:  # a writer (fit resuming): check the config, drop what a killed writer left
                self._check_config(self.manifest["config"], to_json(config))
                self._remove_stale_temporaries()
        elif must_exist:
            if not self.path.exists():
                raise FileNotFoundError(f"checkpoint directory {str(self.path)!r} does not exist")
            raise CheckpointError(
                f"{str(self.path)!r} holds no {MANIFEST}: it is not an art-certssbd ensemble directory"
            )
        else:
            self.manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "kind": kind,
                "package_version": __version__,
                "torch_version": torch.__version__,
                "config": to_json(config),
                "entries": {},
            }

    @classmethod
    def open(cls, path: str | os.PathLike, kind: str | None = "ensemble") -> EnsembleCheckpoint:
        """An existing checkpoint of ``kind`` (``None``: of either kind), for reading (see ``must_exist``)."""
        manifest = Path(path) / MANIFEST
        if kind is None:
            kind = cls._read_manifest(manifest).get("kind", "training") if manifest.is_file() else "ensemble"
        return cls(path, kind=kind, must_exist=True)

    @classmethod
    @contextlib.contextmanager
    def staged(
        cls, path: str | os.PathLike, config: dict[str, Any], kind: str = "ensemble"
    ) -> Iterator[EnsembleCheckpoint]:
        """Write a whole checkpoint at once: the block's :meth:`save` calls go to a temporary sibling directory,
        which replaces ``path`` only when the block completes (on an error ``path`` is left as it was).

        An existing ``path`` is replaced only when it is empty or an art-certssbd checkpoint of the same kind and
        config holding nothing but its own files; anything else is refused with :class:`CheckpointError`.
        """
        path = Path(path)
        replace = cls._check_replaceable(path, config, kind)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            store = cls(tmp, config, kind=kind)
            store._defer = True
            yield store
            store._defer = False
            store._write_manifest()
            fsync_dir(tmp)
            if replace:
                old = tmp.with_suffix(".old")
                os.rename(path, old)
                try:
                    os.rename(tmp, path)
                except BaseException:
                    os.rename(old, path)
                    raise
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, path)
            fsync_dir(path.parent)
            store.path = path
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def _check_replaceable(cls, path: Path, config: dict[str, Any], kind: str) -> bool:
        """Whether ``path`` exists and may be replaced by :meth:`staged`; raises if it must not be."""
        if not path.exists():
            return False
        if not path.is_dir():
            raise CheckpointError(f"checkpoint path {str(path)!r} exists and is not a directory")
        contents = {entry.name for entry in path.iterdir()}
        if not contents:
            return True
        if MANIFEST not in contents:
            raise CheckpointError(
                f"{str(path)!r} is not empty and holds no {MANIFEST}: refusing to replace a directory that is not an "
                "art-certssbd checkpoint"
            )
        existing = cls(path, config, kind=kind)
        own = {MANIFEST} | {entry["file"] for entry in existing.manifest["entries"].values()}
        foreign = sorted(name for name in contents - own if not (name.startswith(".") and name.endswith(".tmp")))
        if foreign:
            raise CheckpointError(
                f"{str(path)!r} holds files that are not part of the checkpoint ({foreign[:5]}): refusing to replace it"
            )
        return True

    def _remove_stale_temporaries(self) -> None:
        """Delete the temporary files of writes that never completed (``.{name}.XXXX.tmp``, see ``atomic_open``)."""
        for entry in self.path.iterdir():
            if entry.name.startswith(".") and entry.name.endswith(".tmp") and entry.is_file():
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
                    logger.info("removed %s, left by an interrupted write", entry)

    @staticmethod
    def _read_manifest(path: Path) -> dict:
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{str(path)!r} is not a readable ensemble manifest: {err}") from err
        return _check_manifest(manifest, path)

    @staticmethod
    def _check_config(stored: dict, config: dict) -> None:
        for key in sorted(set(stored) | set(config)):
            if stored.get(key) != config.get(key):
                raise CheckpointError(
                    f"the checkpoint directory was written with {key}={stored.get(key)!r}, but this run has "
                    f"{key}={config.get(key)!r}; use another directory or the same configuration"
                )

    @property
    def config(self) -> dict:
        """The stored configuration."""
        return self.manifest["config"]

    def finished_members(self) -> list[int]:
        """Indices of the members stored so far."""
        return sorted(int(m.group(1)) for m in map(_MEMBER.match, self.manifest["entries"]) if m)

    def has(self, name: str) -> bool:
        """Whether the named extra (or ``member_XXXXX``) is stored."""
        return name in self.manifest["entries"]

    def save(self, name: str, obj: dict[str, torch.Tensor] | torch.Tensor) -> None:
        """Store a tensor or a state_dict under ``name`` (atomically, then record it in the manifest)."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"name must be a plain file-name stem (letters, digits, '_', '.', '-'), got {name!r}")
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        old = self.manifest["entries"].get(name)
        # never overwrite the file the manifest points to: a crash before the manifest switches keeps it valid
        filename = f"{name}.pt" if old is None or old["file"] != f"{name}.pt" else f"{name}.{digest[:16]}.pt"
        atomic_write(self.path / filename, lambda handle: handle.write(data))
        self._commit({**self.manifest["entries"], name: {"file": filename, "sha256": digest}})
        if old is not None and old["file"] != filename:
            with contextlib.suppress(FileNotFoundError):
                (self.path / old["file"]).unlink()

    def save_member(self, k: int, state_dict: dict[str, torch.Tensor]) -> None:
        """Store member ``k``."""
        self.save(_member_key(k), state_dict)

    def load(self, name: str) -> Any:
        """Load the named entry after verifying its checksum (``weights_only``: tensors and containers only)."""
        entry = self.manifest["entries"].get(name)
        if entry is None:
            raise CheckpointError(f"{str(self.path)!r} holds no entry {name!r}")
        path = self.path / entry["file"]
        try:
            data = path.read_bytes()  # read once: the bytes checked are the bytes loaded
        except FileNotFoundError:
            raise DamagedEntryError(f"{str(path)!r} is listed in the manifest but missing") from None
        except OSError as err:
            raise CheckpointError(f"{str(path)!r} cannot be read: {err}") from err
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise DamagedEntryError(f"{str(path)!r} fails its SHA-256 check: the file is corrupted or was modified")
        try:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as err:  # UnpicklingError, RuntimeError, EOFError, ... depending on the content
            raise CheckpointError(
                f"{str(path)!r} passes its checksum but is refused by torch.load(weights_only=True) "
                f"({type(err).__name__}): it holds something other than tensors; none of its code was run"
            ) from err

    def load_member(self, k: int) -> dict[str, torch.Tensor]:
        """Load member ``k`` (a mapping of parameter names to tensors)."""
        state = self.load(_member_key(k))
        if not isinstance(state, dict) or not all(
            isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
        ):
            raise CheckpointError(f"{str(self.path)!r}: {_member_key(k)} is not a state_dict of tensors")
        return state

    def load_members(self) -> dict[int, dict[str, torch.Tensor]]:
        """The stored members, for a resume (a writer): a member whose file is missing or fails its SHA-256 check
        is set aside with a ``UserWarning`` (its file renamed ``member_XXXXX.pt.damaged``, kept beside the others,
        its entry dropped from the manifest) so that the resume trains it again. Anything else wrong (a file that
        passes its checksum but is not tensors, an unreadable file) still stops with :class:`CheckpointError`.

        :return: ``{k: state_dict}`` of the members that passed.
        """
        states = {}
        for k in self.finished_members():
            try:
                states[k] = self.load_member(k)
            except DamagedEntryError as err:
                self._set_aside(_member_key(k), err)
        return states

    def _set_aside(self, name: str, reason: DamagedEntryError) -> None:
        """Rename the damaged file of entry ``name`` (when there is one) and drop the entry from the manifest."""
        path = self.path / self.manifest["entries"][name]["file"]
        kept = ""
        if path.exists():
            target, i = path.with_name(path.name + ".damaged"), 1
            while target.exists():
                target, i = path.with_name(f"{path.name}.damaged.{i}"), i + 1
            os.rename(path, target)
            kept = f"; the damaged file is kept as {str(target)!r}"
        self._commit({key: value for key, value in self.manifest["entries"].items() if key != name})
        warnings.warn(f"{reason}: {name} is set aside and trained again{kept}", UserWarning, stacklevel=3)

    def check_training_path(self, path: dict[str, Any]) -> None:
        """Refuse to resume with a training path that changes the members' values (``vmap`` or the loop, the
        device type, the executor, the number of torch threads on the CPU), which would make the resumed ensemble
        differ, in rounding, from an uninterrupted run; record ``path`` in the manifest (key ``training_path``) for a
        new checkpoint.

        A checkpoint written before the record existed holds no ``training_path``: it is resumed with a
        ``UserWarning`` (the earlier sessions' path is unknown) and this session's path is recorded. A key missing
        from a record is taken as :data:`TRAINING_PATH_DEFAULTS` has it.

        :raises CheckpointError: Naming the setting, the stored and this run's value.
        """
        path = to_json(path)
        stored = self.manifest.get("training_path")
        if stored is None:
            if self.manifest["entries"]:
                warnings.warn(
                    f"{str(self.path)!r} does not record how its members were trained (written before art-certssbd "
                    f"recorded it): resuming with {path}; if earlier sessions used other settings, the resumed "
                    "members differ from an uninterrupted run in rounding",
                    UserWarning,
                    stacklevel=3,
                )
            self.manifest = {**self.manifest, "training_path": path}  # written with the next entry
            return
        for key in sorted(set(stored) | set(path)):
            old, new = stored.get(key, TRAINING_PATH_DEFAULTS.get(key)), path.get(key)
            if old != new:
                how = _HOW.get(key, f"{key}={old!r}").format(old=old)
                raise CheckpointError(
                    f"the checkpoint directory's members were trained with {key}={old!r}, but this run has "
                    f"{key}={new!r}, which changes the members' values (the resumed ensemble would not equal an "
                    f"uninterrupted run): resume with {how}, or use another directory"
                )

    def _commit(self, entries: dict) -> None:
        """Switch to ``entries``: write the manifest (unless deferred), then update the in-memory copy."""
        manifest = {**self.manifest, "entries": entries}
        if not self._defer:
            self._write_manifest(manifest)
        self.manifest = manifest

    def _write_manifest(self, manifest: dict | None = None) -> None:
        text = json.dumps(self.manifest if manifest is None else manifest, indent=1, sort_keys=True)
        atomic_write(self.path / MANIFEST, lambda handle: handle.write(text), mode="w")
