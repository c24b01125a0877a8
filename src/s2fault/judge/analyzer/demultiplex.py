"""Pass 4 of the scan: give each report the stack dump of its own task when its walk did not
find it (another report cut it short, or two CPUs printed at once and their lines interleave).

Without caller ids (CONFIG_PRINTK_CALLER) the pid on a dump's "CPU: N ... PID: P" line is what
still says whose it is; see demultiplex().
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import replace

from s2fault.judge.analyzer import console
from s2fault.judge.analyzer.assembly import assemble
from s2fault.judge.analyzer.blame import pick_dump
from s2fault.judge.analyzer.evidence import CPU_LINE, Evidence
from s2fault.judge.analyzer.headers import Header
from s2fault.judge.analyzer.splat import Splat
from s2fault.judge.analyzer.walk import MAX_REPORT_LINES, walk_report

# Lines a report may print between its header and its dump that its walk does not keep
# as facts ("preempt_count: 2", "4 locks held by ...:" and the locks): another report's
# header that close cut it short.
_INTERRUPT_GAP = 20

# The line dump_stack() starts with, found anywhere in the log (checked with CPU_LINE).
_ANNOUNCE = re.compile(r"CPU: \d+ (?:UID: \d+ )?PID: \d+ Comm: ")


def cut_short(headers: list[Header], nxt: int, end: int) -> bool:
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


def demultiplex(text: str, headers: list[Header], splats: list[Splat],
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
        if not splat.frames and by_task and cut_short(headers, nxt, splat.end_line):
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
            found, end, _ = walk_report(text, [stand_in, *later], 0, resumed=True)
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
