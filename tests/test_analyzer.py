"""Tests for s2fault.judge.analyzer: golden console logs, parsing details, the CLI, and robustness.

Every tests/golden/*.log is a header naming the splats it must yield, a blank line, and the
raw console; tests/golden/README.md describes the header. Adding a log is dropping a file.
"""

from __future__ import annotations

import io
import json
import random
import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from goldenlog import GOLDEN, parse_golden, update_golden
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s2fault.judge.analyzer import (
    FAMILIES,
    Splat,
    analyze,
    analyze_console,
    analyze_file,
    group,
    run_cli,
    summary_line,
)
from s2fault.judge.analyzer.catalogue import SCAN_KEYWORDS
from s2fault.judge.analyzer.console import decode, split_prefix
from s2fault.judge.analyzer.frames import first_own, is_plumbing, parse_frame, parse_pc
from s2fault.judge.analyzer.scanner import scan


def _none_or(value: str) -> str | None:
    return None if value == "none" else value


def check(splat: Splat, want: dict[str, str], role: str = "culprit") -> list[str]:
    """Mismatches between a splat and one expectation block (`role`: its place in group())."""
    got = splat.to_dict()
    errors = []
    for key, value in want.items():
        if key == "ROLE":
            actual = role
            ok = actual == value
        elif key == "LINES":
            start, _, end = value.partition("-")
            actual = f"{got['lines'][0]}-{got['lines'][1]}"
            ok = actual == f"{int(start)}-{int(end)}"
        elif key == "FRAMES":
            expect = [] if value == "none" else value.split()
            actual = got["frames"][: len(expect)] if expect else got["frames"]
            ok = actual == expect
        elif key in ("CPU", "PID"):
            expect_int = _none_or(value)
            actual = got[key.lower()]
            ok = actual == (int(expect_int) if expect_int is not None else None)
        else:
            actual = got[key.lower()]
            ok = actual == _none_or(value)
        if not ok:
            errors.append(f"{key}: want {value!r}, got {actual!r}")
    return errors


def header_values(splat: Splat, role: str, want: dict[str, str] | None = None) -> dict[str, str]:
    """Every header key's value for `splat`, as check() reads them (`want`'s FRAMES says
    how many frames the header names): what --update-goldens writes."""
    got = splat.to_dict()
    frames = got["frames"]
    named = (want or {}).get("FRAMES", "none")
    n = 0 if named == "none" else len(named.split())
    values = {key: "none" if got[key.lower()] is None else str(got[key.lower()])
              for key in ("KIND", "SUBTYPE", "TITLE", "FUNCTION", "TASK", "CPU", "PID",
                          "KNOCK_ON")}
    values["FRAMES"] = " ".join(frames[: n or 2]) if frames else "none"
    values["LINES"] = f"{got['lines'][0]}-{got['lines'][1]}"
    values["ROLE"] = role
    return values


def update_from_analyzer(path: Path) -> bool:
    """--update-goldens on one file: its header rewritten to what analyze() finds now."""
    expected, console = parse_golden(path)
    splats = analyze(console)
    leads = {incident.lead for incident in group(splats).incidents}
    return update_golden(path, [
        header_values(s, "culprit" if i in leads else "consequence",
                      expected[i] if i < len(expected) else None)
        for i, s in enumerate(splats)])


GOLDEN_LOGS = sorted(GOLDEN.glob("*.log"))


@pytest.mark.parametrize("path", GOLDEN_LOGS, ids=[p.stem for p in GOLDEN_LOGS])
def test_golden(path: Path, request: pytest.FixtureRequest) -> None:
    expected, console = parse_golden(path)
    splats = analyze(console)
    if request.config.getoption("update_goldens") and update_from_analyzer(path):
        expected, console = parse_golden(path)
    found = "\n".join(summary_line(s) for s in splats) or "(no splats)"
    assert len(splats) == len(expected), f"{path.name}: found\n{found}"
    leads = {incident.lead for incident in group(splats).incidents}
    for i, (splat, want) in enumerate(zip(splats, expected, strict=True)):
        errors = check(splat, want, "culprit" if i in leads else "consequence")
        assert not errors, f"{path.name} splat {i + 1} ({summary_line(splat)}): {errors}"


def test_golden_strict_path_agrees() -> None:
    # analyze() falls back to bare headers on an internal error; the goldens must not need it.
    for path in GOLDEN_LOGS:
        _, console = parse_golden(path)
        assert scan(decode(console)) == analyze(console), path.name


REQUIRED_KINDS = {
    "soft_lockup",
    "hard_lockup",
    "rcu_stall",
    "hung_task",
    "workqueue_lockup",
    "lockdep",
    "atomic_sleep",
    "warning",
    "bug",
    "oops",
    "panic",
    "kasan",
    "kmsan",
    "kcsan",
    "kfence",
    "ubsan",
    "leak",
}
REQUIRED_SUBTYPES = {
    "invalid_wait_context",
    "circular",
    "recursive",
    "inconsistent",
    "bad_unlock_balance",
    "held_lock_freed",
    "lock_held_at_exit",
    "lock_held_returning_to_user",
    "nested_lock_not_taken",
    "irq_lock_inversion",
    "suspicious_rcu",
    "spinlock_lockup",
    "spinlock_recursion",
    "spinlock_bad_magic",
    "spinlock_already_unlocked",
    "sleeping_in_atomic",
    "scheduling_while_atomic",
    "smp_processor_id_preemptible",
    "this_cpu_preemptible",
    "debug_locks_warn_on",
    "cant_die",
    "self_detected",
    "detected",
    "expedited",
}


def test_goldens_cover_the_catalogue() -> None:
    kinds, subtypes, clean = set(), set(), 0
    for path in GOLDEN_LOGS:
        expected, _ = parse_golden(path)
        clean += not expected
        kinds |= {b["KIND"] for b in expected if "KIND" in b}
        subtypes |= {b["SUBTYPE"] for b in expected if "SUBTYPE" in b}
    assert len(GOLDEN_LOGS) >= 40
    assert clean >= 2
    assert REQUIRED_KINDS <= kinds, REQUIRED_KINDS - kinds
    assert REQUIRED_SUBTYPES <= subtypes, REQUIRED_SUBTYPES - subtypes


def test_every_row_is_reachable_by_the_scan() -> None:
    # Only lines holding a scan keyword are tried against the rows, so every header regex must
    # require one literally.
    for family in FAMILIES:
        pattern = family.header.pattern
        assert any(re.escape(k) in pattern or k in pattern for k in SCAN_KEYWORDS), pattern


# --- console and frame parsing ------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw,caller,body",
    [
        ("[   12.345678] foo", None, "foo"),
        ("[   12.345678][   T41] foo", "T41", "foo"),
        ("[   12.345678] [    C1] foo", "C1", "foo"),
        ("<4>[    1.000000] foo", None, "foo"),
        ("[  T1] foo", "T1", "foo"),
        ("foo [1.0] bar", None, "foo [1.0] bar"),
        ("[   12.345678]  icache_inval_pou+0x18/0x58", None, " icache_inval_pou+0x18/0x58"),
    ],
)
def test_console_prefix(raw: str, caller: str | None, body: str) -> None:
    assert split_prefix(raw) == (caller, body)


def test_line_ends_keep_line_numbers() -> None:
    assert decode(b"a\r\nb\r\r\nc\n\rd\re") == "a\nb\nc\nd\ne"
    assert decode(b"\xff\xfe ok") == "\ufffd\ufffd ok"


@pytest.mark.parametrize(
    "line,name,reliable",
    [
        (" icache_inval_pou+0x18/0x58", "icache_inval_pou", True),
        (" kvm_pgtable_walk+0x1a0/0x2b0 [kvm]", "kvm_pgtable_walk", True),
        (" kvm_vcpu_ioctl+0x2a1/0x8f0 [kvm 4f2b0a1c9e]", "kvm_vcpu_ioctl", True),
        (" ? foo+0x1/0x2", "foo", False),
        (" foo+0x1/0x2 (P)", "foo", True),
        ("[<ffff800080012345>] el1_irq+0xb8/0x130", "el1_irq", True),
        (" el0_svc_common.constprop.0+0x48/0xf0", "el0_svc_common.constprop.0", True),
        (" __dump_stack lib/dump_stack.c:94 [inline]", "__dump_stack", True),
        ("kmemleak:     add_fault_range+0x44/0x120"[9:], "add_fault_range", True),
    ],
)
def test_frame_spellings(line: str, name: str, reliable: bool) -> None:
    assert parse_frame(line) == (name, reliable)


@pytest.mark.parametrize(
    "line",
    [
        "pc : icache_inval_pou+0x18/0x58",
        " #0: ffff0000c2b1c0b8 (&kvm->mmu_lock){++++}-{2:2}, at: user_mem_abort+0x4a8/0x9f8",
        "x29: ffff800082b3b8f0 x28: ffff0000c1a4e000 x27: 0000000000000000",
        "RIP: 0010:foo+0x1/0x2",
        "Call trace:",
        "",
    ],
)
def test_not_frames(line: str) -> None:
    assert parse_frame(line) is None


def test_pc_spellings() -> None:
    assert parse_pc("pc : icache_inval_pou+0x18/0x58") == "icache_inval_pou"
    assert parse_pc("PC is at icache_inval_pou+0x18/0x58") == "icache_inval_pou"
    assert parse_pc("RIP: 0010:kvm_mmu_page_fault+0x2a/0x400 [kvm]") == "kvm_mmu_page_fault"
    assert parse_pc("RIP: 0033:0x7f2c5d51a94f") is None


def test_plumbing() -> None:
    for name in (
        "el1h_64_irq",
        "handle_softirqs",
        "lock_acquire.part.0",
        "mutex_lock_nested",
        "_raw_spin_lock_irqsave",
        "__might_resched",
        "__kmalloc_cache_noprof",
        "asm_sysvec_apic_timer_interrupt",
        "arch_timer_handler_virt",
        "dump_stack_lvl",
        "print_usage_bug.part.0",
        "__pfx_watchdog_timer_fn",
        "tick_nohz_handler",
    ):
        assert is_plumbing(name), name
    for name in (
        "icache_inval_pou",
        "stage2_attr_walker",
        "add_fault_range",
        "user_mem_abort",
        "kvm_handle_guest_abort",
        "handle_exit",
        "check_vcpu_requests",
        "update_vmid",
    ):
        assert not is_plumbing(name), name
    assert first_own(["el1h_64_irq", "icache_inval_pou.cold"]) == "icache_inval_pou"


# --- behaviour on small hand-made consoles -------------------------------------------------------

SOFT = """\
watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [kworker/1:1:25]
pc : icache_inval_pou+0x18/0x58
Call trace:
 icache_inval_pou+0x18/0x58
 stage2_attr_walker+0x12c/0x1a0
"""


def test_task_with_colons_and_slashes() -> None:
    (splat,) = analyze(SOFT)
    assert (splat.task, splat.pid, splat.cpu) == ("kworker/1:1", 25, 1)
    assert splat.frames == ("icache_inval_pou", "stage2_attr_walker")


def test_header_glued_after_user_output() -> None:
    # User space and printk share the serial line; a header can start mid-line.
    text = "vcpu 3: fault latwatchdog: BUG: soft lockup - CPU#1 stuck for 22s! [vmm:41]\n"
    (splat,) = analyze(text)
    assert splat.kind == "soft_lockup" and splat.task == "vmm"


def test_str_and_bytes_agree() -> None:
    assert analyze(SOFT) == analyze(SOFT.encode())


def test_to_dict_is_json_ready() -> None:
    (splat,) = analyze(SOFT)
    doc = json.loads(json.dumps(splat.to_dict()))
    assert doc == {
        "kind": "soft_lockup",
        "subtype": None,
        "title": "soft lockup in icache_inval_pou",
        "function": "icache_inval_pou",
        "frames": ["icache_inval_pou", "stage2_attr_walker"],
        "cpu": 1,
        "task": "kworker/1:1",
        "pid": 25,
        "lines": [1, 5],
        "knock_on": None,
        "where": None,
    }


def test_summary_line() -> None:
    (splat,) = analyze(SOFT)
    assert summary_line(splat) == (
        "L1-5 soft_lockup CPU#1 kworker/1:1: soft lockup in icache_inval_pou"
    )


def test_empty_and_clean() -> None:
    assert analyze("") == []
    assert analyze(b"") == []
    assert analyze("just a line without newline") == []


def test_a_distant_panic_is_its_own_splat() -> None:
    filler = "".join(f"line {i}\n" for i in range(100))
    text = SOFT + filler + "Kernel panic - not syncing: VFS: Unable to mount root fs\n"
    kinds = [s.kind for s in analyze(text)]
    assert kinds == ["soft_lockup", "panic"]


def test_a_consequence_panic_joins_its_report_from_afar() -> None:
    filler = "".join(f"line {i}\n" for i in range(100))
    text = SOFT + filler + "Kernel panic - not syncing: softlockup: hung tasks\n"
    (splat,) = analyze(text)
    assert splat.end_line == 106


# --- the CLI -------------------------------------------------------------------------------------


def test_cli_text(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text(SOFT)
    clean = tmp_path / "clean.log"
    clean.write_text("nothing here\n")
    out = io.StringIO()
    # A splat in any log: exit 1 (the kernel misbehaved); clean logs alone: 0.
    assert run_cli([str(log), str(clean)], as_json=False, out=out) == 1
    assert run_cli([str(clean)], as_json=False, out=io.StringIO()) == 0
    assert out.getvalue().splitlines() == [
        f"{log}:",
        "  L1-5 soft_lockup CPU#1 kworker/1:1: soft lockup in icache_inval_pou",
        f"{clean}:",
        "  no splats",
    ]


def test_cli_json_one_and_many(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text(SOFT)
    out = io.StringIO()
    assert run_cli([str(log)], as_json=True, out=out) == 1
    doc = json.loads(out.getvalue())
    assert doc["log"] == str(log) and doc["splats"][0]["function"] == "icache_inval_pou"
    out = io.StringIO()
    assert run_cli([str(log), str(log)], as_json=True, out=out) == 1
    docs = json.loads(out.getvalue())
    assert isinstance(docs, list) and len(docs) == 2


def test_cli_unreadable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.log"
    out = io.StringIO()
    assert run_cli([str(missing)], as_json=True, out=out) == 2
    assert out.getvalue() == ""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0]


def test_analyze_file_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    class Stdin:
        buffer = io.BytesIO(SOFT.encode())

    monkeypatch.setattr("sys.stdin", Stdin)
    assert [s.kind for s in analyze_file("-")] == ["soft_lockup"]


# --- robustness ----------------------------------------------------------------------------------


@contextmanager
def hang_guard(seconds: int) -> Iterator[None]:
    """Fail instead of hanging CI if the analyzer ever goes quadratic (Unix main thread only)."""
    usable = hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"analysis took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# No example database: the runs leave nothing in the work tree and always start fresh.
FUZZ = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _valid(splats: list[Splat], text: str | bytes) -> None:
    lines = decode(text).count("\n") + 1
    last = 0
    for s in splats:
        assert 1 <= s.start_line <= s.end_line <= lines
        assert s.start_line >= last  # in order of appearance
        last = s.start_line
        assert "\n" not in s.title and s.title
        json.dumps(s.to_dict())
    # Culprit first reorders, never drops or repeats a splat.
    analysis = group(splats)
    assert sorted(map(id, analysis.ordered())) == sorted(map(id, splats))
    json.dumps(analysis.to_dict())


@settings(FUZZ, max_examples=300)
@given(st.binary(max_size=4096))
def test_arbitrary_bytes(data: bytes) -> None:
    _valid(scan(decode(data)), data)


KEYWORD_SOUP = st.lists(
    st.sampled_from(
        list(SCAN_KEYWORDS)
        + [f.needle for f in FAMILIES]
        + [
            "Call trace:",
            " foo+0x1/0x2",
            "\n",
            "\r",
            " ",
            ":",
            "[  1.0] ",
            "[  T1] ",
            "[#1]",
            "---[ end trace",
            "=====",
            "stack backtrace:",
            " #0: x (y){....}-{1:1}, at: z+0x1/0x2",
            "CPU: 1 PID: 2 Comm: x Not tainted",
            "pc : a+0x1/0x2",
            "kmemleak: ",
            "0000",
        ]
    ),
    max_size=200,
).map("".join)


@settings(FUZZ, max_examples=300)
@given(KEYWORD_SOUP)
def test_keyword_soup(text: str) -> None:
    _valid(scan(decode(text)), text)


def _mutate(data: bytes, rnd: random.Random) -> bytes:
    lines = data.split(b"\n")
    for _ in range(rnd.randint(1, 12)):
        op = rnd.randrange(6)
        i = rnd.randrange(len(lines))
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[rnd.randrange(len(lines))])
        elif op == 2 and lines[i]:
            j = rnd.randrange(len(lines[i]))
            lines[i] = lines[i][:j] + bytes([rnd.randrange(256)]) + lines[i][j + 1 :]
        elif op == 3:
            lines[i] = lines[i][: rnd.randrange(len(lines[i]) + 1)]
        elif op == 4:
            lines = lines[: i + 1]
        else:
            lines[i] = lines[i] + b"\r"
        if not lines:
            lines = [b""]
    return b"\n".join(lines)


@settings(FUZZ, max_examples=200)
@given(st.sampled_from(GOLDEN_LOGS), st.integers(min_value=0, max_value=2**32))
def test_mutated_goldens(path: Path, seed: int) -> None:
    _, console = parse_golden(path)
    mutated = _mutate(console, random.Random(seed))
    _valid(scan(decode(mutated)), mutated)


def test_pathological_inputs_stay_linear() -> None:
    frame_storm = "Call trace:\n" + " f+0x1/0x2\n" * 200_000
    cases = [
        "BUG" * 300_000,  # one huge line full of keywords
        "BUG: soft lockup - CPU#1 stuck for 1s! [" + "a:" * 100_000 + "\n",
        ("watchdog: BUG: soft lockup - CPU#1 stuck for 1s! [x:1]\n" + frame_storm) * 2,
        "WARNING: possible circular locking dependency detected\n" * 50_000,
        ("[" * 50_000 + "\n") * 20,
        "Kernel panic - not syncing: " + "x" * 1_000_000,
        "unreferenced object 0x1 (size 8):\n" + "kmemleak: " * 100_000,
        "\r" * 500_000 + "\n" * 500_000,
        " #0: " + "(" * 100_000 + ", at: " * 10_000 + "\n",
        "INFO: task " + "x:" * 200_000 + "1 blocked for more than 1 seconds.\n",
        "BUG: spinlock recursion on CPU#1, " + "a/" * 200_000 + "1\n",
        # Long hostile lines inside reports whose rows run per-line regexes.
        "WARNING: bad unlock balance detected!\n" + ("a/" * 1000 + "\n") * 3000,
        "BUG: KASAN: wild-memory-access\n" + ("Read by task " * 150 + "\n") * 3000,
        "unreferenced object 0x1 (size 8):\n" + ('comm "' * 300 + "\n") * 60,
        "BUG: sleeping function called from invalid context at x:1\n"
        + ("in_atomic(): 1, irqs_disabled(): 0, non_block: 0, pid: 1, name: " * 30 + "\n") * 3000,
    ]
    with hang_guard(60):
        for text in cases:
            _valid(analyze(text), text)


# --- culprit first -------------------------------------------------------------------------------

CASCADE = GOLDEN / "arm64-dilated-cascade-culprit-second.log"


def test_culprit_first_on_the_dilated_cascade() -> None:
    _, console = parse_golden(CASCADE)
    analysis = analyze_console(console)
    # In time, migration/0 reports first; the culprit is the VMM's report.
    assert analysis.splats[0].task == "migration/0"
    assert analysis.culprit is analysis.splats[1]
    assert analysis.culprit.function == "icache_inval_pou"
    assert [why for _, why in analysis.consequences] == [
        "stopper thread",
        "repeat",
        "RCU stall on the culprit's CPU#1",
    ]
    assert [s.start_line for s in analysis.ordered()][0] == analysis.splats[1].start_line
    doc = json.loads(json.dumps(analysis.to_dict()))
    assert doc["culprit"] == 1
    assert doc["incidents"][0]["lead"] == 1
    assert [c["splat"] for c in doc["incidents"][0]["consequences"]] == [0, 2, 3]


def _soft(cpu: int, task: str, pid: int, pc: str, extra: str = "") -> str:
    return (
        f"watchdog: BUG: soft lockup - CPU#{cpu} stuck for 22s! [{task}:{pid}]\n"
        f"{extra}pc : {pc}+0x18/0x58\nCall trace:\n {pc}+0x18/0x58\n caller_fn+0x1/0x2\n\n"
    )


def test_a_cpu_spinning_on_a_lock_is_a_knock_on() -> None:
    text = _soft(0, "kworker/0:1", 12, "queued_spin_lock_slowpath") + _soft(
        1, "s2fault-vmm", 41, "icache_inval_pou"
    )
    splats = analyze(text)
    assert splats[0].knock_on == "waiting in queued_spin_lock_slowpath"
    assert splats[0].function == "caller_fn"  # the lock's taker, not the spin loop
    assert splats[1].knock_on is None
    analysis = group(splats)
    assert analysis.culprit is splats[1]
    assert analysis.consequences == ((splats[0], "waiting in queued_spin_lock_slowpath"),)


def test_other_reports_are_incidents_of_their_own_in_order() -> None:
    lockdep = (
        "WARNING: possible recursive locking detected\n"
        "s2fault-vmm/41 is trying to acquire lock:\nstack backtrace:\nCall trace:\n"
        " lock_acquire+0x1/0x2\n add_fault_range+0x1/0x2\n\n"
    )
    unrelated_stall = (
        "rcu: INFO: rcu_sched detected stalls on CPUs/tasks:\n"
        "rcu: \t3-....: (1 ticks this GP) idle=0/1/0x0 softirq=1/1 fqs=0\n"
        "rcu: \t(detected by 0, t=5252 jiffies, g=1, q=1 ncpus=4)\n"
        "NMI backtrace for cpu 3\npc : other_loop+0x1/0x2\nCall trace:\n other_loop+0x1/0x2\n\n"
    )
    splats = analyze(lockdep + _soft(1, "vmm", 41, "icache_inval_pou") + unrelated_stall)
    assert [s.kind for s in splats] == ["lockdep", "soft_lockup", "rcu_stall"]
    assert splats[2].cpu == 3 and splats[2].function == "other_loop"
    analysis = group(splats)
    assert [i.lead for i in analysis.incidents] == [0, 1, 2]
    assert all(not i.consequences for i in analysis.incidents)
    assert analysis.culprit is splats[0]  # the earliest incident leads


def test_no_splats_no_culprit() -> None:
    analysis = analyze_console("nothing here\n")
    assert analysis.culprit is None and analysis.consequences == () and analysis.ordered() == []
    assert analysis.to_dict() == {"splats": [], "incidents": [], "culprit": None}


def test_cli_text_leads_with_the_culprit(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    _, console = parse_golden(CASCADE)
    log.write_bytes(console)
    out = io.StringIO()
    assert run_cli([str(log)], as_json=False, out=out) == 1  # a splat: the kernel misbehaved
    lines = out.getvalue().splitlines()
    assert "soft lockup in icache_inval_pou" in lines[1]
    assert lines[2].startswith("    consequence (stopper thread): ")
    assert "migration/0" in lines[2]


# --- stall and lockup attribution details --------------------------------------------------------


def test_a_reporter_dump_is_blamed_below_its_first_interrupt_entry() -> None:
    # dump_stack() from the tick: the softirq handler that was interrupted is the culprit, not
    # what the softirq itself interrupted further down.
    text = (
        "INFO: rcu_sched self-detected stall on CPU\n"
        "\t0-....: (1 ticks this GP) idle=0/1/0x0 softirq=1/1 fqs=0\n"
        "NMI backtrace for cpu 0\nCall Trace:\n <IRQ>\n dump_stack+0x1/0x2\n"
        " nmi_cpu_backtrace+0x1/0x2\n rcu_check_callbacks+0x1/0x2\n"
        " some_unknown_tick_helper+0x1/0x2\n apic_timer_interrupt+0x1/0x2\n"
        " slow_timer_fn+0x1/0x2\n call_timer_fn+0x1/0x2\n __do_softirq+0x1/0x2\n"
        " irq_exit+0x1/0x2\n apic_timer_interrupt+0x1/0x2\n </IRQ>\n"
        " interrupted_fn+0x1/0x2\n\n"
    )
    (splat,) = analyze(text)
    assert splat.function == "slow_timer_fn"
    assert splat.frames[:2] == ("slow_timer_fn", "call_timer_fn")


def test_a_trace_from_regs_keeps_irq_context_culprits() -> None:
    # Regs first, no dumper on top: the code inside the IRQ is what was running.
    text = (
        "NMI watchdog: Watchdog detected hard LOCKUP on cpu 2\n"
        "RIP: 0010:native_queued_spin_lock_slowpath+0x1/0x2\nCall Trace:\n <IRQ>\n"
        " _raw_spin_lock_irqsave+0x1/0x2\n foo_irq_handler+0x1/0x2\n"
        " handle_irq_event+0x1/0x2\n </IRQ>\n bar+0x1/0x2\n\n"
    )
    (splat,) = analyze(text)
    assert splat.function == "foo_irq_handler"
    assert splat.knock_on == "waiting in native_queued_spin_lock_slowpath"


@pytest.mark.parametrize(
    "line,at_the_end",
    [
        ("WARNING: The mand mount option has been deprecated and", 0),
        ("BUG: value mismatch in user space test", 1),
        ("WARNING: CPU: 0 PID: 1 at lib/foo.c:12 foo+0x1/0x2", 1),
    ],
)
def test_a_message_line_without_a_dump_is_no_splat(line: str, at_the_end: int) -> None:
    filler = "".join(f"ordinary line {i}\n" for i in range(20))
    assert analyze(line + "\n" + filler) == []
    # ... unless the log stops right after a report's header: QEMU's end cut the dump off.
    assert len(analyze(filler + line + "\n")) == at_the_end


def test_lock_wrappers_are_skipped_but_kept_on_top() -> None:
    assert is_plumbing("lock_sock_nested") and is_plumbing("rtnl_lock")
    assert is_plumbing("down_write") and is_plumbing("up_read")  # "__?down" needed a "_"
    assert not is_plumbing("get_user_pages") and not is_plumbing("block_write_begin")
    assert not is_plumbing("sched_clock") and not is_plumbing("stage2_attr_walker")



# Consoles too small for a golden file, each pinning one attribution rule (in the formats of
# the kernel versions their names give).
SMALL_CONSOLES = {
    # dump_stack() from the NMI: reliable NMI frames, then the spinning task below </NMI>.
    "hard-lockup-nmi-dump-6.1": (
        """\
NMI watchdog: Watchdog detected hard LOCKUP on cpu 3
CPU: 3 PID: 77 Comm: worker Not tainted 6.1.0 #1
Call Trace:
 <NMI>
 dump_stack_lvl+0x1/0x2
 watchdog_hardlockup_check+0x1/0x2
 __perf_event_overflow+0x1/0x2
 intel_pmu_handle_irq+0x1/0x2
 perf_event_nmi_handler+0x1/0x2
 nmi_handle+0x1/0x2
 exc_nmi+0x1/0x2
 end_repeat_nmi+0x1/0x2
 </NMI>
 <TASK>
 native_queued_spin_lock_slowpath+0x1/0x2
 _raw_spin_lock_irqsave+0x1/0x2
 foo_update_stats+0x1/0x2
 foo_ioctl+0x1/0x2
 </TASK>
""",
        "foo_update_stats",
    ),
    "hung-task-6.8": (
        """\
INFO: task kworker/u8:3:123 blocked for more than 143 seconds.
      Not tainted 6.8.0 #1
"echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.
task:kworker/u8:3    state:D stack:0     pid:123   tgid:123   ppid:2      flags:0x00004000
Workqueue: events_unbound fsnotify_mark_destroy_workfn
Call Trace:
 <TASK>
 __schedule+0x1/0x2
 schedule+0x1/0x2
 schedule_timeout+0x1/0x2
 __wait_for_common+0x1/0x2
 __synchronize_srcu+0x1/0x2
 fsnotify_mark_destroy_workfn+0x1/0x2
 process_one_work+0x1/0x2
 </TASK>
""",
        "fsnotify_mark_destroy_workfn",
    ),
    # Before 4.4 a hard lockup was a WARN(): its report is the hard lockup's, and "<<EOE>>"
    # ends the NMI stack on the line of the interrupted frame.
    "hard-lockup-warn-3.18": (
        """\
------------[ cut here ]------------
WARNING: CPU: 1 PID: 0 at kernel/watchdog.c:265 watchdog_overflow_callback+0x9c/0xd0()
Watchdog detected hard LOCKUP on cpu 1
CPU: 1 PID: 0 Comm: swapper/1 Not tainted 3.18.0 #1
Call Trace:
 <NMI>  [<ffffffff81712f3c>] dump_stack+0x46/0x58
 [<ffffffff8106e646>] warn_slowpath_fmt+0x46/0x50
 [<ffffffff8110c70c>] watchdog_overflow_callback+0x9c/0xd0
 [<ffffffff8114aa9d>] __perf_event_overflow+0x9d/0x2a0
 [<ffffffff81032f4a>] intel_pmu_handle_irq+0x1ea/0x3f0
 [<ffffffff8171c2ca>] do_nmi+0x8a/0x3c0
 [<ffffffff8171b5ef>] end_repeat_nmi+0x1e/0x2e
 <<EOE>>  [<ffffffffa0123456>] foo_poll_loop+0x56/0x90 [foo]
 [<ffffffffa0123567>] foo_interrupt+0x27/0x60 [foo]
---[ end trace 1234567890abcdef ]---
""",
        "foo_poll_loop",
    ),
    # arm64 4.14: "PC is at", exception-stack words inside the trace, a busy-wait delay.
    "soft-lockup-arm64-4.14": (
        """\
watchdog: BUG: soft lockup - CPU#3 stuck for 22s! [kworker/3:2:4321]
CPU: 3 PID: 4321 Comm: kworker/3:2 Not tainted 4.14.0 #1
PC is at __delay+0x44/0x68
LR is at __const_udelay+0x2c/0x38
pc : [<ffff000008409a44>] lr : [<ffff0000084099cc>] pstate: 80000145
Call trace:
Exception stack(0xffff00000a4ebb80 to 0xffff00000a4ebcc0)
bb80: 0000000000000001 0000000000000000 0000000000000000 0000000000000000
[<ffff000008409a44>] __delay+0x44/0x68
[<ffff0000084099cc>] __const_udelay+0x2c/0x38
[<ffff000008712345>] bar_wait_ready+0x3c/0x90
[<ffff000008712456>] bar_work+0x2c/0x60
""",
        "bar_wait_ready",
    ),
    # x86's rwsem slow path goes through an asm thunk; inode_lock() is a wrapper.
    "hung-task-rwsem-4.19": (
        """\
INFO: task syz-executor2:8107 blocked for more than 140 seconds.
      Not tainted 4.19.0-rc8+ #65
syz-executor2   D24936  8107   5518 0x00000004
Call Trace:
 __schedule+0x86c/0x1ed0 kernel/sched/core.c:3473
 schedule+0xfe/0x460 kernel/sched/core.c:3517
 __rwsem_down_write_failed_common+0x95d/0x15e0 kernel/locking/rwsem-xadd.c:566
 rwsem_down_write_failed+0xe/0x10 kernel/locking/rwsem-xadd.c:595
 call_rwsem_down_write_failed+0x17/0x30 arch/x86/lib/rwsem.S:117
 __down_write arch/x86/include/asm/rwsem.h:142 [inline]
 down_write+0xaa/0x130 kernel/locking/rwsem.c:72
 inode_lock include/linux/fs.h:738 [inline]
 do_truncate+0x162/0x260 fs/open.c:61
""",
        "inode_lock",
    ),
    # arm64 without NMIs: the stalled CPU's running task, dumped from its saved context.
    "rcu-remote-task-dump-4.9": (
        """\
INFO: rcu_sched detected stalls on CPUs/tasks:
\t2-...: (1 GPs behind) idle=1/140000000000000/0 softirq=1/1 fqs=2100
\t(detected by 0, t=5252 jiffies, g=1, c=0, q=12)
Task dump for CPU 2:
stress-ng       R  running task        0  1234   1200 0x00000002
Call trace:
[<ffff000008085c3c>] __switch_to+0x9c/0xd8
[<ffff000008123456>] do_busy_loop+0x1/0x2
[<ffff000008123457>] stress_run+0x1/0x2
""",
        "do_busy_loop",
    ),
    # 4.x x86 regs: "RIP: 0010:[<addr>]  [<addr>] fn+off", raw stack words before the trace.
    "soft-lockup-x86-4.9": (
        """\
NMI watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [syz-executor3:4321]
Modules linked in:
hardirqs last  enabled at (123): [<ffffffff81234567>] restore_regs_and_iret+0x0/0x1d
CPU: 1 PID: 4321 Comm: syz-executor3 Not tainted 4.9.0 #1
task: ffff8801c1234567 task.stack: ffff8801c7654321
RIP: 0010:[<ffffffff8123>]  [<ffffffff8123>] __sanitizer_cov_trace_pc+0x1a/0x50
RSP: 0018:ffff8801c7654000  EFLAGS: 00000293
Stack:
 ffff8801c7654321 ffffffff81234567 ffff8801c7654321 ffffffff81234567
Call Trace:
 [<ffffffff81234567>] snd_seq_pool_done+0x1/0x2
 [<ffffffff81234568>] snd_seq_ioctl_set_client_pool+0x1/0x2
""",
        "snd_seq_pool_done",
    ),
}


@pytest.mark.parametrize("name", sorted(SMALL_CONSOLES))
def test_culprit_in_small_consoles(name: str) -> None:
    text, want = SMALL_CONSOLES[name]
    (splat,) = analyze(text)
    # `want` is the top frame: the culprit, or the lock wrapper right above it.
    assert splat.frames[0] == want, summary_line(splat)
    assert splat.function == (want if not is_plumbing(want) else splat.frames[1])


def test_interleaved_reports_take_their_own_tasks_dumps() -> None:
    # No caller ids: two tasks' reports with their headers first and their dumps after, in
    # the other order. Each report's dump is the one whose CPU line names its pid, and the
    # second report must not keep the first one's dump just because its walk met it first.
    text = """\
BUG: scheduling while atomic: vmm/41/0x00000002
BUG: scheduling while atomic: vmm/47/0x00000002
CPU: 1 UID: 0 PID: 41 Comm: vmm Not tainted 6.12.0 #1
Call trace:
 dump_backtrace+0x1/0x2
 __schedule_bug+0x1/0x2
 a_sleeps+0x1/0x2
 a_ioctl+0x1/0x2
CPU: 0 UID: 0 PID: 47 Comm: vmm Not tainted 6.12.0 #1
Call trace:
 dump_backtrace+0x1/0x2
 __schedule_bug+0x1/0x2
 b_sleeps+0x1/0x2
 b_ioctl+0x1/0x2
"""
    got = [(s.pid, s.cpu, s.function) for s in analyze(text)]
    assert got == [(41, 1, "a_sleeps"), (47, 0, "b_sleeps")]


# --- --update-goldens -----------------------------------------------------------------

def test_update_goldens_puts_back_what_the_analyzer_says(tmp_path: Path) -> None:
    original = (GOLDEN / "arm64-interleaved-atomic-sleep-and-lockdep.log").read_bytes()
    path = tmp_path / "g.log"
    # A passing golden is left alone, byte for byte.
    path.write_bytes(original)
    assert not update_from_analyzer(path) and path.read_bytes() == original
    # A wrong value is corrected, comments and the keys chosen kept.
    path.write_bytes(original.replace(b"SUBTYPE: invalid_wait_context",
                                      b"SUBTYPE: held_lock_freed", 1))
    assert update_from_analyzer(path) and path.read_bytes() == original
    # A splat the header lacks gets a block; a block for a splat not found goes.
    head, _, console = original.partition(b"\n\n")
    fewer = head.rsplit(b"\n---\n", 1)[0] + b"\n\n" + console
    path.write_bytes(fewer)
    assert update_from_analyzer(path)
    blocks, _ = parse_golden(path)
    assert len(blocks) == 4 and blocks[3] == {
        "KIND": "lockdep", "FUNCTION": "add_fault_range", "TASK": "s2fault-vmm"}
    more = head + b"\n---\nKIND: kasan\nFUNCTION: nowhere\n\n" + console
    path.write_bytes(more)
    assert update_from_analyzer(path) and path.read_bytes() == original
    # A clean console's header becomes EXPECT: none, and back.
    path.write_bytes(head + b"\n\n[    1.000000] Booting Linux\n")
    assert update_from_analyzer(path)
    assert parse_golden(path)[0] == [] and b"EXPECT: none" in path.read_bytes()
    path.write_bytes(b"# a comment\nEXPECT: none\n\n" + console)
    assert update_from_analyzer(path)
    blocks, _ = parse_golden(path)
    assert [b["KIND"] for b in blocks] == ["lockdep", "lockdep", "atomic_sleep", "lockdep"]
    assert path.read_bytes().startswith(b"# a comment\nKIND: lockdep\n")
