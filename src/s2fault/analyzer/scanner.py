"""The engine that runs the catalogue over a console log.

Two passes, both linear in the size of the log:

1. find headers: one regex search for the catalogue's scan keywords over the whole text (done
   in C), and only the lines holding a keyword are tried against the rows;
2. walk each report: from its header line forward, up to the next header, collecting the
   evidence its row asks for (the culprit trace, pc/lr, held locks, who and where).

A walk never goes past the next header unless that header continues the open report (an arm64
"Internal error: Oops" after "Unable to handle kernel ...", a panic after the report that caused
it), and never more than MAX_REPORT_LINES lines, so no input makes it quadratic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from . import console
from .catalogue import END_PANIC, FAMILIES, PANIC_CONSEQUENCES, SCAN_KEYWORDS, Family, slug
from .frames import base_name, first_own, is_marker, is_plumbing, parse_frame, parse_lr, parse_pc
from .splat import Splat

MAX_REPORT_LINES = 3000  # a long lockdep circular report is ~300 lines
AFTER_TRACE_LINES = 300  # how far past the culprit trace a row's end marker may be
FOREIGN_LINES = 3  # unrelated lines (another CPU, user space) tolerated inside a trace
PANIC_NEARBY = 40  # a panic this close after a report is that report's ending

_SCAN = re.compile("|".join(re.escape(k) for k in SCAN_KEYWORDS))

# Lines that end a call trace: a blank line, a rule, a section heading ("Allocated by task 41:",
# "stack backtrace:"), or the first line of the next dump.
_ENDS_TRACE = re.compile(
    r"\s*(?:$|---\[|={5,}|-{5,}|CPU: \d|Hardware name:|Modules linked in|Kernel panic"
    r"|NMI backtrace|Sending NMI|task:|INFO: |BUG: |WARNING: |irq event stamp|hardirqs last"
    r"|softirqs last|pstate:|pc :|lr :|Unable to handle|Internal error|Showing "
    r"|\d+ locks? held by|no locks held by|\S.{0,200}:\s*$)"
)
# x86 prints exception registers in the middle of a trace; they neither end it nor count as
# foreign lines.
_X86_REGS = re.compile(r"\s*(?:R[A-Z0-9]{1,3}|Code|FS|CS|CR2|DR\d|PKRU|EFLAGS): ")

# 6.12 dump_stack_print_info(): "CPU: 1 UID: 0 PID: 41 Comm: s2fault-vmm Not tainted 6.12..."
_CPU_LINE = re.compile(
    r"\s*CPU: (?P<cpu>\d+) (?:UID: \d+ )?PID: (?P<pid>\d+) Comm: (?P<task>.{1,20}?)"
    r"(?: (?:Not tainted|Tainted:)|\s*$)"
)
# rcu stall per-CPU line: "rcu: \t1-....: (5249 ticks this GP) idle=..."
_RCU_CPU = re.compile(r"(?:rcu: )?\s*(?P<cpu>\d+)-\S{4}: \(")
_HELD_LOCK = re.compile(r"\s*#\d+: .*?, at: (?P<function>[A-Za-z_.$][\w.$]*)\+0x")
_CALLER_IS = re.compile(r"\s*caller is (?P<function>[A-Za-z_.$][\w.$]*)\+0x")
# Only work that is running can hog a pool; pending work is the victim, not the culprit.
_WQ_WORK = re.compile(r"\s*in-flight: (?P<works>.*)")
_BANNER = re.compile(r"\s*(?:-{5,}\[ cut here \]-{5,}|={5,})\s*$")
_WQ_FUNC = re.compile(r"(?:\d+:|\d+\*)?(?P<function>[A-Za-z_][\w.$]*)")


@dataclass
class _Header:
    line: console.Line
    family: Family
    fields: dict[str, str | None]


@dataclass
class _Evidence:
    frames: list[str] = field(default_factory=list)
    trace_last: int = 0
    pc: str | None = None
    lr: str | None = None
    caller: str | None = None
    held: list[str] = field(default_factory=list)
    works: list[str] = field(default_factory=list)
    who: dict[str, str] = field(default_factory=dict)  # task/pid/cpu from body lines
    cpu_line: dict[str, str] = field(default_factory=dict)
    rcu_cpu: str | None = None
    last_fact: int = 0
    end: int | None = None


def _match_header(body: str) -> tuple[Family, dict[str, str | None]] | None:
    for family in FAMILIES:
        if family.needle in body:
            m = family.header.search(body)
            if m is not None:
                return family, m.groupdict()
    return None


def find_headers(text: str) -> list[_Header]:
    """Every line of `text` that starts a report, in order."""
    headers: list[_Header] = []
    pos = 0  # always a line start
    number = 1  # line number of `pos`
    size = len(text)
    while pos < size:
        m = _SCAN.search(text, pos)
        if m is None:
            break
        hit = m.start()
        nl = text.rfind("\n", pos, hit)
        start = nl + 1 if nl >= 0 else pos
        number += text.count("\n", pos, start)
        if hit - start < console.MAX_LINE:
            line = console.line_at(text, start, number)
            found = _match_header(line.body)
            if found is not None:
                headers.append(_Header(line, found[0], found[1]))
        end = text.find("\n", hit)
        if end < 0:
            break
        # Restart at the next line: one search per line however many keywords it holds.
        number += 1
        pos = end + 1
    return headers


def _continues(header: _Header, kind: str) -> bool:
    allowed = header.family.continues
    return "*" in allowed or kind in allowed


def _collect(ev: _Evidence, family: Family, number: int, body: str) -> None:
    """Take what this line says about the report (who, where, which locks)."""
    s = body.lstrip()
    if not s:
        return
    first = s[0]
    if first == "C" and s.startswith("CPU: ") and not ev.cpu_line:
        m = _CPU_LINE.match(s)
        if m is not None:
            ev.cpu_line = {k: v for k, v in m.groupdict().items() if v}
            ev.last_fact = number
    elif first in "pPR" and ev.pc is None:
        pc = parse_pc(s)
        if pc is not None:
            ev.pc = pc
            ev.last_fact = number
    elif first in "lL" and ev.lr is None:
        lr = parse_lr(s)
        if lr is not None:
            ev.lr = lr
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
    if family.kind == "workqueue_lockup" and ":" in s:
        m = _WQ_WORK.match(s)
        if m is not None:
            for item in m.group("works").split(","):
                w = _WQ_FUNC.match(item.strip())
                if w is not None and w.group("function") != "BAR":
                    ev.works.append(w.group("function"))
            ev.last_fact = number
    elif family.kind == "rcu_stall" and ev.rcu_cpu is None:
        m = _RCU_CPU.match(s)
        if m is not None:
            ev.rcu_cpu = m.group("cpu")
            ev.last_fact = number
    for pattern in family.info:
        if "task" in ev.who and "pid" in ev.who:
            break
        m = pattern.search(body)
        if m is not None:
            for key, value in m.groupdict().items():
                if value and key not in ev.who:
                    ev.who[key] = value
            ev.last_fact = number


def _walk(text: str, headers: list[_Header], index: int) -> tuple[_Evidence, int, int]:
    """Walk the report of headers[index]; return its evidence, last line, next header index."""
    head = headers[index]
    family = head.family
    kind = family.kind
    ev = _Evidence(last_fact=head.line.number)
    nxt = index + 1
    limit = headers[nxt].line.number if nxt < len(headers) else None
    armed = family.trace_after is None  # may the culprit trace start yet?
    phase = "seek"  # seek -> trace -> done
    end_marker = family.end
    panicking = False
    foreign = 0
    after_trace = 0
    start_offset = text.find("\n", head.line.offset)
    if start_offset < 0:
        return ev, head.line.number, nxt
    last_line = head.line.number
    for line in console.lines_from(text, start_offset + 1, head.line.number + 1):
        if limit is not None and line.number >= limit:
            following = headers[nxt]
            if not _continues(following, kind):
                break
            # Part of this report: fold it in and look past it.
            nxt += 1
            limit = headers[nxt].line.number if nxt < len(headers) else None
            ev.last_fact = line.number
            if following.family.kind == "panic":
                # After panic() only its end marker matters; its own dump_stack() is not
                # evidence about this report.
                panicking = True
                end_marker = END_PANIC
                if phase == "trace":
                    phase = "done"
            continue
        if line.number - head.line.number > MAX_REPORT_LINES:
            break
        if (
            family.same_caller
            and head.line.caller is not None
            and line.caller is not None
            and line.caller != head.line.caller
        ):
            continue
        body = line.body
        if body and not body.isspace():
            last_line = line.number
        if family.line_prefix is not None and body.startswith(family.line_prefix):
            body = body[len(family.line_prefix) :]
        if end_marker is not None and end_marker.match(body):
            ev.end = line.number
            break
        if panicking:
            after_trace += 1
            if after_trace > AFTER_TRACE_LINES:
                break
            continue
        if phase == "trace":
            frame = parse_frame(body)
            if frame is not None:
                if frame[1]:
                    ev.frames.append(frame[0])
                ev.trace_last = line.number
                foreign = 0
                continue
            if is_marker(body):
                ev.trace_last = line.number
                continue
            if _X86_REGS.match(body):
                continue
            if foreign < FOREIGN_LINES and _ENDS_TRACE.match(body) is None:
                foreign += 1
                continue
            phase = "done"
        if phase == "done":
            if end_marker is None:
                break
            after_trace += 1
            if after_trace > AFTER_TRACE_LINES:
                break
            # Sanitizer reports name the CPU and task only after their traces.
            _collect(ev, family, line.number, body)
            continue
        _collect(ev, family, line.number, body)
        if not armed:
            if family.trace_after is not None and family.trace_after.match(body):
                armed = True
                ev.last_fact = line.number
        elif family.trace_start.match(body):
            phase = "trace"
            ev.last_fact = line.number
        elif family.bare_trace:
            frame = parse_frame(body)
            if frame is not None:
                phase = "trace"
                if frame[1]:
                    ev.frames.append(frame[0])
                ev.trace_last = line.number
        if phase == "seek" and line.number - head.line.number > family.budget:
            break
    else:
        if phase == "seek" and family.has_trace:
            # The log stops inside the report, before its trace: all of the rest is the report.
            ev.last_fact = max(ev.last_fact, last_line)
    return ev, ev.end or max(ev.last_fact, ev.trace_last), nxt


def _blame(head: _Header, ev: _Evidence) -> str | None:
    for evidence in head.family.blame:
        if evidence == "trace":
            found = first_own(ev.frames)
        elif evidence == "held_lock":
            found = first_own(ev.held)
        elif evidence == "workqueue":
            found = first_own(ev.works)
        else:
            name = {
                "header": head.fields.get("function"),
                "pc": ev.pc,
                "lr": ev.lr,
                "caller": ev.caller,
            }.get(evidence)
            found = base_name(name) if name and not is_plumbing(name) else None
        if found:
            return found
    return None


class _Fields(dict[str, str]):
    """Header groups for titles; a group the header did not capture prints as "?"."""

    def __missing__(self, key: str) -> str:
        return "?"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _start_line(text: str, head: _Header, floor: int) -> int:
    """Include the banner the kernel prints just before the header ("[ cut here ]", "====")."""
    prev = console.previous_line_start(text, head.line.offset)
    if prev is None or head.line.number - 1 <= floor:
        return head.line.number
    body = console.line_at(text, prev, head.line.number - 1).body
    if _BANNER.match(body):
        return head.line.number - 1
    return head.line.number


def _build(text: str, head: _Header, ev: _Evidence, end: int, floor: int) -> Splat:
    family = head.family
    function = _blame(head, ev)
    fields = _Fields({k: v for k, v in head.fields.items() if v is not None})
    for key, value in ev.who.items():
        fields.setdefault(key, value)
    for key, value in ev.cpu_line.items():
        fields.setdefault(key, value)
    if ev.rcu_cpu is not None:
        fields.setdefault("cpu", ev.rcu_cpu)
    task = fields.get("task")
    task = task.strip() if task else None
    if function is not None:
        fields["function"] = function
        template = family.title
    else:
        template = family.untitled
    title = template(fields) if callable(template) else template.format_map(fields)
    if callable(family.subtype):
        subtype = family.subtype(fields)
    elif family.subtype is not None:
        subtype = slug(family.subtype.format_map(fields))
    else:
        subtype = None
    return Splat(
        kind=family.kind,
        subtype=subtype or None,
        title=_one_line(title),
        function=function,
        frames=tuple(ev.frames),
        cpu=_int(fields.get("cpu")),
        task=task or None,
        pid=_int(fields.get("pid")),
        start_line=_start_line(text, head, floor),
        end_line=max(end, head.line.number),
    )


def _panic_belongs(head: _Header, previous: Splat) -> bool:
    if head.line.number - previous.end_line <= PANIC_NEARBY:
        return True
    message = head.fields.get("msg") or ""
    for pattern, kinds in PANIC_CONSEQUENCES:
        if pattern.search(message) and ("*" in kinds or previous.kind in kinds):
            return True
    return False


def scan(text: str) -> list[Splat]:
    """All reports in decoded console text, in order of appearance."""
    headers = find_headers(text)
    splats: list[Splat] = []
    index = 0
    while index < len(headers):
        head = headers[index]
        ev, end, nxt = _walk(text, headers, index)
        previous = splats[-1] if splats else None
        if head.family.kind == "panic" and previous is not None and _panic_belongs(head, previous):
            # The report's ending, printed after the report had already finished.
            splats[-1] = _extend(previous, end)
        else:
            floor = previous.end_line if previous is not None else 0
            splats.append(_build(text, head, ev, end, floor))
        index = nxt
    return splats


def _extend(splat: Splat, end: int) -> Splat:
    return replace(splat, end_line=max(splat.end_line, end))
