"""The on-disk ensemble format: a directory with a manifest, one file per member, checksums, atomic writes.

Layout of a checkpoint directory::

    manifest.json        format name and version, package and torch versions, the training config (seeds included),
                         and for every stored entry its file name and SHA-256
    member_00000.pt      state_dict of member 0 (torch.save of tensors only)
    ...
    base.pt, train_sigma.pt, ...   named extras (the warmed-up base model, the training sigmas)

Every file is written to a temporary name and renamed into place, the manifest last, so an interrupted write leaves
the previous state intact; a member listed in the manifest is complete. Files are read with
``torch.load(weights_only=True)`` after their checksum is verified, so a tampered or truncated file is refused and
no pickled code is ever executed.
"""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from art_certssbd import __version__
from art_certssbd._io import atomic_write, sha256_file

logger = logging.getLogger(__name__)

FORMAT = "art-certssbd-ensemble"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be used: another format or version, a mismatched config, a bad checksum."""


def _member_key(k: int) -> str:
    return f"member_{k:05d}"


class EnsembleCheckpoint:
    """A checkpoint directory (created on the first write).

    :param path: The directory.
    :param config: The JSON-serialisable training configuration. When the directory already holds a manifest, its
           config must equal this one, key by key, or :class:`CheckpointError` names the first difference.
    """

    def __init__(self, path: str | os.PathLike, config: dict[str, Any] | None = None):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if manifest_path.exists():
            self.manifest = self._read_manifest(manifest_path)
            if config is not None:
                self._check_config(self.manifest["config"], json.loads(json.dumps(config)))
        else:
            if self.path.exists() and not self.path.is_dir():
                raise CheckpointError(f"checkpoint path {str(self.path)!r} exists and is not a directory")
            self.manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "package_version": __version__,
                "torch_version": torch.__version__,
                "config": json.loads(json.dumps(config or {})),
                "entries": {},
            }

    @staticmethod
    def _read_manifest(path: Path) -> dict:
        try:
            manifest = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{str(path)!r} is not a readable ensemble manifest: {err}") from err
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise CheckpointError(f"{str(path)!r} is not an {FORMAT} manifest")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{str(path)!r} has format_version {manifest.get('format_version')!r}; this version of art-certssbd "
                f"reads format_version {FORMAT_VERSION}"
            )
        return manifest

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
        """The stored training configuration."""
        return self.manifest["config"]

    def finished_members(self) -> list[int]:
        """Indices of the members stored so far."""
        return sorted(int(key.split("_")[1]) for key in self.manifest["entries"] if key.startswith("member_"))

    def has(self, name: str) -> bool:
        """Whether the named extra (or ``member_XXXXX``) is stored."""
        return name in self.manifest["entries"]

    def save(self, name: str, obj: dict[str, torch.Tensor] | torch.Tensor) -> None:
        """Store a tensor or a state_dict under ``name`` (atomically, then record it in the manifest)."""
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        filename = f"{name}.pt"
        atomic_write(self.path / filename, lambda handle: handle.write(buffer.getvalue()))
        self.manifest["entries"][name] = {"file": filename, "sha256": sha256_file(self.path / filename)}
        self._write_manifest()

    def save_member(self, k: int, state_dict: dict[str, torch.Tensor]) -> None:
        """Store member ``k``."""
        self.save(_member_key(k), state_dict)

    def load(self, name: str) -> Any:
        """Load the named entry after verifying its checksum (``weights_only``: tensors and containers only)."""
        entry = self.manifest["entries"].get(name)
        if entry is None:
            raise CheckpointError(f"{str(self.path)!r} holds no entry {name!r}")
        path = self.path / entry["file"]
        if not path.is_file():
            raise CheckpointError(f"{str(path)!r} is listed in the manifest but missing")
        if sha256_file(path) != entry["sha256"]:
            raise CheckpointError(f"{str(path)!r} fails its SHA-256 check: the file is corrupted or was modified")
        return torch.load(path, map_location="cpu", weights_only=True)

    def load_member(self, k: int) -> dict[str, torch.Tensor]:
        """Load member ``k``."""
        return self.load(_member_key(k))

    def _write_manifest(self) -> None:
        text = json.dumps(self.manifest, indent=1, sort_keys=True)
        atomic_write(self.path / MANIFEST, lambda handle: handle.write(text), mode="w")
