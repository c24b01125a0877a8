"""The command line's contract: every option checked before anything runs, the exit
codes the README documents (run here, command by command), signals.

Options are fed random values (hypothesis) through the real parser and checker; a
bad value must be refused in one line naming the option, the value and the valid
range, before a build or a boot. The exit-code table is read from README.md and
each row's failure is produced for real.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, s2fault
from s2fault import options, report
from s2fault.cli import commands, parser
from s2fault.errors import InputError
from s2fault.machine import qemu_children

SOFT_LOCKUP = (ROOT / "tests" / "golden" / "arm64-soft-lockup-icache-inval-pou.log").read_text()
CLEAN = (ROOT / "tests" / "data" / "upstream-functional-console.log").read_text()


def spinning_image(path: Path) -> Path:
    """An arm64 Image header whose first instruction branches to itself: QEMU runs,
    the kernel never prints (the same trick as test_reliability)."""
    import struct

    from s2fault.kernel import image

    head = bytearray(64)
    struct.pack_into("<I", head, 0, 0x14000000)  # b .
    struct.pack_into("<QQQ", head, 8, 0, 1 << 20, 3 << 1)
    struct.pack_into("<I", head, 56, image.ARM64_MAGIC)
    path.write_bytes(bytes(head) + b"\0" * 4096)
    return path


# --- every numeric option, random values ------------------------------------------

# (command line before the option, option, is it a float, valid range for the base line)
NUMERIC = [
    (["run", "--kernel", "Image"], "--vcpus", False, (1, 512)),
    (["run", "--kernel", "Image"], "--smp", False, (1, 512)),
    (["run", "--kernel", "Image"], "--icount-shift", False, (0, 10)),
    (["run", "--kernel", "Image"], "--rounds", False, (2, 1000)),
    (["run", "--kernel", "Image", "--mode", "dilated"], "--rounds", False, (1, 1000)),
    (["run", "--kernel", "Image"], "--repeat", False, (1, 1000)),
    # No readable kernel yet: the smallest block (4K pages, 2M) bounds it.
    (["run", "--kernel", "Image"], "--memory", False, (1026, 1 << 20)),
    (["run", "--kernel", "Image"], "--no-output-timeout", True, (0, 86400)),
    (["run", "--kernel", "Image"], "--gdb", False, (1, 65535)),
    (["check"], "--vcpus", False, (1, 512)),
    (["check", "--workload", "guest-icache-storm"], "--vcpus", False, (5, 512)),
    (["check"], "--smp", False, (1, 512)),
    (["check"], "--memory", False, (3072, 1 << 20)),
    (["check", "--pages", "4k"], "--memory", False, (1026, 1 << 20)),
    (["check", "--workload", "many-blocks"], "--memory", False, (5120, 1 << 20)),
    (["check"], "--icount-shift", False, (0, 10)),
    (["check"], "--rounds", False, (2, 1000)),
    (["check", "--mode", "dilated"], "--rounds", False, (1, 1000)),
    (["check"], "--repeat", False, (1, 1000)),
    (["check"], "--retries", False, (0, 10)),
    (["check"], "--no-output-timeout", True, (0, 86400)),
    (["bisect", "--repo", "r", "--good", "g", "--bad", "b"], "--vcpus", False, (1, 512)),
    (["bisect", "--repo", "r", "--good", "g", "--bad", "b"], "--repeat", False, (1, 1000)),
    (["bisect-step"], "--vcpus", False, (1, 512)),
    (["bisect-step"], "--repeat", False, (1, 1000)),
    (["bisect-step"], "--reference-ms", True, (0, 86400000)),
    (["host-run"], "--vcpus", False, (1, 512)),
    (["host-run"], "--rounds", False, (2, 1000)),
]


def _parser_options() -> set[tuple[str, str]]:
    """(command, option) of every int or float option the parser has."""
    found = set()
    for name, sub in parser.build_parser()._subparsers._group_actions[0].choices.items():
        for action in sub._actions:
            if action.type in (int, float):
                found.update((name, opt) for opt in action.option_strings)
    return found


def test_the_table_covers_every_numeric_option():
    covered = {(base[0], opt) for base, opt, _, _ in NUMERIC}
    assert covered == _parser_options()


def _validate(argv: list[str]) -> InputError | None:
    args = parser.build_parser().parse_args(argv)
    try:
        options.validate(args)
    except InputError as e:
        return e
    return None


values = st.one_of(st.integers(min_value=-10**12, max_value=10**12),
                   st.integers(min_value=-3, max_value=1100))
floats = st.floats(allow_nan=True, allow_infinity=True, width=64)


@pytest.mark.parametrize("base,option,is_float,valid", NUMERIC,
                         ids=[f"{b[0]}{'-' + b[-1] if len(b) > 1 else ''}{o}"
                              for b, o, _, _ in NUMERIC])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_values_are_refused_naming_option_value_and_range(base, option, is_float,
                                                                 valid, data):
    value = data.draw(floats if is_float else values)
    text = repr(value) if is_float else str(value)
    err = _validate([*base, f"{option}={text}"])
    low, high = valid
    inside = (math.isfinite(value) and low < value <= high) if is_float else low <= value <= high
    if inside:
        assert err is None, err
        return
    assert err is not None, f"{option} {text} accepted"
    message = err.message
    assert "\n" not in message
    assert message.startswith(f"{option} "), message
    assert "out of range; valid:" in message
    assert str(high) in message.replace("86400000", "8.64e+07") or f"{high:g}" in message


def test_a_bad_value_is_one_line_exit_2_and_nothing_runs(tmp_path):
    """Through main(): exit 2, one line on stderr, no run directory, no cache entry."""
    cache = tmp_path / "cache"
    env = {"S2FAULT_CACHE": str(cache)}
    kernel = spinning_image(tmp_path / "Image")
    for argv in (["run", "--kernel", str(kernel), "--vcpus", "0"],
                 ["run", "--kernel", str(kernel), "--rounds", "0"],
                 ["run", "--kernel", str(kernel), "--vcpus", "100000"],
                 ["run", "--kernel", str(kernel), "--cpu", "cortex-a9"],
                 ["run", "--kernel", str(kernel), "--cpu", "no-such-cpu"],
                 ["run", "--kernel", str(kernel), "--vcpus", "two"],
                 ["run", "--kernel", str(kernel), "--qemu", str(tmp_path / "no-qemu")],
                 ["run", "--kernel", str(kernel), "--timeouts", "no-output=-1"],
                 ["run", "--kernel", str(kernel), "--timeouts", "boot=10"],
                 ["run", "--build-dir", str(tmp_path / "no-such-build")],
                 ["check", "--variant", "upstream", "--memory", "100"]):
        r = s2fault(*argv, env=env, timeout=60)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, (argv, r.stderr)
        assert argv[-2] in lines[0] and argv[-1] in lines[0], lines
        assert "Traceback" not in r.stderr
    assert not cache.exists() or not any(cache.glob("*/*")), list(cache.rglob("*"))


def test_a_usage_error_is_one_line_and_stops_a_bisection():
    r = s2fault("run", "--vcpus", "two", "--kernel", "I")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "argument --vcpus: invalid int value: 'two'" in r.stderr
    # git bisect run would call exit 2 "bad": a step's usage error aborts (128).
    r = s2fault("bisect-step", "--vcpus", "two")
    assert r.returncode == 128 and r.stderr.count("\n") == 1, r.stderr


def test_cpu_models_are_those_mach_virt_runs_as_an_arm64_host():
    assert _validate(["run", "--kernel", "Image", "--cpu", "cortex-a72"]) is None
    assert _validate(["run", "--kernel", "Image", "--cpu", "max"]) is None
    for cpu in ("cortex-a9", "cortex-a15", "cortex-m3", "host"):
        err = _validate(["run", "--kernel", "Image", "--cpu", cpu])
        assert err is not None and f"--cpu {cpu}" in err.message and "cortex-a72" in err.message
    assert _validate(["run", "--kernel", "Image", "--accel", "kvm", "--cpu", "host"]) is None


# --- the README's exit-code table, produced for real ------------------------------

def _readme_rows() -> list[tuple[str, int, str]]:
    """(command, code, when) of the README's per-command exit-code table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Exit codes by command", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        m = re.match(r"\| `s2fault ([a-z-]+)` \| (\d+) \| (.+?) \|$", line)
        if m:
            rows.append((m.group(1), int(m.group(2)), m.group(3)))
    return rows


def _row(variant: str, outcome: str) -> dict:
    match = {"pass": True, "fail": False}.get(outcome)
    return {"variant": variant, "mode": "functional", "workload_name": "exec-fault",
            "test_id": f"{variant}.exec-fault.functional", "outcome": outcome,
            "match": match, "why": "" if outcome == "pass" else f"{outcome} reason",
            "observed": "clean", "runs": 1, "declared": {"summary": "clean"}, "workload": {}}


def _results(tmp: Path, *outcomes: str) -> Path:
    d = tmp / f"results-{'-'.join(outcomes)}"
    report.write_json([_row(f"v{i}", o) for i, o in enumerate(outcomes)], d / "check.json")
    return d


def _interrupted(tmp: Path) -> int:
    """A run killed with SIGTERM while QEMU runs, started with SIGINT ignored."""
    p = _start_run_ignoring_sigint(tmp)
    _wait_for_qemu(p)
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=60)
    return p.returncode


def _start_run_ignoring_sigint(tmp: Path) -> subprocess.Popen:
    tmp.mkdir(parents=True, exist_ok=True)
    kernel = spinning_image(tmp / "Image")
    return subprocess.Popen(
        [sys.executable, "-m", "s2fault", "-q", "run", "--kernel", str(kernel),
         "--results", str(tmp / "runs"), "--no-output-timeout", "120"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # As a script's background job starts: SIGINT ignored, inherited by exec.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))


def _wait_for_qemu(p: subprocess.Popen, timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = qemu_children(p.pid)
        if found:
            time.sleep(1)  # past QMP's greeting: the run is watching the console
            return found
        assert p.poll() is None, p.communicate()
        time.sleep(0.2)
    raise AssertionError("QEMU never started")


def _failure(command: str, code: int, tmp: Path) -> list[str] | int:
    """The argv that produces `command`'s documented exit `code` (or the code itself
    for what needs more than one command line)."""
    splat = tmp / "splat.log"
    splat.write_text(SOFT_LOCKUP.split("\n\n", 1)[1])
    clean = tmp / "clean.log"
    clean.write_text(CLEAN)
    kernel = spinning_image(tmp / "Image")
    cases: dict[tuple[str, int], list[str] | int] = {
        ("analyze", 0): ["analyze", str(clean)],
        ("analyze", 1): ["analyze", str(splat)],
        ("analyze", 2): ["analyze", str(tmp / "missing.log")],
        ("report", 0): ["report", str(_results(tmp, "pass", "skip"))],
        ("report", 1): ["report", str(_results(tmp, "pass", "fail", "error"))],
        ("report", 2): ["report", str(tmp / "empty")],
        ("report", 4): ["report", str(_results(tmp, "skip", "skip"))],
        ("check", 2): ["check", "--workload", "guest-icache-storm", "--mode", "dilated"],
        ("run", 2): ["run", "--kernel", str(kernel), "--no-output-timeout", "3"],
        ("run", 130): 0,  # see below: needs a signal, not only a command line
        ("build", 2): ["build", "--variant", "no-such-variant"],
        ("bisect", 2): ["bisect", "--good", "v6.12"],
        ("bisect-step", 128): ["bisect-step", "--vcpus", "0"],
        ("variant", 2): ["variant", "add", "upstream", "--from-mbox", str(clean)],
        ("variants", 0): ["variants"],
        ("workloads", 0): ["workloads"],
        ("calibrate", 2): ["calibrate", "--mode", "functional"],
        ("host-run", 2): ["host-run"],  # this x86 machine: not an arm64 KVM host
    }
    return cases[(command, code)]


@pytest.mark.slow  # boots QEMU (a kernel that spins: seconds)
def test_readme_exit_code_table_is_what_each_command_does(tmp_path):
    rows = _readme_rows()
    commands = {name for name in
                parser.build_parser()._subparsers._group_actions[0].choices}
    # Every command has its row: the table is the contract for all of them.
    assert {c for c, _, _ in rows} == commands, commands - {c for c, _, _ in rows}
    for command, code, when in rows:
        argv = _failure(command, code, tmp_path)
        if code == 130:
            got = _interrupted(tmp_path / "sigterm")
        else:
            got = s2fault(*argv, env={"S2FAULT_CACHE": str(tmp_path / "cache")},
                          timeout=300).returncode
        assert got == code, (command, code, when, argv)


@pytest.mark.slow  # boots QEMU (a kernel that spins: seconds)
def test_sigterm_cleans_up_although_sigint_is_ignored(tmp_path):
    """The product: QEMU quit, its QMP socket directory removed, exit 130."""
    p = _start_run_ignoring_sigint(tmp_path)
    (qemu,) = _wait_for_qemu(p)
    status = Path(f"/proc/{p.pid}/status").read_text()
    ignored = int(re.search(r"SigIgn:\s+([0-9a-f]+)", status).group(1), 16)
    assert ignored & (1 << (signal.SIGINT - 1)), "SIGINT was not ignored in the run"
    cmdline = Path(f"/proc/{qemu}/cmdline").read_bytes().split(b"\0")
    sock = next(a for a in cmdline if a.startswith(b"socket,id=qmp,path="))
    sockdir = Path(sock.split(b"path=", 1)[1].decode()).parent
    assert sockdir.is_dir()
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "interrupted" in err
    assert not Path(f"/proc/{qemu}").exists()
    assert not sockdir.exists()


def test_run_takes_source_ref_and_offline_like_build_and_check(tmp_path):
    """--ref needs a git --source, the same check as build and check make."""
    for command in (["build"], ["check"], ["run", "--kernel", str(spinning_image(
            tmp_path / "Image"))]):
        r = s2fault(*command, "--ref", "v6.12", env={"S2FAULT_CACHE": str(tmp_path / "c")})
        assert r.returncode == 2, (command, r.stderr)
        assert "--ref v6.12 needs a git repository as --source" in r.stderr, r.stderr
    args = parser.build_parser().parse_args(["run", "--kernel", "I", "--source", "/x",
                                          "--ref", "main", "--offline"])
    assert (args.source, args.ref, args.offline) == ("/x", "main", True)
    env = os.environ.copy()
    try:
        assert commands._source_spec(args) == "/x@main"
        assert os.environ.get("S2FAULT_OFFLINE") == "1"
    finally:
        os.environ.clear()
        os.environ.update(env)


@pytest.mark.slow  # boots QEMU (a kernel that spins: seconds)
def test_run_json_has_a_schema_version(tmp_path):
    r = s2fault("run", "--kernel", str(spinning_image(tmp_path / "Image")),
                "--no-output-timeout", "3", "--json", str(tmp_path / "v.json"),
                "--results", str(tmp_path / "runs"))
    assert r.returncode == 2, r.stderr
    v = json.loads((tmp_path / "v.json").read_text())
    assert v["schema_version"] == report.SCHEMA_VERSION
    assert v["verdict"] == "error" and v["versions"]["s2fault"]
    assert re.match(r"\d+\.\d+", v["versions"]["qemu"]) and v["versions"]["cpu"]
