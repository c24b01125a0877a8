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


def unique_variant_home(tmp: Path, tag: str) -> tuple[dict, str]:
    """(env, variant): a checkout of its own (S2FAULT_HOME) with one variant whose only
    patch adds a comment naming `tag` to arch/arm64/kvm/mmu.c. Its build key is one no
    cache has seen, yet it builds in about a minute: ccache has every other object.
    (A unique CONFIG_ value would change autoconf.h, which every file includes, and
    cost a full preprocessing pass: 4-5 minutes here.)"""
    home = tmp / "home"
    folder = home / "patches" / "unique"
    folder.mkdir(parents=True)
    for name in ("kernel_configs", "guests"):
        (home / name).symlink_to(ROOT / name)
    (folder / "0001-unique.patch").write_text(
        "--- a/arch/arm64/kvm/mmu.c\n"
        "+++ b/arch/arm64/kvm/mmu.c\n"
        "@@ -1,4 +1,5 @@\n"
        " // SPDX-License-Identifier: GPL-2.0-only\n"
        f"+/* s2fault test build {tag} */\n"
        " /*\n"
        "  * Copyright (C) 2012 - Virtual Open Systems and Columbia University\n"
        "  * Author: Christoffer Dall <c.dall@virtualopensystems.com>\n"
    )
    (folder / "series").write_text("0001-unique.patch\n")
    (folder / "variant.toml").write_text('description = "a build key of its own"\n')
    return {"S2FAULT_HOME": str(home)}, "unique"
