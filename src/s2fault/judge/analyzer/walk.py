"""Pass 2 of the scan: walk one report from its header line, collecting the evidence its row
asks for (the culprit trace; through evidence.py, the other dumps, pc/lr, held locks, who
and where).

A walk never goes past the next header unless that header continues the open report (an arm64
"Internal error: Oops" after "Unable to handle kernel ...", a panic after the report that caused
it), or, walking a dump found by its pid, the header is another CPU's line in the middle of
that dump's trace; and never more than MAX_REPORT_LINES lines, so no input makes it quadratic.
"""

from __future__ import annotations

import re

from s2fault.judge.analyzer import console
from s2fault.judge.analyzer.catalogue import END_PANIC
from s2fault.judge.analyzer.evidence import (
    Dump,
    Evidence,
    collect,
    collect_stall,
    dump_start,
    new_dump,
)
from s2fault.judge.analyzer.frames import (
    is_marker,
    leaves_irq,
    parse_frame,
    parse_pc,
    split_lead_marker,
)
from s2fault.judge.analyzer.headers import Header

MAX_REPORT_LINES = 3000  # a long lockdep circular report is ~300 lines
AFTER_TRACE_LINES = 300  # how far past the culprit trace a row's end marker may be
FOREIGN_LINES = 3  # unrelated lines (another CPU, user space) tolerated inside a trace
TRUNCATED_LINES = 4  # a log ending this close after a header may have lost the report's dump

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

# Lines that belong to a stall report between its dumps.
_STALL_LINE = re.compile(
    r"(?:rcu: |\t|\s+\(t=|\s+\(detected by|Sending NMI|All QSes seen|INFO: Stall ended"
    r"|Offline CPU|\S+ kthread (?:starved|timer wakeup)|\s+Unless |\s*blocking rcu_node)"
)
# arm64 4.x prints exception frames' registers inside the trace; neither a frame nor the end.
_NEUTRAL = re.compile(
    r"\s*(?:Exception stack\(|[0-9a-f]{3,16}: [0-9a-f]{8,16}(?: [0-9a-f]{8,16}){0,3}\s*$)"
)


def _continues(header: Header, kind: str) -> bool:
    allowed = header.family.continues
    return "*" in allowed or kind in allowed


def walk_report(
    text: str, headers: list[Header], index: int, resumed: bool = False
) -> tuple[Evidence, int, int]:
    """Walk the report of headers[index]; return its evidence, last line, next header index.

    `resumed`: headers[index] is a stand-in just before a dump known to be the report's own
    (found by its task, see demultiplex.py): the culprit trace may start at once, and another
    report's header printed in the middle of that trace is another CPU's line, not its end."""
    head = headers[index]
    family = head.family
    kind = family.kind
    ev = Evidence(last_fact=head.line.number)
    new_dump(ev, head.line.number, "main")
    if kind == "rcu_stall":
        # Before 4.x the stalled CPUs are listed on the header's own line: "{ 1 P41}".
        collect_stall(ev, head.line.number, head.line.body)
    nxt = index + 1
    limit = headers[nxt].line.number if nxt < len(headers) else None
    armed = resumed or family.trace_after is None  # may the culprit trace start yet?
    phase = "seek"  # seek -> trace -> done
    seek_from = head.line.number
    end_marker = family.end
    panicking = False
    foreign = 0
    after_trace = 0
    start_offset = text.find("\n", head.line.offset)
    if start_offset < 0:
        ev.truncated = True
        return ev, head.line.number, nxt
    last_line = head.line.number
    for line in console.lines_from(text, start_offset + 1, head.line.number + 1):
        if limit is not None and line.number >= limit:
            following = headers[nxt]
            if not _continues(following, kind):
                if resumed and phase == "trace":
                    nxt += 1
                    limit = headers[nxt].line.number if nxt < len(headers) else None
                    continue
                break
            # Part of this report: fold it in and look past it.
            nxt += 1
            limit = headers[nxt].line.number if nxt < len(headers) else None
            ev.last_fact = line.number
            if following.family.kind == "panic" and (phase != "seek" or ev.dump.has_stack()):
                # After panic() only its end marker matters; its own dump_stack() is not
                # evidence about this report. (With panic_on_warn, 4.x panics before the
                # WARN's dump: panic()'s dump_stack() is then the only one, and is kept.)
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
        if family.multi and dump_start(ev, line.number, body):
            phase, seek_from, foreign, after_trace = "seek", line.number, 0, 0
            ev.last_fact = line.number
            continue
        if phase == "trace":
            mark, rest = split_lead_marker(body)
            if mark is not None:
                if mark.startswith("/") or mark in ("EOI", "EOE"):
                    ev.dump.breaks.append(len(ev.dump.frames))
                body = rest
            frame = parse_frame(body)
            if frame is not None:
                if frame[1]:
                    _add_frame(ev.dump, frame[0])
                ev.trace_last = line.number
                foreign = 0
                continue
            if is_marker(body):
                if leaves_irq(body):
                    ev.dump.breaks.append(len(ev.dump.frames))
                ev.trace_last = line.number
                continue
            if _X86_REGS.match(body):
                # x86 prints the interrupted context's registers inside the trace: its RIP is
                # that context's top frame.
                pc = parse_pc(body)
                if pc is not None:
                    ev.dump.regs_at.append(len(ev.dump.frames))
                    ev.dump.frames.append(pc)
                continue
            if _NEUTRAL.match(body):
                continue
            if foreign < FOREIGN_LINES and _ENDS_TRACE.match(body) is None:
                foreign += 1
                continue
            phase = "done"
            after_trace = 0
            foreign = 0
        if phase == "done":
            if family.multi:
                # Between dumps a stall report prints its own lines ("rcu: ...", "Sending
                # NMI ..."); anything else for a few lines means the report is over.
                if _STALL_LINE.match(body):
                    collect(ev, family, line.number, body)
                    ev.last_fact = line.number
                    foreign = 0
                    continue
                foreign += 1
                if foreign > FOREIGN_LINES:
                    break
                continue
            if end_marker is None:
                break
            after_trace += 1
            if after_trace > AFTER_TRACE_LINES:
                break
            # Sanitizer reports name the CPU and task only after their traces.
            collect(ev, family, line.number, body)
            continue
        collect(ev, family, line.number, body)
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
                    ev.dump.frames.append(frame[0])
                ev.trace_last = line.number
        if phase == "seek" and line.number - seek_from > family.budget:
            break
    else:
        if phase == "seek" and family.has_trace:
            # The log stops inside the report, before its trace: all of the rest is the report.
            ev.last_fact = max(ev.last_fact, last_line)
            # Cut right after the header (QEMU killed): too soon to tell a report from a message.
            ev.truncated = last_line - head.line.number <= TRUNCATED_LINES
    return ev, ev.end or max(ev.last_fact, ev.trace_last), nxt


def _add_frame(dump: Dump, name: str) -> None:
    # The unwinder may print the frame whose registers it just showed: keep one.
    frames = dump.frames
    if dump.regs_at and dump.regs_at[-1] == len(frames) - 1 and frames[-1] == name:
        return
    frames.append(name)
