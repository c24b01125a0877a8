"""The splat catalogue: one row per family of kernel report.

Each row says how to recognise the report's first line and what to take from the lines after
it. The message formats are those of Linux 6.12 (kernel/watchdog.c, kernel/locking/lockdep.c,
kernel/sched/core.c, mm/kasan/report.c, ...); older spellings are kept where consoles still
show them. Rows are tried in order and the first whose header matches wins, so a specific row
("BUG: KASAN: ...") must come before a general one ("BUG: ...").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from s2fault.judge.analyzer.frames import SYMBOL

_F = r"(?P<function>" + SYMBOL + r")"  # a %pS value; the offset is not captured
# "comm/pid" as lockdep and DEBUG_SPINLOCK print it. A comm is at most 15 characters but may
# hold "/" ("swapper/1"); the bound keeps backtracking on hostile lines constant.
_TASK = r"(?P<task>.{1,64})"
_WHO = _TASK + r"/(?P<pid>\d+)"

CALL_TRACE = re.compile(r"\s*Call [Tt]race:")
STACK_BACKTRACE = re.compile(r"\s*stack backtrace:")
END_TRACE = re.compile(r"---\[ end trace")
END_PANIC = re.compile(r"---\[ end Kernel panic")
END_RULE = re.compile(r"={10,}\s*$")  # the closing rule of KASAN/KCSAN/KMSAN/KFENCE reports

# The substrings the whole-log scan looks for: a single pass of a literal alternation, after
# which only lines holding a keyword are tried against the rows. So every row's header regex
# must require one of them literally (tests/test_analyzer.py checks it).
SCAN_KEYWORDS = (
    "BUG",
    "WARNING",
    "INFO: ",
    "LOCKUP",
    "Oops",
    "Unable to handle kernel",
    "Internal error",
    "Kernel panic",
    "UBSAN: ",
    "unreferenced object",
    "[#",
)

Fields = Mapping[str, str | None]


@dataclass(frozen=True)
class Family:
    """One row of the catalogue.

    kind, subtype   what the harness matches expectations against; `subtype` is a template
                    over the header's named groups, slugged ("spinlock_{what}"), or a function.
    needle          cheap substring tested before the header regex runs.
    header          regex searched in the printk text of a line (timestamp and caller id
                    already stripped); named groups cpu/task/pid/function feed the splat.
    title           template over the groups plus {function}, used when a culprit was found;
                    `untitled` is used when none was.
    blame           evidence for the culprit, in order: "header" (the header's function),
                    "pc"/"lr" (the regs the report printed), "trace" (first own frame),
                    "caller" ("caller is ..."), "held_lock" (first lock "at:"),
                    "lock_at" (where the lock a lockdep report is about was taken),
                    "workqueue" (the work function in flight in the stuck pool).
    trace_after     the culprit trace is the first one after this line (lockdep prints
                    dependency-chain traces before its "stack backtrace:").
    bare_trace      frames may follow without a "Call trace:" line (sanitizer reports).
    end             the report's last line, when the kernel prints one.
    same_caller     with printk caller ids, lines from another caller are not this report's.
                    False where the kernel prints another CPU's backtrace on its behalf.
    continues       kinds of an open report this header is part of ("*": any), e.g. arm64
                    "Internal error: Oops" after "Unable to handle kernel ...".
    info            extra regexes over the body lines that name task/pid/cpu.
    line_prefix     subsystem prefix printed on every line of the report ("kmemleak: ").
    budget          how many lines after the header the culprit trace may start.
    has_trace       False for reports that print no trace at all.
    multi           the report holds several stack dumps (other CPUs' NMI backtraces, "Task
                    dump for CPU N", the RCU grace-period kthread): each is kept apart.
    pick            which dump shows the culprit: "first" (the report's own), "stalled" (the
                    CPU or task an RCU stall report lists as stalled), "cpu" (the header's CPU).
    interrupted     the report samples code it interrupted (lockups, stalls): a trace that
                    starts in the stack dumper is blamed below its first interrupt entry, and
                    the splat says whether the code was only waiting for another CPU.
    needs_stack     a catch-all header ("BUG: ...") is a splat only with a dump after it
                    (or when the log ends first): a bare message line is not a report.
    """

    kind: str
    needle: str
    header: re.Pattern[str]
    title: str | Callable[[Fields], str]
    untitled: str | Callable[[Fields], str]
    subtype: str | Callable[[Fields], str | None] | None = None
    blame: tuple[str, ...] = ("trace",)
    trace_after: re.Pattern[str] | None = None
    bare_trace: bool = False
    trace_start: re.Pattern[str] = CALL_TRACE
    end: re.Pattern[str] | None = None
    same_caller: bool = True
    continues: frozenset[str] = frozenset()
    info: tuple[re.Pattern[str], ...] = ()
    line_prefix: str | None = None
    budget: int = 200
    has_trace: bool = True
    multi: bool = False
    pick: str = "first"
    interrupted: bool = False
    needs_stack: bool = False


def slug(text: str) -> str:
    """A subtype spelling: "slab-use-after-free" -> "slab_use_after_free"."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:48]


def _re(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


# Lines inside lockdep reports that name the task ("s2fault-vmm/41 is trying to lock:").
_LOCKDEP_WHO = _re(
    r"^" + _WHO + r"(?: \[HC\S{0,40}\])? (?:is trying to|just changed|takes:|is freeing"
    r"|is leaving|is exiting)"
)
# lockdep_print_held_locks() of the reporting task: "4 locks held by s2fault-vmm/41:", "no locks
# held by s2fault-vmm/41." (without caller ids, the pid that tells interleaved reports apart).
_LOCKDEP_HOLDER = _re(r"^\s*(?:\d+ locks?|no locks) held by " + _WHO + r"[:.]\s*$")


def _lockdep(
    subtype: str,
    needle: str,
    header: str,
    message: str,
    *,
    blame: tuple[str, ...] = ("trace", "lock_at"),
    trace_after: re.Pattern[str] | None = STACK_BACKTRACE,
    budget: int = 800,
    has_trace: bool = True,
) -> Family:
    return Family(
        kind="lockdep",
        needle=needle,
        header=_re(header),
        subtype=subtype,
        title="lockdep: " + message + " in {function}",
        untitled="lockdep: " + message,
        blame=blame,
        trace_after=trace_after,
        info=(_LOCKDEP_WHO, _LOCKDEP_HOLDER),
        budget=budget,
        has_trace=has_trace,
    )


def _oops_subtype(what: str) -> str | None:
    what = what.lower()
    for words, subtype in (
        ("null pointer", "null_ptr_deref"),
        ("paging request", "paging_request"),
        ("page fault", "paging_request"),
        ("user memory", "user_memory_access"),
        ("general protection", "general_protection_fault"),
        ("invalid opcode", "undefined_instruction"),
        ("undefined instruction", "undefined_instruction"),
        ("bti", "bti"),
        ("fpac", "fpac"),
        ("cfi", "cfi"),
    ):
        if words in what:
            return subtype
    return None


def _x86_oops_what(fields: Fields) -> str:
    # "general protection fault, probably for non-canonical address 0x...": keep the first part.
    return (fields.get("what") or "Oops").split(",", 1)[0]


def _headline(fields: Fields) -> str:
    # "Bad page state in process s2fault-vmm  pfn:4a800" -> "Bad page state": drop the pids and
    # addresses so the title is stable across runs.
    return re.split(r": | in |!", fields.get("msg") or "", maxsplit=1)[0].strip() or "?"


def _first_sentence(fields: Fields) -> str:
    # "No working init found.  Try passing init= option to kernel. ..." -> "No working init
    # found"; "Attempted to kill init! exitcode=0x0000000b" -> "Attempted to kill init".
    msg = re.split(r"(?<=[.!])\s", fields.get("msg") or "", maxsplit=1)[0]
    return msg.rstrip(" .!") or "?"


def _kcsan_title(fields: Fields) -> str:
    where = fields["function"] or ""
    if fields.get("other"):
        where += " / " + (fields["other"] or "")
    return f"KCSAN: {fields['bug']} in {where}"


# What every RCU stall row shares: several dumps, the stalled CPU's is the culprit's.
_STALL: dict[str, Any] = {"multi": True, "pick": "stalled", "interrupted": True}

FAMILIES: tuple[Family, ...] = (
    # --- lockups and stalls: blame where the CPU was when the detector looked -------------------
    Family(
        kind="soft_lockup",
        needle="soft lockup",
        header=_re(
            r"BUG: soft lockup - CPU#(?P<cpu>\d+) stuck for (?P<secs>\d+)s! "
            r"\[(?P<task>.{0,64}):(?P<pid>\d+)\]"
        ),
        title="soft lockup in {function}",
        untitled="soft lockup on CPU#{cpu}",
        blame=("pc", "trace", "lr"),
        interrupted=True,
    ),
    Family(
        kind="hard_lockup",
        needle="hard LOCKUP",
        header=_re(r"Watchdog detected hard LOCKUP on cpu (?P<cpu>\d+)"),
        title="hard lockup in {function}",
        untitled="hard lockup on CPU#{cpu}",
        blame=("pc", "trace", "lr"),
        same_caller=False,  # the backtrace comes from the locked-up CPU via NMI
        multi=True,  # the buddy detector reports from another CPU, then NMIs the stuck one
        pick="cpu",
        interrupted=True,
    ),
    Family(
        kind="rcu_stall",
        needle="self-detected stall",
        header=_re(r"INFO: (?P<flavor>\w+) self-detected stall on CPU"),
        subtype="self_detected",
        title="rcu stall in {function}",
        untitled="{flavor} self-detected stall",
        blame=("pc", "trace", "lr"),
        same_caller=False,
        budget=400,
        **_STALL,
    ),
    Family(
        # 2.6.3x: "INFO: rcu_sched_state detected stall on CPU 1 (t=2500 jiffies)".
        kind="rcu_stall",
        needle="detected stall on CPU",
        header=_re(r"INFO: (?P<flavor>\w+) detected stall on CPU (?P<cpu>\d+)"),
        subtype="self_detected",
        title="rcu stall in {function}",
        untitled="{flavor} self-detected stall",
        blame=("pc", "trace", "lr"),
        same_caller=False,
        budget=400,
        **_STALL,
    ),
    Family(
        kind="rcu_stall",
        needle="detected expedited stalls",
        header=_re(r"INFO: (?P<flavor>\w+) detected expedited stalls on CPUs/tasks:"),
        subtype="expedited",
        title="rcu stall in {function}",
        untitled="{flavor} detected expedited stalls",
        blame=("pc", "trace", "lr"),
        same_caller=False,
        budget=400,
        **_STALL,
    ),
    Family(
        kind="rcu_stall",
        needle="detected stalls on",
        header=_re(r"INFO: (?P<flavor>\w+) detected stalls on (?:CPUs/)?tasks:"),
        subtype="detected",
        title="rcu stall in {function}",
        untitled="{flavor} detected stalls",
        blame=("pc", "trace", "lr"),
        same_caller=False,
        budget=400,
        **_STALL,
    ),
    Family(
        kind="hung_task",
        needle="INFO: task ",
        header=_re(
            r"INFO: task " + _TASK + r":(?P<pid>\d+) blocked for more than (?P<secs>\d+) seconds"
        ),
        title="task hung in {function}",
        untitled="task {task}:{pid} blocked for more than {secs} seconds",
    ),
    Family(
        # A task killed but still running after the hung-task timeout (the hung-task
        # checker's "can't die" report of syzbot's debugging kernels).
        kind="hung_task",
        needle="can't die",
        header=_re(
            r"INFO: task " + _TASK + r":(?P<pid>\d+) can't die for more than (?P<secs>\d+) seconds"
        ),
        subtype="cant_die",
        title="task can't die in {function}",
        untitled="task {task}:{pid} can't die for more than {secs} seconds",
        blame=("pc", "trace"),
    ),
    Family(
        kind="workqueue_lockup",
        needle="workqueue lockup",
        header=_re(r"BUG: workqueue lockup - pool (?P<pool>.*?) stuck for (?P<secs>\d+)s!"),
        title="workqueue lockup in {function}",
        untitled="workqueue lockup",
        blame=("workqueue", "trace"),
        same_caller=False,
        budget=400,
    ),
    # --- lockdep and DEBUG_SPINLOCK: blame the code that took (or dropped) the lock -------------
    _lockdep(
        "circular",
        "circular locking",
        r"(?:WARNING|INFO): possible circular locking dependency detected",
        "possible circular locking dependency",
    ),
    _lockdep(
        "recursive",
        "recursive locking",
        r"(?:WARNING|INFO): possible recursive locking detected",
        "possible recursive locking",
    ),
    _lockdep(
        "inconsistent",
        "inconsistent lock state",
        r"(?:WARNING|INFO): inconsistent lock state",
        "inconsistent lock state",
    ),
    _lockdep(
        "invalid_wait_context",
        "Invalid wait context",
        r"BUG: Invalid wait context",
        "Invalid wait context",
    ),
    _lockdep(
        "bad_unlock_balance",
        "bad unlock balance",
        r"(?:WARNING|BUG): bad unlock balance detected!",
        "bad unlock balance",
    ),
    _lockdep(
        "bad_contention",
        "bad contention",
        r"(?:WARNING|BUG): bad contention detected!",
        "bad contention",
    ),
    _lockdep(
        "held_lock_freed",
        "held lock freed",
        r"(?:WARNING|BUG): held lock freed!",
        "held lock freed",
    ),
    _lockdep(
        "lock_held_at_exit",
        "locks held",
        r"(?:WARNING|BUG): " + _WHO + r" still has locks held!",
        "lock held at exit",
        blame=("held_lock", "trace"),
    ),
    _lockdep(
        "lock_held_at_exit",
        "held at",
        r"BUG: locks? held at (?:task )?exit",
        "lock held at exit",
        blame=("held_lock", "trace"),
    ),
    _lockdep(
        "lock_held_returning_to_user",
        "returning to user space",
        r"(?:WARNING|BUG): lock held when returning to user space!",
        "lock held when returning to user space",
        blame=("held_lock",),
        trace_after=None,
        budget=40,
        has_trace=False,
    ),
    _lockdep(
        "nested_lock_not_taken",
        "Nested lock was not taken",
        r"(?:WARNING|BUG): Nested lock was not taken",
        "nested lock was not taken",
    ),
    _lockdep(
        "irq_lock_inversion",
        "irq lock inversion",
        r"(?:WARNING|INFO): possible irq lock inversion dependency detected",
        "possible irq lock inversion dependency",
    ),
    _lockdep(
        "irq_lock_order",
        "lock order detected",
        r"(?:WARNING|INFO): (?P<safe>\S+)-safe -> (?P<unsafe>\S+)-unsafe lock order detected",
        "{safe}-safe -> {unsafe}-unsafe lock order",
    ),
    _lockdep(
        "suspicious_rcu",
        "suspicious ",
        r"(?:WARNING|INFO): suspicious (?:RCU|rcu_dereference_check\(\)) usage",
        "suspicious RCU usage",
    ),
    _lockdep(
        "chain_key_collision",
        "chain_key collision",
        r"WARNING: chain_key collision",
        "chain_key collision",
    ),
    _lockdep(
        "capacity",
        " too low!",
        r"BUG: (?P<limit>MAX_\w+) too low!",
        "{limit} too low",
        trace_after=None,
    ),
    _lockdep(
        "bad_key",
        "BUG: ",
        r"BUG: (?:key \S+ (?:has )?not (?:been registered|in \.data)|looking up invalid subclass)",
        "bad lock class key",
        trace_after=None,
    ),
    _lockdep(
        "non_static_key",
        "non-static key",
        r"INFO: trying to register non-static key",
        "non-static key",
        trace_after=None,
    ),
    _lockdep(
        "spinlock_lockup",
        "lockup suspected",
        r"BUG: spinlock lockup suspected on CPU#(?P<cpu>\d+), " + _WHO,
        "spinlock lockup suspected",
        trace_after=None,
    ),
    Family(
        kind="lockdep",
        needle="BUG: spinlock ",
        header=_re(
            r"BUG: spinlock (?P<what>bad magic|cpu recursion|recursion|already unlocked"
            r"|wrong owner|wrong CPU) on CPU#(?P<cpu>\d+), " + _WHO
        ),
        subtype="spinlock_{what}",
        title="lockdep: spinlock {what} in {function}",
        untitled="lockdep: spinlock {what}",
    ),
    Family(
        kind="lockdep",
        needle="BUG: rwlock ",
        header=_re(
            r"BUG: rwlock (?P<what>bad magic|recursion|wrong owner|wrong CPU|already unlocked"
            r"|lockup suspected) on CPU#(?P<cpu>\d+), " + _WHO
        ),
        subtype="rwlock_{what}",
        title="lockdep: rwlock {what} in {function}",
        untitled="lockdep: rwlock {what}",
    ),
    # --- might_sleep() and preemption checks: blame the caller of the sleeping primitive --------
    Family(
        kind="atomic_sleep",
        needle="sleeping function called",
        header=_re(r"BUG: sleeping function called from invalid context at (?P<where>\S+)"),
        subtype="sleeping_in_atomic",
        title="sleeping function called from invalid context in {function}",
        untitled="sleeping function called from invalid context at {where}",
        info=(
            _re(
                r"in_atomic\(\): \d+, irqs_disabled\(\): \d+, (?:non_block: -?\d+, )?"
                r"pid: (?P<pid>\d+), name: (?P<task>.{1,64})"
            ),
        ),
    ),
    Family(
        kind="atomic_sleep",
        needle="scheduling while atomic",
        header=_re(r"BUG: scheduling while atomic: " + _WHO + r"/0x[0-9a-f]+"),
        subtype="scheduling_while_atomic",
        title="scheduling while atomic in {function}",
        untitled="scheduling while atomic",
    ),
    Family(
        kind="atomic_sleep",
        needle="non-blocking section",
        header=_re(r"BUG: scheduling in a non-blocking section: " + _WHO + r"/-?\d+"),
        subtype="scheduling_in_non_blocking",
        title="scheduling in a non-blocking section in {function}",
        untitled="scheduling in a non-blocking section",
    ),
    Family(
        kind="atomic_sleep",
        needle="smp_processor_id() in preemptible",
        header=_re(r"BUG: using smp_processor_id\(\) in preemptible \[[0-9a-f]+\] code: " + _WHO),
        subtype="smp_processor_id_preemptible",
        title="using smp_processor_id() in preemptible code in {function}",
        untitled="using smp_processor_id() in preemptible code",
        blame=("caller", "trace"),
    ),
    Family(
        kind="atomic_sleep",
        needle="__this_cpu_",
        header=_re(
            r"BUG: using (?P<op>__this_cpu_\w+)\(\) in preemptible \[[0-9a-f]+\] code: " + _WHO
        ),
        subtype="this_cpu_preemptible",
        title="using {op}() in preemptible code in {function}",
        untitled="using {op}() in preemptible code",
        blame=("caller", "trace"),
    ),
    # --- sanitizers: the header names the faulting function --------------------------------------
    Family(
        kind="kasan",
        needle="BUG: KASAN: ",
        header=_re(r"BUG: KASAN: (?P<bug>[\w-]+)(?: in " + _F + r")?"),
        subtype="{bug}",
        title="KASAN: {bug} in {function}",
        untitled="KASAN: {bug}",
        blame=("header", "trace"),
        end=END_RULE,
        info=(
            _re(
                r"(?:(?:Read|Write) of size \d+ at|Free of) addr [0-9a-f]+ by task "
                + _WHO
                + r"\s*$"
            ),
        ),
    ),
    Family(
        kind="kmsan",
        needle="BUG: KMSAN: ",
        header=_re(r"BUG: KMSAN: (?P<bug>[\w-]+) in " + _F),
        subtype="{bug}",
        title="KMSAN: {bug} in {function}",
        untitled="KMSAN: {bug}",
        blame=("header", "trace"),
        bare_trace=True,
        end=END_RULE,
    ),
    Family(
        kind="kcsan",
        needle="BUG: KCSAN: ",
        header=_re(
            r"BUG: KCSAN: (?P<bug>[\w-]+(?:: [\w ]+?)?) in "
            + _F
            + r"(?:\+0x[0-9a-f]+/0x[0-9a-f]+)?(?: / (?P<other>"
            + SYMBOL
            + r"))?"
        ),
        subtype="{bug}",
        title=_kcsan_title,
        untitled="KCSAN: {bug}",
        blame=("header", "trace"),
        bare_trace=True,
        end=END_RULE,
        same_caller=False,  # the racing access may be reported from the other CPU's record
    ),
    Family(
        kind="kfence",
        needle="BUG: KFENCE: ",
        header=_re(r"BUG: KFENCE: (?P<bug>[a-z][a-z -]{0,40}?) in " + _F),
        subtype="{bug}",
        title="KFENCE: {bug} in {function}",
        untitled="KFENCE: {bug}",
        blame=("header", "trace"),
        bare_trace=True,
        end=END_RULE,
    ),
    # --- arm64 die(): continues "kernel BUG at" / "Unable to handle kernel ..." ----------------
    Family(
        kind="bug",
        needle="Internal error",
        header=_re(r"Internal error: Oops - BUG: (?P<esr>[0-9a-f]+) \[#\d+\]"),
        subtype="kernel_bug",
        title="kernel BUG in {function}",
        untitled="kernel BUG",
        blame=("pc", "trace"),
        end=END_TRACE,
        continues=frozenset({"bug", "oops", "warning", "ubsan"}),
    ),
    Family(
        kind="oops",
        needle="Internal error",
        header=_re(r"Internal error: (?P<what>[^:]{1,80}): (?P<esr>[0-9a-f]+) \[#\d+\]"),
        subtype=lambda f: _oops_subtype(f.get("what") or ""),
        title="{what} in {function}",
        untitled="{what}",
        blame=("pc", "trace"),
        end=END_TRACE,
        continues=frozenset({"bug", "oops", "ubsan", "kasan"}),
    ),
    Family(
        kind="ubsan",
        needle="UBSAN: ",
        header=_re(r"UBSAN: (?P<bug>[\w-]+) in (?P<where>\S+)"),
        subtype="{bug}",
        title="UBSAN: {bug} in {function}",
        untitled="UBSAN: {bug} in {where}",
        end=END_TRACE,
    ),
    Family(
        kind="leak",
        needle="unreferenced object",
        header=_re(r"unreferenced object 0x[0-9a-f]+ \(size (?P<size>\d+)\):"),
        title="memory leak in {function}",
        untitled="memory leak",
        trace_start=_re(r"\s*backtrace(?: \(crc [0-9a-f]+\))?:"),
        info=(_re(r'comm "(?P<task>.{0,64})", pid (?P<pid>\d+)'),),
        line_prefix="kmemleak:",
        budget=60,
    ),
    # --- WARN() and BUG() ---------------------------------------------------------------------
    Family(
        kind="warning",
        needle="WARNING: ",
        header=_re(
            r"WARNING: CPU: (?P<cpu>\d+) PID: (?P<pid>\d+) at (?:(?P<where>\S+:\d+) )?" + _F
        ),
        title="WARNING in {function}",
        untitled="WARNING at {where}",
        blame=("header", "pc", "trace"),
        end=END_TRACE,
        needs_stack=True,
    ),
    Family(
        # Since 6.18: "WARNING: kernel/foo.c:12 at bar+0x1/0x2, CPU#1: comm/41".
        kind="warning",
        needle="WARNING: ",
        header=_re(
            r"WARNING: (?P<where>\S+:\d+) at " + _F + r"\S*, CPU#(?P<cpu>\d+): " + _WHO
        ),
        title="WARNING in {function}",
        untitled="WARNING at {where}",
        blame=("header", "pc", "trace"),
        end=END_TRACE,
        needs_stack=True,
    ),
    Family(
        kind="warning",
        needle="WARNING: at ",
        header=_re(r"WARNING: at (?P<where>\S+:\d+) " + _F),
        title="WARNING in {function}",
        untitled="WARNING at {where}",
        blame=("header", "pc", "trace"),
        end=END_TRACE,
        needs_stack=True,
    ),
    Family(
        kind="bug",
        needle="BUG at",
        header=_re(r"[Kk]ernel BUG at (?:(?P<where>[^\s!]+)!|" + _F + r")"),
        subtype="kernel_bug",
        title="kernel BUG in {function}",
        untitled="kernel BUG at {where}",
        blame=("pc", "trace"),
        end=END_TRACE,
    ),
    # --- page faults and traps ------------------------------------------------------------------
    Family(
        kind="oops",
        needle="Unable to handle kernel",
        header=_re(
            r"Unable to handle kernel (?P<what>[\w ,-]{1,80}?) at virtual address"
            r" (?P<addr>[0-9a-f]+)"
        ),
        subtype=lambda f: _oops_subtype(f.get("what") or ""),
        title="Unable to handle kernel {what} in {function}",
        untitled="Unable to handle kernel {what}",
        blame=("pc", "trace"),
        end=END_TRACE,
    ),
    Family(
        kind="oops",
        needle="BUG: ",
        header=_re(
            r"BUG: (?P<what>kernel NULL pointer dereference|unable to handle page fault"
            r"|unable to handle kernel (?:NULL pointer dereference|paging request))"
        ),
        subtype=lambda f: _oops_subtype(f.get("what") or ""),
        title="{what} in {function}",
        untitled="{what}",
        blame=("pc", "trace"),
        end=END_TRACE,
    ),
    Family(
        # x86 __die_header(): "Oops: general protection fault, ...: 0000 [#1] PREEMPT SMP".
        kind="oops",
        needle="[#",
        header=_re(r"^(?:Oops: )?(?P<what>[A-Za-z][^:]{0,120}): [0-9a-f]{4} \[#\d+\]"),
        subtype=lambda f: _oops_subtype(f.get("what") or ""),
        title=lambda f: f"{_x86_oops_what(f)} in {f['function']}",
        untitled="{what}",
        blame=("pc", "trace"),
        end=END_TRACE,
        continues=frozenset({"oops", "bug"}),
    ),
    # --- panic, and every other "BUG: " ----------------------------------------------------------
    Family(
        kind="panic",
        needle="Kernel panic",
        header=_re(r"Kernel panic - not syncing: ?(?P<msg>.{0,160})"),
        title=lambda f: f"kernel panic: {_first_sentence(f)} in {f['function']}",
        untitled=lambda f: f"kernel panic: {_first_sentence(f)}",
        end=END_PANIC,
        continues=frozenset({"*"}),
    ),
    Family(
        # Kernel BUG messages that are whole reports in one line.
        kind="bug",
        needle="BUG: ",
        header=_re(r"^BUG: (?P<msg>Bad rss-counter state|non-zero pgtables_bytes on freeing mm)"),
        subtype=lambda f: slug(_headline(f)),
        title=lambda f: f"BUG: {_headline(f)}",
        untitled=lambda f: f"BUG: {_headline(f)}",
        has_trace=False,
        budget=0,
    ),
    Family(
        kind="bug",
        needle="BUG: ",
        header=_re(r"^BUG: (?P<msg>.{1,160})"),
        subtype=lambda f: slug(_headline(f)),
        title=lambda f: f"BUG: {_headline(f)} in {f['function']}",
        untitled=lambda f: f"BUG: {_headline(f)}",
        blame=("trace", "pc"),
        end=END_TRACE,
        needs_stack=True,
        budget=40,
    ),
)

# A panic that says it is the consequence of an earlier report belongs to that report, however
# many lines (hung-task lock dumps, say) came between.
PANIC_CONSEQUENCES: tuple[tuple[re.Pattern[str], frozenset[str]], ...] = (
    (_re(r"softlockup: hung tasks"), frozenset({"soft_lockup"})),
    (_re(r"hung_task: blocked tasks"), frozenset({"hung_task"})),
    (_re(r"Hard LOCKUP|hardlockup"), frozenset({"hard_lockup"})),
    (_re(r"RCU Stall"), frozenset({"rcu_stall"})),
    (_re(r"Fatal exception"), frozenset({"oops", "bug", "kasan", "ubsan", "warning"})),
    (_re(r"panic_on_warn set"), frozenset({"*"})),
)
