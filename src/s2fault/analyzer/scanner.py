"""The engine that runs the catalogue over a console log.

The passes, all linear in the size of the log:

1. find headers (headers.py): one regex search for the catalogue's scan keywords over the
   whole text, and only the lines holding a keyword are tried against the rows;
2. walk each report: from its header line forward, up to the next header, collecting the
   evidence its row asks for (the culprit trace, pc/lr, held locks, who and where). A report
   may hold several stack dumps (an RCU stall prints each stalled CPU's NMI backtrace, "Task
   dump for CPU N", the grace-period kthread's stack): each is a `Dump`, and the row's
   `pick` says which one shows the culprit. What single lines say, and the records they fill,
   are in evidence.py;
3. blame (blame.py): in the picked dump, the row's evidence in order. A trace that starts in
   the stack dumper was printed by the reporter on top of the code it interrupted, so it is
   blamed below its first interrupt entry (frames.interrupted_part);
4. demultiplex: a report whose own task's dump is not where its walk looked (another report
   cut it short, or two CPUs printed at once and their lines interleave) takes the first
   dump further down whose "CPU: N ... PID: P" names its pid (_demultiplex).

A walk never goes past the next header unless that header continues the open report (an arm64
"Internal error: Oops" after "Unable to handle kernel ...", a panic after the report that caused
it), or, walking a dump found by its pid, the header is another CPU's line in the middle of
that dump's trace; and never more than MAX_REPORT_LINES lines, so no input makes it quadratic.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import replace

from . import console
from .assembly import assemble
from .blame import pick_dump
from .catalogue import END_PANIC, PANIC_CONSEQUENCES
from .evidence import CPU_LINE, Dump, Evidence, collect, collect_stall, dump_start, new_dump
from .frames import (
    is_marker,
    leaves_irq,
    parse_frame,
    parse_pc,
    split_lead_marker,
)
from .headers import Header, find_headers
from .splat import Splat

MAX_REPORT_LINES = 3000  # a long lockdep circular report is ~300 lines
AFTER_TRACE_LINES = 300  # how far past the culprit trace a row's end marker may be
FOREIGN_LINES = 3  # unrelated lines (another CPU, user space) tolerated inside a trace
PANIC_NEARBY = 40  # a panic this close after a report is that report's ending
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


def _walk(
    text: str, headers: list[Header], index: int, resumed: bool = False
) -> tuple[Evidence, int, int]:
    """Walk the report of headers[index]; return its evidence, last line, next header index.

    `resumed`: headers[index] is a stand-in just before a dump known to be the report's own
    (found by its task, see _demultiplex): the culprit trace may start at once, and another
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


def _panic_belongs(head: Header, previous: Splat) -> bool:
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
    # each splat's header, the header index after its walk, whether it had no dump, and
    # its evidence
    heads: list[tuple[Header, int, bool, Evidence]] = []
    index = 0
    while index < len(headers):
        head = headers[index]
        ev, end, nxt = _walk(text, headers, index)
        previous = splats[-1] if splats else None
        if head.family.kind == "panic" and previous is not None and _panic_belongs(head, previous):
            # The report's ending, printed after the report had already finished.
            splats[-1] = _extend(previous, end)
        else:
            # A bare "BUG: ..." or "WARNING: ..." line with no dump after it is a message,
            # not a kernel report, unless another report cut it short: then its dump may
            # come after that one (kept until _demultiplex() looked).
            bare = head.family.needs_stack and not ev.truncated and not any(
                d.has_stack() for d in ev.dumps)
            if not bare or _interrupted(headers, nxt, end):
                floor = previous.end_line if previous is not None else 0
                splats.append(assemble(text, head, ev, end, floor))
                heads.append((head, nxt, bare, ev))
        index = nxt
    return _demultiplex(text, headers, splats, heads)


# Lines a report may print between its header and its dump that its walk does not keep
# as facts ("preempt_count: 2", "4 locks held by ...:" and the locks): another report's
# header that close cut it short.
_INTERRUPT_GAP = 20

# The line dump_stack() starts with, found anywhere in the log (checked with CPU_LINE).
_ANNOUNCE = re.compile(r"CPU: \d+ (?:UID: \d+ )?PID: \d+ Comm: ")


def _interrupted(headers: list[Header], nxt: int, end: int) -> bool:
    """The walk stopped at another report's header, right after its own lines."""
    return nxt < len(headers) and headers[nxt].line.number <= end + _INTERRUPT_GAP


def _own_pid(head: Header, ev: Evidence) -> str | None:
    """The pid of the task a report is about, as its header or its own lines name it
    ("pid: 41, name: ...", "s2fault-vmm/47 is trying to lock"), never its dump's."""
    return head.fields.get("pid") or ev.who.get("pid")


def _announced_dumps(text: str) -> dict[str, list[tuple[int, int]]]:
    """Every dump_stack() in the log by the pid its "CPU: N ... PID: P Comm: C" line names:
    (line number, offset of that line), in order."""
    found: dict[str, list[tuple[int, int]]] = {}
    number, pos, last = 1, 0, 0
    for m in _ANNOUNCE.finditer(text):
        start = text.rfind("\n", 0, m.start()) + 1
        if start < pos or m.start() - start >= console.MAX_LINE:
            continue
        number += text.count("\n", pos, start)
        pos = start
        if number == last:
            continue
        c = CPU_LINE.match(console.line_at(text, start, number).body)
        if c is not None:
            found.setdefault(c.group("pid"), []).append((number, start))
            last = number
    return found


def _demultiplex(text: str, headers: list[Header], splats: list[Splat],
                 heads: list[tuple[Header, int, bool, Evidence]]) -> list[Splat]:
    """Tell apart reports that two tasks printed at once, by task: without caller ids
    (CONFIG_PRINTK_CALLER) two CPUs' reports interleave line by line, and the pid is what
    still says whose a line is.

    A report whose lines are all its own task's (`same_caller`) has its own task's stack
    dump: the one whose "CPU: N ... PID: P" names the pid the report names. Two kinds of
    report get that dump from further down the log, the first one of their pid that no
    other report has:
    - one cut short by another report (a WARNING printed from inside a "sleeping function
      called from invalid context" report, between its header and its dump; two CPUs'
      reports interleaved line by line): it walked into no dump of its own;
    - one whose walk took another task's dump (the other CPU's dump came out between its
      header and its own dump).
    Reports printed by one CPU about another (stalls, buddy lockups: `same_caller` False)
    keep the dumps their walk found."""
    announced: dict[str, list[tuple[int, int]]] | None = None
    claimed: set[int] = set()
    wanted: list[tuple[int, str]] = []
    for i, splat in enumerate(splats):
        head, nxt, bare, ev = heads[i]
        pid = _own_pid(head, ev)
        by_task = head.family.same_caller and pid is not None
        dump = pick_dump(head, ev)[0]
        if by_task and dump.cpu_line is not None and dump.pid != pid:
            wanted.append((i, pid or ""))
            continue
        claimed.update(d.cpu_line for d in ev.dumps if d.cpu_line is not None)
        if not splat.frames and by_task and _interrupted(headers, nxt, splat.end_line):
            wanted.append((i, pid or ""))
    out: list[Splat | None] = list(splats)
    for i, splat in enumerate(splats):
        if not splat.frames and heads[i][2]:
            out[i] = None  # a bare message, unless a dump turns up below
    numbers = [h.line.number for h in headers]
    for i, pid in wanted:
        if announced is None:
            announced = _announced_dumps(text)
        head, _, _, ev = heads[i]
        splat = splats[i]
        top = head.line.number
        dumps_of = announced.get(pid, [])
        for k in range(bisect_right(dumps_of, (top, len(text))), len(dumps_of)):
            number, offset = dumps_of[k]
            if number in claimed:
                continue
            prev = console.previous_line_start(text, offset)
            if number - top > MAX_REPORT_LINES or prev is None:
                break
            # Walk the dump as the report's own, from a stand-in header on the line before.
            stand_in = Header(console.line_at(text, prev, number - 1), head.family, head.fields)
            later = headers[bisect_right(numbers, number - 1):]
            found, end, _ = _walk(text, [stand_in, *later], 0, resumed=True)
            dumps = [d for d in found.dumps if d.frames and d.pid == pid]
            if not dumps:
                break
            claimed.add(number)
            ev.dumps = dumps
            rebuilt = assemble(text, head, ev, end, 0)
            out[i] = replace(rebuilt, start_line=splat.start_line,
                             cpu=rebuilt.cpu if rebuilt.cpu is not None else splat.cpu)
            break
    return [s for s in out if s is not None]


def _extend(splat: Splat, end: int) -> Splat:
    return replace(splat, end_line=max(splat.end_line, end))
