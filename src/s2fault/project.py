"""Where things live: the repository's data folders and the cache."""

from __future__ import annotations

import os
from pathlib import Path

# The package folder itself: an installed package keeps its data here (bin/ with the
# static VMM, profiles/ with the modes; see setup.py).
PACKAGE = Path(__file__).resolve().parent


def root() -> Path:
    """The checkout holding patches/, kernel_configs/ and guests/.

    S2FAULT_HOME overrides it, for an installed package used against another checkout.
    """
    env = os.environ.get("S2FAULT_HOME")
    if env:
        return Path(env).resolve()
    for parent in PACKAGE.parents:
        if (parent / "kernel_configs").is_dir() and (parent / "patches").is_dir():
            return parent
    return Path.cwd()


def patches_dir() -> Path:
    return root() / "patches"


def configs_dir() -> Path:
    return root() / "kernel_configs"


def guests_dir() -> Path:
    return root() / "guests"


def cache_dir() -> Path:
    """The content-addressed cache: sources, kernels, guests, scratch runs."""
    env = os.environ.get("S2FAULT_CACHE")
    if env:
        path = Path(env)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "s2fault"
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()
