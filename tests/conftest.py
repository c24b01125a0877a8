"""Shared fixtures. Slow tests build real kernels and boot them under real QEMU;
they share one cache (S2FAULT_CACHE or ~/.cache/s2fault) so a kernel is built once
per session and the matrix re-uses it."""

from __future__ import annotations

import contextlib
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
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


@contextlib.contextmanager
def loopback_http(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 (an ephemeral port) answering with `handler`;
    yields its base URL. Downloads and lore fetches are tested against it, not mocked."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
