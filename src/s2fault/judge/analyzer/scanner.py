"""The engine that runs the catalogue over a console log: the passes, in order.

All are linear in the size of the log:

1. find headers (headers.py): one regex search for the catalogue's scan keywords over the
   whole text, and only the lines holding a keyword are tried against the rows;
2. walk each report (walk.py): from its header line forward, up to the next header,
   collecting the evidence its row asks for (the culprit trace, pc/lr, held locks, who and
   where). A report may hold several stack dumps (an RCU stall prints each stalled CPU's NMI
   backtrace, "Task dump for CPU N", the grace-period kthread's stack): each is a `Dump`.
   What single lines say, and the records they fill, are in evidence.py;
3. blame (blame.py): the row's `pick` says which dump shows the culprit; in it, the row's
   evidence in order. A trace that starts in the stack dumper was printed by the reporter on
   top of the code it interrupted, so it is blamed below its first interrupt entry
   (frames.interrupted_part). assembly.py makes the report a Splat;
4. demultiplex (demultiplex.py): a report whose own task's dump is not where its walk
   looked (another report cut it short, or two CPUs printed at once and their lines
   interleave) takes the first dump further down whose "CPU: N ... PID: P" names its pid.

A panic printed soon after a report, or one that report is known to cause, is that report's
ending, not a splat of its own.
"""

from __future__ import annotations

from dataclasses import replace

from s2fault.judge.analyzer.assembly import assemble
from s2fault.judge.analyzer.catalogue import PANIC_CONSEQUENCES
from s2fault.judge.analyzer.demultiplex import cut_short, demultiplex
from s2fault.judge.analyzer.evidence import Evidence
from s2fault.judge.analyzer.headers import Header, find_headers
from s2fault.judge.analyzer.splat import Splat
from s2fault.judge.analyzer.walk import walk_report

PANIC_NEARBY = 40  # a panic this close after a report is that report's ending


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
        ev, end, nxt = walk_report(text, headers, index)
        previous = splats[-1] if splats else None
        if head.family.kind == "panic" and previous is not None and _panic_belongs(head, previous):
            # The report's ending, printed after the report had already finished.
            splats[-1] = _extend(previous, end)
        else:
            # A bare "BUG: ..." or "WARNING: ..." line with no dump after it is a message,
            # not a kernel report, unless another report cut it short: then its dump may
            # come after that one (kept until demultiplex() looked).
            bare = head.family.needs_stack and not ev.truncated and not any(
                d.has_stack() for d in ev.dumps)
            if not bare or cut_short(headers, nxt, end):
                floor = previous.end_line if previous is not None else 0
                splats.append(assemble(text, head, ev, end, floor))
                heads.append((head, nxt, bare, ev))
        index = nxt
    return demultiplex(text, headers, splats, heads)


def _extend(splat: Splat, end: int) -> Splat:
    return replace(splat, end_line=max(splat.end_line, end))
