"""Console analyzer: find kernel splats in a serial console log, name each one and its culprit.

Every front end (CLI, Avocado, pytest, bisect) judges a console through this module:

    from s2fault.judge.analyzer import analyze_file
    for splat in analyze_file("console.log"):
        print(splat.kind, splat.subtype, splat.function)   # soft_lockup None icache_inval_pou

How it works
------------
Recognition is table-driven, in the manner of syzkaller's pkg/report. `catalogue.FAMILIES` has
one row (`catalogue.Family`) per family of kernel report: the cheap substring and the regex
that recognise its first line, the kind/subtype/title it gets, where its culprit trace starts
(lockdep: after "stack backtrace:"), its end marker, and the order in which evidence names the
culprit ("pc" first for lockups, "header" for KASAN, "caller" for smp_processor_id(), ...).
`scanner.scan` runs the passes in order: `headers` finds header lines with one keyword pass over
the whole log; `walk` walks each report up to the next one, and `evidence` reads what its other
lines say (more dumps, pc/lr, who, held locks); `blame` picks the culprit's dump and names the
culprit; `assembly` makes each report a `Splat`; `demultiplex` gives reports that two tasks
printed at once their own task's dump. `frames` parses call-trace lines and holds the list of
plumbing frames (interrupt entry, lock and debug machinery, allocators, stack dumpers) skipped
when blaming; `console` decodes the log and splits timestamps and caller ids off each line.

A report may hold several stack dumps; the row's `pick` says whose is the culprit's (an RCU
stall blames the stalled CPU's or task's code, never the detector's), and a trace printed by
a reporter from the timer tick is blamed below its first interrupt entry. Lock wrappers
(rtnl_lock, lock_sock_nested, ...) are skipped when blaming but stay on top of `frames`.

Culprit first
-------------
`analyze()` returns splats in order of appearance. `analyze_console()` (or `group(splats)`)
returns an `Analysis`: the same splats grouped into incidents. The lockup-class reports of a
console (soft and hard lockups, RCU stalls, workqueue lockups) are one incident, led by the
report that names the code doing the work; stopper/migration threads, CPUs spinning on a
lock, other CPUs' lockups and RCU stalls of the culprit's CPU are its consequences, each with
a reason. Every other splat is an incident of its own. `Analysis.culprit` is what a verdict
should name first; see incidents.py.

Adding a family
---------------
1. Add a `Family` row to `catalogue.FAMILIES`, before any more general row that would also
   match its header (rows are tried in order). Its header regex must contain one of
   `catalogue.SCAN_KEYWORDS` literally, since only lines holding a keyword are tried; add a
   keyword if none fits.
2. If its traces carry new plumbing on top (a new trap handler, a new lock primitive), add the
   names to the right group in `frames._PLUMBING_GROUPS`.
3. Drop a console log showing it into tests/golden/<name>.log with a header naming what must
   be found (see tests/golden/README.md); the golden test picks it up.

The message formats are those of Linux 6.12 (arm64 and x86_64); see catalogue.py.
"""

from __future__ import annotations

import json
import sys
from typing import TextIO

from s2fault.judge.analyzer import console
from s2fault.judge.analyzer.catalogue import FAMILIES, Family
from s2fault.judge.analyzer.headers import find_headers
from s2fault.judge.analyzer.incidents import Analysis, Consequence, Incident, group
from s2fault.judge.analyzer.scanner import scan
from s2fault.judge.analyzer.splat import Splat, summary_line

__all__ = [
    "FAMILIES",
    "Analysis",
    "Consequence",
    "Family",
    "Incident",
    "Splat",
    "analyze",
    "analyze_console",
    "analyze_file",
    "group",
    "run_cli",
    "summary_line",
]


def analyze(text: str | bytes) -> list[Splat]:
    """The splats in a console log, in order of appearance. Never raises."""
    try:
        decoded = console.decode(text)
    except Exception:  # noqa: BLE001 - a console we cannot even decode has no splats to show
        return []
    try:
        return scan(decoded)
    except Exception:  # noqa: BLE001
        # A bug in a row must not cost the verdict the splats: fall back to bare headers.
        return _headers_only(decoded)


def analyze_console(text: str | bytes) -> Analysis:
    """analyze(), grouped culprit first: see incidents.py. Never raises."""
    return group(analyze(text))


def _headers_only(text: str) -> list[Splat]:
    try:
        headers = find_headers(text)
    except Exception:  # noqa: BLE001
        return []
    return [
        Splat(
            kind=h.family.kind,
            subtype=None,
            title=h.line.body.strip()[:160],
            function=None,
            frames=(),
            cpu=None,
            task=None,
            pid=None,
            start_line=h.line.number,
            end_line=h.line.number,
        )
        for h in headers
    ]


def analyze_file(path: str) -> list[Splat]:
    """analyze() a log file; "-" reads stdin. Raises OSError when the file cannot be read."""
    if path == "-":
        data = sys.stdin.buffer.read()
    else:
        with open(path, "rb") as f:
            data = f.read()
    return analyze(data)


def run_cli(paths: list[str], as_json: bool, out: TextIO | None = None) -> int:
    """`s2fault analyze [--json] LOG [LOG...]`: 1 when a log shows a splat, 0 when every
    log is clean, 2 when one could not be read (the README's exit-code contract).

    Writes to `out`, by default the sys.stdout of the moment of the call.
    """
    out = out if out is not None else sys.stdout
    results: list[tuple[str, Analysis]] = []
    failed = False
    for path in paths:
        try:
            results.append((path, group(analyze_file(path))))
        except OSError as e:
            print(f"s2fault analyze: cannot read {path}: {e.strerror or e}", file=sys.stderr)
            failed = True
    if failed:
        # A verdict from part of the logs would look like a verdict on all of them.
        return 2
    if as_json:
        docs = [{"log": path, **analysis.to_dict()} for path, analysis in results]
        out.write(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2) + "\n")
    else:
        for path, analysis in results:
            out.write(f"{path}:\n")
            if not analysis.splats:
                out.write("  no splats\n")
            # Culprit first: each incident's lead, its knock-on reports indented under it.
            for line in analysis.lines():
                out.write("  " + line + "\n")
    return 1 if any(analysis.splats for _, analysis in results) else 0
