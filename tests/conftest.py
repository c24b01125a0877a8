"""Shared fixtures. Slow tests build real kernels and boot them under real QEMU;
they share one cache (S2FAULT_CACHE or ~/.cache/s2fault) so a kernel is built once
per session and the matrix re-uses it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def s2fault(*args: str, check: bool = False, env: dict | None = None,
            timeout: float = 3600) -> subprocess.CompletedProcess:
    """Run the CLI as a user would, from the repository root."""
    full_env = os.environ | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "s2fault", "-q", *args],
        cwd=ROOT, capture_output=True, text=True, env=full_env, timeout=timeout, check=check,
    )


@pytest.fixture(scope="session")
def upstream_build():
    """The upstream variant, built (or taken from the cache) once per session."""
    from s2fault import kernel

    return kernel.build("upstream")
