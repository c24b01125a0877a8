"""What the lines of a report say about it: the recognisers of single lines, and the records
they fill while a report is walked.

A report may hold several stack dumps (an RCU stall prints each stalled CPU's NMI backtrace,
"Task dump for CPU N", the grace-period kthread's stack): each is a `Dump`, opened by the line
that heads it (`dump_start`). The other lines (`collect`) name who and where (the CPU line,
pc/lr, "caller is", the lockdep lock's "at:", held locks, in-flight work, the stalled CPUs and
tasks) into the report's `Evidence`. The call-trace lines themselves are the walk's (walk.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from s2fault.judge.analyzer.catalogue import Family
from s2fault.judge.analyzer.frames import parse_lr, parse_pc, symbol_name

# 6.12 dump_stack_print_info(): "CPU: 1 UID: 0 PID: 41 Comm: s2fault-vmm Not tainted 6.12..."
CPU_LINE = re.compile(
    r"\s*CPU: (?P<cpu>\d+) (?:UID: \d+ )?PID: (?P<pid>\d+) Comm: (?P<task>.{1,20}?)"
    r"(?: (?:Not tainted|Tainted:)|\s*$)"
)
# rcu stall per-CPU line: "rcu: \t1-....: (5249 ticks this GP) idle=..." (6.x), "\t1-...: ("
# (4.x), "\t1: (" (3.x).
_RCU_CPU = re.compile(r"(?:rcu: )?\s*(?P<cpu>\d+)(?:-\S{3,5})?: \(")
# Stalled CPUs and tasks listed inline: "{ 1-...D } 21002 jiffies" (expedited), "{ 1 P41}" (3.x).
_RCU_BRACES = re.compile(r"\{\s*(?P<list>[^{}]{0,200}?)\s*\}")
# PREEMPT_RCU readers blocking the grace period: "Tasks blocked on level-0 rcu_node (CPUs 0-1):
# P41 P42" (pids, "P41/1:b..l" in 6.x).
_RCU_TASKS = re.compile(r"Tasks blocked on level-\d+ rcu_node")
_RCU_PID = re.compile(r"\bP(?P<pid>\d+)\b")
_DETECTED_BY = re.compile(r"\(detected by (?P<cpu>\d+),")
_NMI_DUMP = re.compile(
    r"\s*NMI backtrace for cpu (?P<cpu>\d+)(?: skipped: idling at (?P<idle>\S+))?"
)
_TASK_DUMP = re.compile(r"\s*Task dump for CPU (?P<cpu>\d+):")
# sched_show_task() since 5.8: "task:s2fault-vmm state:R  running task     stack:0 pid:41 ..."
_SHOW_TASK = re.compile(
    r"task:(?P<task>.{1,16}?)\s+state:\S.{0,40}?\bpid:\s*(?P<pid>\d+)"
)
# sched_show_task() before 5.8: "%-15.15s %c" then stack/pid/ppid/flags:
#   "syz-executor3   D23624  4510   4509 0x00000004"
#   "rcu_sched       R  running task    14504     8      2 0x80000000"
_OLD_SHOW_TASK = re.compile(
    r"(?P<task>\S.{0,14}) [RSDTtXZPIKN](?:\s+running task)?(?:\s+[0-9a-f]{16})?\s*\d+"
    r"\s+(?P<pid>\d+)\s+\d+ 0x[0-9a-f]{8}\s*$"
)
# Headings after which the dumps are about the RCU grace-period kthread, never the culprit.
_GP_KTHREAD = re.compile(
    r"(?:rcu: )?\s*(?:RCU grace-period kthread stack dump:"
    r"|Stack dump where RCU GP kthread last ran:)"
)
_STOPPER = re.compile(r"\s*Stopper: ")
_HELD_LOCK = re.compile(
    r"\s*#\d+: .*?, at: (?:\[<[0-9a-f]+>\] )?(?P<function>[A-Za-z_.$][\w.$]*)\+0x"
)
# The lock a lockdep report is about: "ffff0000c68c8030 (&mmu->fault_ranges_mutex){+.+.}-{3:3},
# at: add_fault_range+0x8/0x400" (4.x: " (sk_lock-AF_INET){+.+.+.}, at: [<addr>] tcp_sendmsg+...").
_LOCK_AT = re.compile(
    r"\s*(?:[0-9a-f]{8,16} )?\(.{1,120}?\)\{.{4,8}\}(?:-\{\d:\d\})?, at: "
    r"(?:\[<[0-9a-f]+>\] )?(?P<function>[A-Za-z_.$][\w.$]*)\+0x"
)
_CALLER_IS = re.compile(r"\s*caller is (?P<function>[A-Za-z_.$][\w.$]*)\+0x")
# Only work that is running can hog a pool; pending work is the victim, not the culprit.
_WQ_WORK = re.compile(r"\s*in-flight: (?P<works>.*)")
_WQ_FUNC = re.compile(r"(?:\d+:|\d+\*)?(?P<function>[A-Za-z_][\w.$]*)")


@dataclass
class Dump:
    """One stack dump inside a report: the report's own, or another CPU's or task's."""

    start: int
    # "main" (the report's own), "cpu" (NMI backtrace, Task dump for CPU N), "task"
    # (sched_show_task), "gp_heading"/"gp_kthread" (the RCU grace-period kthread's: never blamed)
    label: str = "main"
    cpu: str | None = None
    task: str | None = None
    pid: str | None = None
    pc: str | None = None
    lr: str | None = None
    idle: str | None = None  # "NMI backtrace for cpu 1 skipped: idling at ..."
    frames: list[str] = field(default_factory=list)
    breaks: list[int] = field(default_factory=list)  # frame indexes after "</IRQ>", "<EOI>"
    regs_at: list[int] = field(default_factory=list)  # frames taken from in-trace x86 regs
    stopper: bool = False
    has_cpu_line: bool = False
    cpu_line: int | None = None  # the line number of its "CPU: N ... PID: P" line

    def has_stack(self) -> bool:
        return bool(self.frames) or self.pc is not None or self.has_cpu_line


@dataclass
class Evidence:
    """What the walk of one report found: its dumps and what its other lines named."""

    dumps: list[Dump] = field(default_factory=list)
    trace_last: int = 0
    caller: str | None = None
    lock_at: str | None = None  # where the lock a lockdep report is about was taken
    held: list[str] = field(default_factory=list)
    works: list[str] = field(default_factory=list)
    who: dict[str, str] = field(default_factory=dict)  # task/pid/cpu from body lines
    stalled_cpus: list[str] = field(default_factory=list)
    stalled_pids: list[str] = field(default_factory=list)
    detected_by: str | None = None
    notes: set[str] = field(default_factory=set)  # "debug_locks": a DEBUG_LOCKS_WARN_ON message
    last_fact: int = 0
    end: int | None = None
    # the log ended within walk.TRUNCATED_LINES of the header, before a trace
    truncated: bool = False

    @property
    def dump(self) -> Dump:
        return self.dumps[-1]


def new_dump(ev: Evidence, number: int, label: str, cpu: str | None = None) -> Dump:
    dump = Dump(start=number, label=label, cpu=cpu)
    ev.dumps.append(dump)
    return dump


def _fresh(ev: Evidence) -> bool:
    """The current dump was opened by a heading ("Task dump for CPU 1:") and has no task yet."""
    dump = ev.dump
    return dump.label != "main" and dump.task is None and not dump.frames and dump.pc is None


def dump_start(ev: Evidence, number: int, body: str) -> bool:
    """Open a new dump if this line starts one (multi-dump reports: stalls, hard lockups)."""
    s = body.lstrip()
    if not s:
        return False
    first = s[0]
    gp = ev.dump.label == "gp_heading"
    if first == "N" and s.startswith("NMI backtrace for cpu"):
        m = _NMI_DUMP.match(s)
        if m is None:
            return False
        dump = ev.dump if gp else new_dump(ev, number, "cpu")
        dump.label = "gp_kthread" if gp else "cpu"
        dump.cpu = m.group("cpu")
        dump.idle = symbol_name(m.group("idle"))
        return True
    if first == "T" and s.startswith("Task dump for CPU"):
        m = _TASK_DUMP.match(s)
        if m is None:
            return False
        dump = ev.dump if gp else new_dump(ev, number, "cpu")
        dump.label = "gp_kthread" if gp else "cpu"
        dump.cpu = m.group("cpu")
        return True
    if first == "t" and s.startswith("task:"):
        m = _SHOW_TASK.match(s)
        if m is None:
            return False
        _task_dump(ev, number, gp, m.group("task"), m.group("pid"))
        return True
    if _GP_KTHREAD.match(s):
        new_dump(ev, number, "gp_heading")
        return True
    if len(body) > 17 and body[15] == " " and "0x" in body:
        # sched_show_task() before 5.8 pads the comm to 15 characters.
        m = _OLD_SHOW_TASK.match(body)
        if m is not None:
            _task_dump(ev, number, gp, m.group("task"), m.group("pid"))
            return True
    return False


def _task_dump(ev: Evidence, number: int, gp: bool, task: str, pid: str) -> None:
    dump = ev.dump if gp or _fresh(ev) else new_dump(ev, number, "task")
    if gp:
        dump.label = "gp_kthread"
    dump.task, dump.pid = task.strip(), pid


def collect(ev: Evidence, family: Family, number: int, body: str) -> None:
    """Take what this line says about the report (who, where, which locks)."""
    s = body.lstrip()
    if not s:
        return
    dump = ev.dump
    first = s[0]
    if first == "C" and s.startswith("CPU: "):
        m = CPU_LINE.match(s)
        if m is not None:
            if family.multi and dump.has_cpu_line and (dump.frames or dump.pc):
                dump = new_dump(ev, number, "cpu")
            if not dump.has_cpu_line:
                dump.has_cpu_line = True
                dump.cpu_line = number
                dump.cpu = dump.cpu or m.group("cpu")
                dump.pid = dump.pid or m.group("pid")
                task = m.group("task")
                if task and not dump.task:
                    dump.task = task.strip()
            ev.last_fact = number
    elif first in "pPR" and dump.pc is None:
        pc = parse_pc(s)
        if pc is not None:
            dump.pc = pc
            ev.last_fact = number
    elif first in "lL" and dump.lr is None:
        lr = parse_lr(s)
        if lr is not None:
            dump.lr = lr
            ev.last_fact = number
    elif first == "#":
        m = _HELD_LOCK.match(s)
        if m is not None:
            ev.held.append(m.group("function"))
            ev.last_fact = number
    elif first == "c" and s.startswith("caller is "):
        m = _CALLER_IS.match(s)
        if m is not None and ev.caller is None:
            ev.caller = m.group("function")
            ev.last_fact = number
    elif first in "f(0123456789abcdef" and ev.lock_at is None and ", at: " in s:
        m = _LOCK_AT.match(s)
        if m is not None:
            ev.lock_at = m.group("function")
    elif first == "S" and _STOPPER.match(s):
        dump.stopper = True
    elif first == "D" and "DEBUG_LOCKS_WARN_ON" in s:
        ev.notes.add("debug_locks")
    kind = family.kind
    if kind == "workqueue_lockup" and ":" in s:
        m = _WQ_WORK.match(s)
        if m is not None:
            for item in m.group("works").split(","):
                w = _WQ_FUNC.match(item.strip())
                if w is not None and w.group("function") != "BAR":
                    ev.works.append(w.group("function"))
            ev.last_fact = number
    elif kind == "rcu_stall":
        collect_stall(ev, number, s)
    for pattern in family.info:
        if "task" in ev.who and "pid" in ev.who:
            break
        m = pattern.search(body)
        if m is not None:
            for key, value in m.groupdict().items():
                if value and key not in ev.who:
                    ev.who[key] = value
            ev.last_fact = number


def collect_stall(ev: Evidence, number: int, s: str) -> None:
    """Which CPUs and tasks an RCU stall report says are stalled, and who detected it."""
    if ev.detected_by is None and "detected by" in s:
        m = _DETECTED_BY.search(s)
        if m is not None:
            ev.detected_by = m.group("cpu")
            ev.last_fact = number
    if "{" in s:
        m = _RCU_BRACES.search(s)
        if m is not None:
            for token in m.group("list").split():
                cpu = token.split("-", 1)[0]
                pid = token[1:].split("/", 1)[0]
                if cpu.isdigit():
                    ev.stalled_cpus.append(cpu)
                elif token.startswith("P") and pid.isdigit():
                    ev.stalled_pids.append(pid)
            ev.last_fact = number
    elif ": (" in s:
        m = _RCU_CPU.match(s)
        if m is not None:
            ev.stalled_cpus.append(m.group("cpu"))
            ev.last_fact = number
    elif "Tasks blocked on" in s and _RCU_TASKS.search(s):
        ev.stalled_pids.extend(m.group("pid") for m in _RCU_PID.finditer(s.split(":", 1)[-1]))
        ev.last_fact = number
