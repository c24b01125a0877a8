"""Shared fixtures. Slow tests build real kernels and boot them under real QEMU;
they share one cache (S2FAULT_CACHE or ~/.cache/s2fault) so a kernel is built once
per session and the matrix re-uses it."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
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


# --- where the time went ------------------------------------------------------------------

_spent: dict[str, dict[str, float]] = {}
_cpu: dict[str, float] = {}
_session: dict = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-goldens", action="store_true", default=False,
                     help="rewrite tests/golden/*.log headers to what the analyzer finds now "
                     "(then read the diff)")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Note whether this session starts cold (no kernel in the cache): `make bench`
    prints the newest cold and warm whole-suite times recorded here."""
    from s2fault import project

    kernels = project.cache_dir() / "kernels"
    published = [p for p in kernels.iterdir() if not p.name.startswith(".")] \
        if kernels.is_dir() else []
    _session.update(start=time.monotonic(), cold=not published, cpu_mark=_cpu_seconds())


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Seconds per test file and phase; a session fixture's first use (a kernel build,
    a fixture repository) shows up as the setup of the test that needed it. Apart, the
    seconds of the tests that build or boot (marked slow): `make bench` prints them as
    the suite's floor, since such a test must stay real."""
    where = report.nodeid.split("::", 1)[0]
    phases = _spent.setdefault(where, {})
    phases[report.when] = phases.get(report.when, 0.0) + report.duration
    # CPU time since the last report, QEMU and builds included: which files keep the
    # CPUs busy, and which wait (a timeout, one TCG thread of a dilated run).
    now = _cpu_seconds()
    _cpu[where] = _cpu.get(where, 0.0) + now - _session.get("cpu_mark", now)
    _session["cpu_mark"] = now
    if "slow" in report.keywords:
        _session["slow_seconds"] = _session.get("slow_seconds", 0.0) + report.duration


def pytest_terminal_summary(terminalreporter) -> None:
    if not _spent:
        return
    total = sum(sum(p.values()) for p in _spent.values())
    rows = sorted(_spent.items(), key=lambda kv: -sum(kv[1].values()))
    terminalreporter.section("where the time went (per test file)")
    for where, phases in rows:
        spent = sum(phases.values())
        if spent < 1 and len(rows) > 12:
            continue
        terminalreporter.write_line(
            f"{spent:8.1f} s  {100 * spent / total:5.1f}%  {where}  "
            f"(setup {phases.get('setup', 0):.1f} s, tests {phases.get('call', 0):.1f} s)")
    terminalreporter.write_line(f"{total:8.1f} s  total in tests and their fixtures")
    _record_session(terminalreporter)


def _record_session(terminalreporter) -> None:
    from s2fault import project

    config = terminalreporter.config
    whole = not (config.option.markexpr or config.option.keyword) and \
        all(Path(a).resolve() == ROOT / "tests" for a in config.args)
    stats = terminalreporter.stats
    record = {
        "when": time.strftime("%Y-%m-%d %H:%M"), "whole_suite": whole,
        "cold": _session.get("cold"),
        "seconds": round(time.monotonic() - _session.get("start", time.monotonic()), 1),
        "passed": len(stats.get("passed", [])),
        "failed": len(stats.get("failed", [])) + len(stats.get("error", [])),
        "load_average": [round(x, 1) for x in os.getloadavg()],
        # What the seconds are made of, for `make bench`: per test file (setup, call and
        # teardown), and the part spent in tests that build or boot.
        "files": {where: round(sum(phases.values()), 1) for where, phases in _spent.items()},
        "slow_seconds": round(_session.get("slow_seconds", 0.0), 1),
        # The CPU time of pytest and of every process it waited for (QEMU, make, gcc):
        # with the host's CPUs, a floor no schedule of these tests goes under.
        "cpu_seconds": round(_cpu_seconds(), 1),
        "files_cpu": {where: round(secs, 1) for where, secs in _cpu.items()},
        "cpus": len(os.sched_getaffinity(0)),
    }
    path = project.cache_dir() / "test-sessions.json"
    try:
        sessions = json.loads(path.read_text())
    except (OSError, ValueError):
        sessions = []
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(_kept(sessions + [record]), indent=1) + "\n")
    os.replace(tmp, path)


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    waited = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + waited.ru_utime + waited.ru_stime


def _kept(sessions: list[dict], keep: int = 50) -> list[dict]:
    """The newest `keep` sessions, and the newest whole-suite one of each kind (cold,
    warm) however old: `make bench` reports those, and an afternoon of single test
    files would otherwise push them out."""
    newest_whole = {bool(s.get("cold")): i for i, s in enumerate(sessions)
                    if s.get("whole_suite")}
    first = len(sessions) - keep
    return [s for i, s in enumerate(sessions) if i >= first or i in newest_whole.values()]


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


def edit_marker_line(text: str, marker: str, **changes) -> str:
    """A console with the JSON of its `marker` line ("S2FAULT-INIT", ...) changed."""
    out = []
    for line in text.splitlines():
        if line.startswith(marker + " "):
            obj = json.loads(line.split(" ", 1)[1]) | changes
            line = f"{marker} {json.dumps(obj)}"
        out.append(line)
    return "\n".join(out) + "\n"


def project_home(home: Path, *, copy_patches: bool = False) -> Path:
    """A checkout of its own at `home`, for S2FAULT_HOME: a patches/ (the checkout's
    variants copied when `copy_patches`, else empty, for the test's own variants) and
    the checkout's kernel_configs/ and guests/ linked."""
    if copy_patches:
        shutil.copytree(ROOT / "patches", home / "patches")
    else:
        (home / "patches").mkdir(parents=True)
    for data in ("kernel_configs", "guests"):
        (home / data).symlink_to(ROOT / data)
    return home


def upstream_env(tmp: Path) -> dict:
    """Environment for the CLI: the checkout's variants when upstream is declared
    there, else a home (under `tmp`) declaring just upstream (the kernel is the same
    cache entry)."""
    if (ROOT / "patches" / "upstream" / "variant.toml").is_file():
        return {}
    home = project_home(tmp / "home")
    (home / "patches" / "upstream").mkdir()
    (home / "patches" / "upstream" / "variant.toml").write_text(
        'description = "6.12 as shipped"\n')
    return {"S2FAULT_HOME": str(home)}


def mmu_line_variant_home(home: Path, name: str, line: str, description: str) -> Path:
    """A checkout of its own at `home` (for S2FAULT_HOME) with one variant, `name`, whose
    only patch adds `line` near the top of arch/arm64/kvm/mmu.c."""
    project_home(home)
    folder = home / "patches" / name
    folder.mkdir()
    (folder / f"0001-{name}.patch").write_text(
        "--- a/arch/arm64/kvm/mmu.c\n"
        "+++ b/arch/arm64/kvm/mmu.c\n"
        "@@ -1,4 +1,5 @@\n"
        " // SPDX-License-Identifier: GPL-2.0-only\n"
        f"+{line}\n"
        " /*\n"
        "  * Copyright (C) 2012 - Virtual Open Systems and Columbia University\n"
        "  * Author: Christoffer Dall <c.dall@virtualopensystems.com>\n"
    )
    (folder / "series").write_text(f"0001-{name}.patch\n")
    (folder / "variant.toml").write_text(f'description = "{description}"\n')
    return home


def unique_variant_home(tmp: Path, tag: str) -> tuple[dict, str]:
    """(env, variant): a checkout of its own (S2FAULT_HOME) with one variant whose only
    patch adds a comment naming `tag` to arch/arm64/kvm/mmu.c. Its build key is one no
    cache has seen, yet it builds in about a minute: ccache has every other object.
    (A unique CONFIG_ value would change autoconf.h, which every file includes, and
    cost a full preprocessing pass: 4-5 minutes here.)"""
    home = mmu_line_variant_home(tmp / "home", "unique", f"/* s2fault test build {tag} */",
                                 "a build key of its own")
    return {"S2FAULT_HOME": str(home)}, "unique"
