"""Reports of a matrix run: JSON (the source of truth), JUnit XML, TAP, KTAP and HTML.

Each says the cell's outcome (pass, fail, skip, error: matrix.py) in its own terms
and names the cell by its stable id (variant.workload.mode), never by a measurement,
so a dashboard sees the same test in every run.

Every report is written to a temporary name and renamed, so a reader never
sees half a file. `s2fault report RESULTS_DIR` (report_main) writes all of them
from a results directory's check.json, merging per-cell CI results first.
"""

from __future__ import annotations

import html
import json
import math
import os
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from . import __version__
from .errors import EXIT_ERROR, EXIT_FAIL, EXIT_PASS, EXIT_SKIP, InputError, S2Error
from .verdict import incidents

# The JSON's shape. 2: "schema_version", each cell's "test_id", "outcome" and
# "versions" (s2fault, QEMU, CPU model, kernel release).
SCHEMA_VERSION = 2


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(rows: list[dict[str, Any]], path: Path, meta: dict[str, Any] | None = None) -> None:
    meta = {"s2fault_version": __version__} | (meta or {})
    doc = {"schema_version": SCHEMA_VERSION, "meta": meta, "cells": rows}
    _atomic_write(path, json.dumps(doc, indent=2) + "\n")


def load_json(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    data = json.loads(path.read_text())
    return data["cells"], data.get("meta", {})


def _status(row: dict[str, Any]) -> str:
    """pass | fail | skip | error (a row of schema 1 has only "match")."""
    if row.get("outcome"):
        outcome: str = row["outcome"]
        return outcome
    return {True: "pass", False: "fail", None: "error"}[row["match"]]


def _workload(row: dict[str, Any]) -> str:
    return row.get("workload_name") or "exec-fault"


def test_id(row: dict[str, Any]) -> str:
    """variant.workload.mode (+ vCPUs/pages when not the defaults): matrix.Cell.test_id."""
    from .matrix import stable_id

    return row.get("test_id") or stable_id(row["variant"], _workload(row), row["mode"])


def _short_id(row: dict[str, Any]) -> str:
    """The test id without its variant: a subtest of the variant's suite."""
    return test_id(row).removeprefix(row["variant"] + ".")


def _reason(row: dict[str, Any]) -> str:
    return " ".join(str(row.get("why") or row.get("reason") or "").split())


def _measurements(row: dict[str, Any]) -> list[str]:
    """What the cell measured and declared, for diagnostic lines (never in a name)."""
    lines = [f"declared: {row['declared']['summary']}", f"observed: {row['observed']}"]
    ms = (row.get("workload") or {}).get("exec_fault_ms") or {}
    if ms.get("max") is not None:
        lines.append(f"exec_fault_max_ms: {ms['max']}")
    if _is_dilated(row):
        lines.append("model: time dilation (-icount), not a hardware measurement")
    versions = row.get("versions") or {}
    if versions:
        lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()
                                              if v is not None))
    return [" ".join(line.split()) for line in lines]


def _cell_name(row: dict[str, Any], sep: str = " ") -> str:
    """variant, mode, and the workload when it is not the plain exec-fault run."""
    wl = _workload(row)
    return sep.join([row["variant"], *([wl] if wl != "exec-fault" else []), row["mode"]])


def write_junit(rows: list[dict[str, Any]], path: Path) -> None:
    suite = ET.Element("testsuite", name="s2fault", tests=str(len(rows)))
    failures = errors = skipped = 0
    for row in rows:
        case = ET.SubElement(suite, "testcase", classname=f"s2fault.{row['variant']}",
                             name=_short_id(row))
        # The cell's own cost: its build (0 when cached) and its boots.
        seconds = ((row.get("build", {}) or {}).get("seconds") or 0) + (
            row.get("run_seconds") or 0)
        case.set("time", f"{seconds:.2f}")
        status = _status(row)
        message = f"declared: {row['declared']['summary']}; observed: {row['observed']}"
        if status == "fail":
            failures += 1
            el = ET.SubElement(case, "failure", message=row["why"] or message)
            el.text = message
        elif status == "error":
            errors += 1
            el = ET.SubElement(case, "error", message=row["why"] or row.get("reason", ""))
            el.text = message
        elif status == "skip":
            skipped += 1
            ET.SubElement(case, "skipped", message=_reason(row))
        out = ET.SubElement(case, "system-out")
        out.text = "\n".join([*_measurements(row),
                              f"console: {row.get('artifacts', {}).get('console_log')}"])
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    _atomic_write(path, ET.tostring(suite, encoding="unicode") + "\n")


def _result_line(status: str, number: int, name: str, reason: str, dash: str) -> str:
    """TAP/KTAP: a skip is "ok ... # SKIP reason"; an error is "not ok ... # error"
    (kselftest's ksft_test_result_error), a fail a plain "not ok"."""
    reason = reason.replace("#", "no.")  # a '#' would start another directive
    if status == "pass":
        return f"ok {number} {dash}{name}"
    if status == "skip":
        return f"ok {number} {dash}{name} # SKIP {reason}"
    if status == "error":
        return f"not ok {number} {dash}{name} # error {reason}"
    return f"not ok {number} {dash}{name}"


def write_tap(rows: list[dict[str, Any]], path: Path) -> None:
    """TAP 13: one test per cell named by its stable id; what it measured in '#' lines."""
    lines = ["TAP version 13", f"1..{len(rows)}"]
    for i, row in enumerate(rows, 1):
        status = _status(row)
        lines += [f"# {test_id(row)}: {m}" for m in _measurements(row)]
        lines.append(_result_line(status, i, test_id(row), _reason(row), "- "))
        if status == "fail":
            lines += ["  ---", f"  declared: {row['declared']['summary']!r}",
                      f"  observed: {row['observed']!r}", f"  why: {row['why']!r}", "  ..."]
    _atomic_write(path, "\n".join(lines) + "\n")


def write_ktap(rows: list[dict[str, Any]], path: Path) -> None:
    """KTAP version 1 (Documentation/dev-tools/ktap.rst): a suite per variant, a subtest
    per workload and mode, named workload.mode; measurements as '#' diagnostic lines
    before each result; a suite is ok when none of its subtests failed or erred, and
    skipped when all of them were."""
    suites: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        suites.setdefault(row["variant"], []).append(row)
    lines = ["KTAP version 1", f"1..{len(suites)}"]
    for n, (variant, cells) in enumerate(suites.items(), 1):
        lines += ["    KTAP version 1", f"    # Subtest: {variant}", f"    1..{len(cells)}"]
        for i, row in enumerate(cells, 1):
            lines += [f"    # {_short_id(row)}: {m}" for m in _measurements(row)]
            lines.append("    " + _result_line(_status(row), i, _short_id(row), _reason(row),
                                               ""))
        statuses = [_status(r) for r in cells]
        counts = ", ".join(f"{statuses.count(o)} {o}"
                           for o in ("pass", "fail", "skip", "error") if o in statuses)
        lines.append(f"# {variant}: {counts}")
        if set(statuses) == {"skip"}:
            suite_status, why = "skip", "every subtest skipped"
        elif "fail" in statuses or "error" in statuses:
            suite_status, why = "fail", ""
        else:
            suite_status, why = "pass", ""
        lines.append(_result_line(suite_status, n, variant, why, ""))
    _atomic_write(path, "\n".join(lines) + "\n")


# --- The HTML report -------------------------------------------------------------
#
# One self-contained file (inline CSS and SVG, no script, no network) so it opens
# from a CI artifact or a mail attachment. The latency plot is an SVG written here:
# a log-scale bar per cell needs a few dozen lines, where matplotlib would add a
# heavy dependency (and a raster or an SVG full of font paths) for the same picture.

_RESULT = {"pass": "pass", "fail": "FAIL", "skip": "SKIP", "error": "ERROR"}
_COLOUR = {"pass": "#2e7d32", "fail": "#c62828", "skip": "#b58900", "error": "#757575"}
_MODE_ORDER = ("functional", "dilated", "altra-max")
_PANEL_TITLE = {
    "functional": "functional: TCG at full speed, exec-fault latency from the guest's "
                  "virtual counter",
    "dilated": "dilated: a MODEL, not hardware (time dilation, -icount: a slow CPU); "
               "guest time",
    "altra-max": "altra-max: a MODEL of Ampere Altra Max, not hardware (-icount calibrated "
                 "on one 512M invalidation, 64 vCPUs on 64 nested CPUs); guest time",
}
_MODEL_NOTE = ("Dilated cells run QEMU with -icount time dilation: every guest instruction "
               "costs a fixed slice of guest time, which models a slow CPU. Their latencies "
               "are guest time under that model, not measurements of real hardware.")

_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1250px; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 1.5em; }
table { border-collapse: collapse; width: 100%; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 6px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.result { font-weight: bold; white-space: nowrap; }
tr.pass td.result { color: #2e7d32; }
tr.fail td.result { color: #c62828; }
tr.skip td.result { color: #8a6d00; }
tr.error td.result { color: #616161; }
.summary { font-size: 1.1em; font-weight: bold; }
.summary.pass { color: #2e7d32; } .summary.fail { color: #c62828; }
.summary.skip { color: #8a6d00; } .summary.error { color: #616161; }
.model { background: #fff3cd; border: 1px solid #e0c36b; padding: 0.5em; }
.badge { font-size: 0.8em; background: #fff3cd; border: 1px solid #e0c36b; padding: 0 3px; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; }
dl.meta dt { font-weight: bold; } dl.meta dd { margin: 0; }
code { font-size: 0.95em; }
"""


def _esc(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _locate(path: str | None, results_dir: Path) -> Path | None:
    """Where an artifact is now. Results copied off a CI runner keep their layout
    below the results directory but not their absolute paths, so when the recorded
    path is gone, try its tails below `results_dir`."""
    if not path:
        return None
    p = Path(path)
    if p.is_file():
        return p.resolve()
    parts = p.parts[1:] if p.is_absolute() else p.parts
    # Tails of two parts or more: a bare file name would match any run's file.
    for i in range(len(parts) - 1):
        candidate = results_dir.joinpath(*parts[i:])
        if candidate.is_file():
            return candidate.resolve()
    return None


def _href(target: Path, html_dir: Path) -> str:
    """Relative when the artifact lives beside the report, so a moved or downloaded
    results tree keeps its links; a file: URI otherwise."""
    try:
        rel = target.relative_to(html_dir.resolve())
    except ValueError:
        return target.as_uri()
    return quote(rel.as_posix())


def _log_links(row: dict[str, Any], html_dir: Path) -> str:
    arts = row.get("artifacts") or {}
    run_dir = arts.get("dir")
    wanted = [
        ("console", arts.get("console_log")),
        ("qmp", arts.get("qmp_log")),
        ("result.json", str(Path(run_dir) / "result.json") if run_dir else None),
        ("kernel .config", arts.get("config") or (row.get("build") or {}).get("config")),
    ]
    links = []
    for label, path in wanted:
        where = _locate(path, html_dir)
        if where is not None:
            links.append(f'<a href="{_esc(_href(where, html_dir))}">{_esc(label)}</a>')
        elif path:
            links.append(f'<span title="{_esc(path)}">{_esc(label)} (missing)</span>')
    return " | ".join(links) or "&mdash;"


def _latency(row: dict[str, Any]) -> tuple[float | None, list[float]]:
    ms = (row.get("workload") or {}).get("exec_fault_ms") or {}
    rounds = [float(x) for x in ms.get("per_round_max") or [] if x is not None]
    value = ms.get("max")
    return (float(value) if value is not None else None), rounds


def _fmt_ms(ms: float) -> str:
    if ms >= 1000:
        return f"{ms / 1000:.3g} s"
    return f"{ms:.3g} ms"


def _ratio(row: dict[str, Any], same_mode: list[dict[str, Any]]) -> str:
    """How a latency expectation reads in the plot: the ratio to its reference."""
    ref = (row.get("declared") or {}).get("latency_reference")
    if not (row.get("declared") or {}).get("latency_ratio_min") or not ref:
        return ""
    value = _latency(row)[0]
    ref_ms = next((_latency(r)[0] for r in same_mode
                   if r["variant"] == ref and _workload(r) == _workload(row)), None)
    if not value or not ref_ms:
        return ""
    return f" ({value / ref_ms:.1f}x {ref})"


def _is_dilated(row: dict[str, Any]) -> bool:
    prof = row.get("profile") or {}
    if prof:
        return prof.get("icount_shift") is not None
    return row.get("mode") == "dilated"


def _panels(rows: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    modes = sorted({r["mode"] for r in rows},
                   key=lambda m: (_MODE_ORDER.index(m) if m in _MODE_ORDER else 99, m))
    return [(m, [r for r in rows if r["mode"] == m]) for m in modes]


def latency_svg(rows: list[dict[str, Any]]) -> str:
    """The exec-fault latency of every cell that measured one: a bar per cell (the
    median over rounds of the per-round max, as judged), a dot per round, one
    log-scale panel per mode (functional and dilated latencies are decades apart)."""
    measured = [r for r in rows if _latency(r)[0] is not None]
    width, left, right = 1000, 230, 170
    bar_h, gap, head, axis_h = 18, 8, 40, 34
    plot_w = width - left - right
    parts: list[str] = []
    y = 8
    for mode, cells in _panels(measured):
        values = [v for r in cells for v in [_latency(r)[0], *_latency(r)[1]] if v]
        lo = math.floor(math.log10(max(min(values), 1e-3)))
        hi = math.ceil(math.log10(max(max(values), 1e-3)))
        hi = hi if hi > lo else lo + 1

        def x_of(ms: float, lo: int = lo, hi: int = hi) -> float:
            return left + (math.log10(max(ms, 10.0 ** lo)) - lo) / (hi - lo) * plot_w

        dilated = any(_is_dilated(r) for r in cells)
        title = _PANEL_TITLE.get(mode, mode)
        panel_h = head + len(cells) * (bar_h + gap) + axis_h
        parts.append(f'<g class="panel" data-mode="{_esc(mode)}">')
        parts.append(f'<text x="{left}" y="{y + 16}" class="panel-title">{_esc(title)}</text>')
        if dilated:
            parts.append(f'<text x="{left}" y="{y + 32}" class="model-note">'
                         "model (time dilation): guest time under -icount, not a hardware "
                         "measurement</text>")
        top = y + head
        bottom = top + len(cells) * (bar_h + gap)
        for k in range(lo, hi + 1):
            gx = x_of(10.0 ** k)
            parts.append(f'<line x1="{gx:.1f}" y1="{top - 4}" x2="{gx:.1f}" y2="{bottom}" '
                         'class="grid"/>')
            parts.append(f'<text x="{gx:.1f}" y="{bottom + 14}" class="tick">'
                         f"{_esc(_fmt_ms(10.0 ** k))}</text>")
        parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{bottom + 30}" class="axis">'
                     "exec-fault latency, log scale"
                     + (" (guest time, model)" if dilated else "") + "</text>")
        for i, row in enumerate(cells):
            value, rounds = _latency(row)
            value = value or 0.0  # `cells` holds measured rows only
            status = _status(row)
            by = top + i * (bar_h + gap)
            x0, x1 = left, x_of(value)
            label = _cell_name(row).rsplit(" ", 1)[0]  # the panel names the mode
            parts.append(f'<text x="{left - 8}" y="{by + bar_h - 4}" class="label">'
                         f"{_esc(label)}</text>")
            tip = (f"{_cell_name(row, '/')}: {_fmt_ms(value)} (median over rounds of "
                   f"the per-round max); rounds: {', '.join(_fmt_ms(v) for v in rounds)}; "
                   f"result: {_RESULT[status]}" + ("; model (time dilation)" if dilated else ""))
            fill = f' fill="{_COLOUR[status]}"'
            parts.append(
                f'<rect class="bar" x="{x0}" y="{by}" width="{max(x1 - x0, 1):.1f}" '
                f'height="{bar_h}"{fill} data-variant="{_esc(row["variant"])}" '
                f'data-mode="{_esc(row["mode"])}" data-ms="{value:g}" '
                f'data-workload="{_esc(_workload(row))}">'
                f"<title>{_esc(tip)}</title></rect>"
            )
            if _is_dilated(row):
                parts.append(f'<rect x="{x0}" y="{by}" width="{max(x1 - x0, 1):.1f}" '
                             f'height="{bar_h}" fill="url(#model-hatch)"/>')
            for v in rounds:
                parts.append(f'<circle class="round" cx="{x_of(v):.1f}" '
                             f'cy="{by + bar_h / 2}" r="3"><title>{_esc(_fmt_ms(v))}</title>'
                             "</circle>")
            # Past the bar and its dots, so neither hides the number.
            tx = max([x1, *(x_of(v) for v in rounds)]) + 6
            parts.append(f'<text x="{tx:.1f}" y="{by + bar_h - 4}" class="value">'
                         f"{_esc(_fmt_ms(value) + _ratio(row, cells))}</text>")
        parts.append("</g>")
        y += panel_h + 16
    height = max(y, 60)
    if not measured:
        parts.append('<text x="10" y="30" class="panel-title">no cell measured an exec-fault '
                     "latency</text>")
    style = (
        "<style>.panel-title{font:bold 13px sans-serif}.model-note{font:12px sans-serif;"
        "fill:#8a6d00}.label{font:12px sans-serif;text-anchor:end}.value,.tick{font:11px "
        "sans-serif}.tick{text-anchor:middle;fill:#555}.axis{font:12px sans-serif;"
        "text-anchor:middle;fill:#333}.grid{stroke:#ddd}.round{fill:#111;fill-opacity:.75}"
        "</style>"
    )
    defs = ('<defs><pattern id="model-hatch" width="6" height="6" '
            'patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
            '<line x1="0" y1="0" x2="0" y2="6" stroke="#fff" stroke-width="2" '
            'stroke-opacity=".6"/></pattern></defs>')
    return (
        f'<svg id="latency-plot" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="exec-fault latency per variant and mode">'
        f"{style}{defs}{''.join(parts)}</svg>"
    )


def _blocks(row: dict[str, Any]) -> list[float]:
    return [float(x) for x in ((row.get("workload") or {}).get("blocks") or {}).get(
        "cumulative_ms") or [] if x is not None]


_LINE_COLOURS = ("#1565c0", "#c62828", "#6a1b9a", "#ef6c00", "#2e7d32", "#00838f", "#5d4037")


def blocks_svg(rows: list[dict[str, Any]]) -> str:
    """many-blocks: total exec-fault cost against the number of blocks made executable,
    a line per variant, log-scale cost (the variants' slopes are decades apart)."""
    series = [(r, _blocks(r)) for r in rows if len(_blocks(r)) >= 2]
    width, height, left, right, top, bottom = 760, 330, 70, 230, 20, 50
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for _, ys in series for v in ys if v > 0] or [1.0]
    lo = math.floor(math.log10(min(values)))
    hi = math.ceil(math.log10(max(values)))
    hi = hi if hi > lo else lo + 1
    m_max = max([len(ys) for _, ys in series] or [2])

    def x_of(m: int) -> float:
        return left + (m - 1) / max(m_max - 1, 1) * plot_w

    def y_of(ms: float) -> float:
        return top + plot_h - (math.log10(max(ms, 10.0 ** lo)) - lo) / (hi - lo) * plot_h

    parts = _log_grid(lo, hi, left, plot_w, y_of)
    for m in range(1, m_max + 1):
        parts.append(f'<text x="{x_of(m):.1f}" y="{top + plot_h + 16}" class="tick">{m}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{height - 8}" class="axis">'
                 "huge blocks made executable (exec-faulted in turn)</text>")
    for i, (row, ys) in enumerate(series):
        colour = _LINE_COLOURS[i % len(_LINE_COLOURS)]
        points = " ".join(f"{x_of(m):.1f},{y_of(v):.1f}" for m, v in enumerate(ys, 1))
        slope = ((row.get("workload") or {}).get("blocks") or {}).get("slope_ms")
        name = f"{row['variant']} ({row['mode']})"
        tip = (f"{name}: total {', '.join(_fmt_ms(v) for v in ys)}; "
               + (f"slope {_fmt_ms(slope)} per block; " if slope is not None else "")
               + f"result: {_RESULT[_status(row)]}")
        parts.append(f'<polyline class="series" points="{points}" fill="none" '
                     f'stroke="{colour}" stroke-width="2" data-variant="{_esc(row["variant"])}"'
                     f' data-slope-ms="{slope if slope is not None else ""}">'
                     f"<title>{_esc(tip)}</title></polyline>")
        for m, v in enumerate(ys, 1):
            parts.append(f'<circle cx="{x_of(m):.1f}" cy="{y_of(v):.1f}" r="3" '
                         f'fill="{colour}"><title>{_esc(f"{name}, {m} blocks: {_fmt_ms(v)}")}'
                         "</title></circle>")
        ly = top + 14 + i * 18
        parts.append(f'<line x1="{left + plot_w + 14}" y1="{ly - 4}" x2="{left + plot_w + 34}" '
                     f'y2="{ly - 4}" stroke="{colour}" stroke-width="2"/>')
        per = f", {_fmt_ms(slope)}/block" if slope is not None else ""
        parts.append(f'<text x="{left + plot_w + 40}" y="{ly}" class="legend">'
                     f"{_esc(row['variant'] + per)}</text>")
    style = ("<style>.tick{font:11px sans-serif;text-anchor:middle;fill:#555}"
             ".ytick{font:11px sans-serif;text-anchor:end;fill:#555}.axis{font:12px sans-serif;"
             "text-anchor:middle}.legend{font:12px sans-serif}.grid{stroke:#ddd}</style>")
    return (f'<svg id="blocks-plot" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
            'aria-label="total exec-fault cost against the number of huge blocks">'
            f"{style}{''.join(parts)}</svg>")


def _blocks_section(rows: list[dict[str, Any]]) -> str:
    if not any(len(_blocks(r)) >= 2 for r in rows):
        return ""
    return ("<h2>Cost against memory made executable (many-blocks)</h2>\n"
            "<p>Total exec-fault cost (the slowest vCPU per block, median over measured "
            "rounds, summed) after 1..M huge blocks were made executable, log scale. The "
            "slope is the cost of one more block: constant for a fix that invalidates the "
            "whole I-cache at once, proportional to the block size for line-by-line "
            "invalidation.</p>\n" + blocks_svg(rows))


def exit_code_of(rows: list[dict[str, Any]]) -> int:
    """The exit-code contract over report rows (matrix.exit_code_of)."""
    from .matrix import exit_code_of as of_outcomes

    return of_outcomes([_status(r) for r in rows])


def _summary(rows: list[dict[str, Any]]) -> tuple[str, str]:
    from .matrix import summary_line

    code = exit_code_of(rows)
    css = {EXIT_PASS: "pass", EXIT_FAIL: "fail", EXIT_ERROR: "error", EXIT_SKIP: "skip"}[code]
    return css, summary_line([_status(r) for r in rows])


def render_html(rows: list[dict[str, Any]], meta: dict[str, Any] | None, html_dir: Path) -> str:
    meta = meta or {}
    css, summary = _summary(rows)
    show_wl = any(_workload(r) != "exec-fault" for r in rows)
    table = []
    for row in rows:
        status = _status(row)
        result = _RESULT[status] + (" (flaky)" if row.get("flaky") else "")
        mode = _esc(row["mode"])
        if _is_dilated(row):
            mode += ' <span class="badge" title="time dilation: a model, not hardware">model</span>'
        reason = row.get("why") or row.get("reason") or ""
        runs = row.get("runs", 1)
        table.append(
            f'<tr class="{status}"><td>{_esc(row["variant"])}</td>'
            + (f"<td>{_esc(_workload(row))}</td>" if show_wl else "") + f"<td>{mode}</td>"
            f'<td>{_esc(row["declared"]["summary"])}</td><td>{_esc(row["observed"])}'
            + (f" <small>({runs} runs)</small>" if runs and runs > 1 else "")
            + f'</td><td class="result">{_esc(result)}</td><td>{_esc(reason)}'
            + _incidents_html(row.get("splats") or []) + "</td>"
            f"<td>{_log_links(row, html_dir)}</td></tr>"
        )
    meta_html = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(_meta_value(v))}</dd>"
                        for k, v in meta.items()
                        if v not in (None, "", [], {}) and k != "calibration")
    missing = [_cell_name(r, "/") for r in rows if _latency(r)[0] is None]
    no_latency = (f"<p>No latency measured: {_esc(', '.join(missing))}.</p>" if missing else "")
    model = (f'<p class="model">{_esc(_MODEL_NOTE)}</p>'
             if any(_is_dilated(r) for r in rows) else "")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>s2fault: {_esc(summary)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>s2fault: KVM arm64 stage-2 exec-fault matrix</h1>
<p class="summary {css}">{_esc(summary)}</p>
<dl class="meta">{meta_html}</dl>
<h2>Verdicts</h2>
<table id="verdicts">
<thead><tr><th>variant</th>{"<th>workload</th>" if show_wl else ""}<th>mode</th>
<th>declared</th><th>observed</th><th>result</th><th>reason</th><th>logs</th></tr></thead>
<tbody>
{chr(10).join(table)}
</tbody>
</table>
<h2>Exec-fault latency</h2>
<p>Bar: the latency the verdict used (the median over measured rounds of the slowest
vCPU's exec fault). Dots: the slowest vCPU of each round. Colour: the cell's result
(green pass, red fail, amber skip, grey error); hatched: time dilation (a model).</p>
{model}
{latency_svg(rows)}
{no_latency}
{_blocks_section(rows)}
{calibration_section(meta["calibration"]) if meta.get("calibration") else ""}
</body>
</html>
"""


def _meta_value(value: object) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _log_grid(lo: int, hi: int, left: float, plot_w: float,
              y_of: Callable[[float], float]) -> list[str]:
    """A log-scale plot's horizontal grid: a line and a label at each power of ten."""
    parts = []
    for e in range(lo, hi + 1):
        gy = y_of(10.0 ** e)
        parts.append(f'<line x1="{left}" y1="{gy:.1f}" x2="{left + plot_w}" y2="{gy:.1f}" '
                     'class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{gy + 4:.1f}" class="ytick">'
                     f"{_esc(_fmt_ms(10.0 ** e))}</text>")
    return parts


def _incidents_html(splats: list[dict[str, Any]]) -> str:
    """The console's reports culprit first: each incident's lead, and under it the
    knock-on reports with why each was grouped there (verdict.culprit_first)."""
    grouped = incidents(splats)
    if not grouped:
        return ""
    items = []
    for lead, consequences in grouped:
        knock = "".join(
            f"<li>consequence ({_esc(c['why'])}): {_esc(c['title'])}"
            + (f" [{_esc(c['task'])}]" if c.get("task") else "") + "</li>"
            for c in consequences)
        items.append(f"<li><b>{_esc(lead['title'])}</b>"
                     + (f" [{_esc(lead['task'])}]" if lead.get("task") else "")
                     + (f"<ul>{knock}</ul>" if knock else "") + "</li>")
    return ('<details class="incidents"><summary>reports, culprit first</summary>'
            f'<ul>{"".join(items)}</ul></details>')


def write_html(rows: list[dict[str, Any]], path: Path, meta: dict[str, Any] | None = None) -> None:
    path = Path(path)
    _atomic_write(path, render_html(rows, meta, path.parent.resolve()))


# --- A results directory ---------------------------------------------------------


def collect(results_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any], bool]:
    """(rows, meta, merged) of a results directory.

    Its own check.json when there is one; otherwise the check.json of each
    sub-directory (CI runs one cell per job and downloads each job's results below
    one directory), merged. A job for a variant with a latency expectation also ran
    its reference variant: that reference row is kept only when no job ran the
    reference for its own sake."""
    own = results_dir / "check.json"
    if own.is_file():
        rows, meta = load_json(own)
        return rows, meta, False
    parts = sorted(results_dir.glob("*/check.json"))
    if not parts:
        raise InputError(
            f"no check.json in {results_dir} nor in its sub-directories "
            f"(run `s2fault check --results {results_dir}` first)"
        )
    chosen: dict[tuple[str, ...], tuple[bool, dict[str, Any]]] = {}
    meta = {"merged_from": []}
    for part in parts:
        rows, part_meta = load_json(part)
        meta["merged_from"].append(part.parent.name)
        for key in ("variants", "modes", "workloads"):
            for value in part_meta.get(key) or []:
                meta.setdefault(key, [])
                if value not in meta[key]:
                    meta[key].append(value)
        for key in ("vcpus", "pages", "repeat", "source", "source_identity"):
            if part_meta.get(key) is not None:
                meta.setdefault(key, set()).add(str(part_meta[key]))
        asked = part_meta.get("variants")
        for row in rows:
            cell = (row["variant"], _workload(row), row["mode"], str(part_meta.get("vcpus")),
                    str(part_meta.get("pages")))
            is_own = not asked or row["variant"] in asked
            if cell not in chosen or (is_own and not chosen[cell][0]):
                chosen[cell] = (is_own, row)
    for key in ("vcpus", "pages", "repeat", "source", "source_identity"):
        if isinstance(meta.get(key), set):
            meta[key] = sorted(meta[key])
    return [row for _, row in chosen.values()], meta, True


def write_all(results_dir: Path | str) -> list[Path]:
    """Every report of a results directory: check.json (kept as it is, or merged
    from sub-directories), junit.xml, check.tap and report.html."""
    results_dir = Path(results_dir)
    rows, meta, merged = collect(results_dir)
    written = []
    if merged:
        write_json(rows, results_dir / "check.json", meta)
        written.append(results_dir / "check.json")
    write_junit(rows, results_dir / "junit.xml")
    write_tap(rows, results_dir / "check.tap")
    write_ktap(rows, results_dir / "check.ktap")
    calibration = results_dir / "calibration.json"
    if calibration.is_file():  # `s2fault calibrate --results` here too: its scaling plot
        meta = meta | {"calibration": json.loads(calibration.read_text())}
    write_html(rows, results_dir / "report.html", meta)
    written += [results_dir / "junit.xml", results_dir / "check.tap",
                results_dir / "check.ktap", results_dir / "report.html"]
    return written


def report_main(results_dir: str) -> int:
    """`s2fault report RESULTS_DIR`: write every report; exit by the cells' results."""
    root = Path(results_dir)
    try:
        written = write_all(root)
        rows, _, _ = collect(root)
    except (S2Error, OSError, ValueError, KeyError) as e:
        message = e.message if isinstance(e, S2Error) else f"cannot read {root}: {e}"
        print(f"s2fault: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    _, summary = _summary(rows)
    for row in rows:
        if _status(row) != "pass":
            print(f"{test_id(row)}: {_RESULT[_status(row)]}: "
                  f"{row.get('why') or row.get('reason')}")
    print(summary)
    for path in written:
        print(f"  {path}")
    return exit_code_of(rows)


# --- The calibration of a hardware model (s2fault calibrate) ----------------------


def scaling_svg(details: dict[str, Any]) -> str:
    """Worst exec fault (hardware-equivalent, log scale) against the vCPUs faulting
    together, a line per variant; the serialized line N x one invalidation, the
    soft-lockup threshold and the seed report's figure marked."""
    rows = [r for r in details.get("scaling") or [] if r.get("hw_equivalent_ms")]
    hw = details.get("hardware") or {}
    k = details.get("scale") or 1.0
    width, height, left, right, top, bottom = 820, 380, 80, 250, 30, 56
    plot_w, plot_h = width - left - right, height - top - bottom
    n_max: int = max([r["vcpus"] for r in rows] + [int((details.get("model") or {}).get("vcpus")
                                                   or 64)])
    lockup_ms = 1000.0 * 2 * ((details.get("thresholds_hw_s") or {}).get("watchdog_thresh")
                              or 10)
    values = [r["hw_equivalent_ms"] for r in rows] + [hw.get("worst_fault_ms") or 1.0,
                                                      lockup_ms]
    lo = math.floor(math.log10(max(min(values), 1e-3)))
    hi = math.ceil(math.log10(max(values) * 1.2))

    def x_of(n: float) -> float:
        return left + n / n_max * plot_w

    def y_of(ms: float) -> float:
        return top + plot_h - (math.log10(max(ms, 10.0 ** lo)) - lo) / (hi - lo) * plot_h

    parts = _log_grid(lo, hi, left, plot_w, y_of)
    for n in sorted({0, *(r["vcpus"] for r in rows)}):
        parts.append(f'<text x="{x_of(n):.1f}" y="{top + plot_h + 16}" class="tick">{n}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{height - 22}" class="axis">'
                 "vCPUs taking the exec fault together</text>")
    parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{height - 6}" class="note">'
                 f"MODEL: guest time x k = {k:.3f} (hardware-equivalent), not a hardware "
                 "measurement</text>")
    single = (details.get("model") or {}).get("inval_512m_ms")
    if single:
        ly0, ly1 = y_of(single), y_of(single * n_max)
        parts.append(f'<line x1="{x_of(1):.1f}" y1="{ly0:.1f}" x2="{x_of(n_max):.1f}" '
                     f'y2="{ly1:.1f}" class="serial"><title>N x one invalidation '
                     f"({_esc(_fmt_ms(single))}): a fully serialized interconnect</title></line>")
    gy = y_of(lockup_ms)
    parts.append(f'<line x1="{left}" y1="{gy:.1f}" x2="{left + plot_w}" y2="{gy:.1f}" '
                 'class="lockup"/>')
    parts.append(f'<text x="{left + 4}" y="{gy - 4:.1f}" class="note">soft lockup reported '
                 f"after {lockup_ms / 1000:g} s (2 x watchdog_thresh)</text>")
    for i, variant in enumerate(dict.fromkeys(r["variant"] for r in rows)):
        colour = _LINE_COLOURS[i % len(_LINE_COLOURS)]
        pts = [(r["vcpus"], r["hw_equivalent_ms"]) for r in rows if r["variant"] == variant]
        line = " ".join(f"{x_of(n):.1f},{y_of(v):.1f}" for n, v in pts)
        parts.append(f'<polyline class="series" points="{line}" fill="none" stroke="{colour}" '
                     f'stroke-width="2" data-variant="{_esc(variant)}"/>')
        for n, v in pts:
            parts.append(f'<circle cx="{x_of(n):.1f}" cy="{y_of(v):.1f}" r="3.5" '
                         f'fill="{colour}"><title>{_esc(f"{variant}, {n} vCPUs: {_fmt_ms(v)}")}'
                         "</title></circle>")
        ly = top + 14 + i * 18
        parts.append(f'<line x1="{left + plot_w + 14}" y1="{ly - 4}" x2="{left + plot_w + 34}" '
                     f'y2="{ly - 4}" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{left + plot_w + 40}" y="{ly}" class="legend">'
                     f"{_esc(variant)}</text>")
    seed = hw.get("worst_fault_ms")
    if seed:
        sx, sy = x_of(int((details.get("model") or {}).get("vcpus") or n_max)), y_of(seed)
        parts.append(f'<path d="M{sx - 7:.1f},{sy:.1f} L{sx:.1f},{sy - 7:.1f} '
                     f'L{sx + 7:.1f},{sy:.1f} L{sx:.1f},{sy + 7:.1f} Z" class="seed">'
                     f"<title>the seed report: {_esc(_fmt_ms(seed))} on Altra Max</title></path>")
        parts.append(f'<text x="{sx + 10:.1f}" y="{sy + 4:.1f}" class="legend">seed report: '
                     f"{_esc(_fmt_ms(seed))}</text>")
    ly = top + 14 + 3 * 18
    parts.append(f'<line x1="{left + plot_w + 14}" y1="{ly - 4}" x2="{left + plot_w + 34}" '
                 f'y2="{ly - 4}" class="serial"/>')
    parts.append(f'<text x="{left + plot_w + 40}" y="{ly}" class="legend">N x one '
                 "(serialized)</text>")
    style = ("<style>.tick{font:11px sans-serif;text-anchor:middle;fill:#555}"
             ".ytick{font:11px sans-serif;text-anchor:end;fill:#555}.axis{font:12px sans-serif;"
             "text-anchor:middle}.note{font:11px sans-serif;fill:#8a6d00;text-anchor:start}"
             ".legend{font:12px sans-serif}.grid{stroke:#ddd}"
             ".serial{stroke:#777;stroke-dasharray:5 4;stroke-width:1.5}"
             ".lockup{stroke:#c62828;stroke-dasharray:2 3}.seed{fill:#000}</style>")
    return (f'<svg id="scaling-plot" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
            'aria-label="worst exec fault against vCPUs faulting together">'
            f"{style}{''.join(parts)}</svg>")


def calibration_section(details: dict[str, Any]) -> str:
    summary = details.get("model") or {}
    hw = details.get("hardware") or {}
    return (
        "<h2>Scaling: the model against the seed report</h2>\n"
        f"<p class=\"model\">A MODEL, not hardware: -icount guest time times k = "
        f"{_esc(details.get('scale'))}, fitted on one figure (one 512M invalidation, "
        f"{_esc(hw.get('inval_512m_ms'))} ms on the hardware). Predicted worst exec fault at "
        f"{_esc(summary.get('vcpus'))} vCPUs: {_esc(summary.get('worst_fault_ms'))} ms "
        f"hardware-equivalent; reported: {_esc(hw.get('worst_fault_ms'))} ms.</p>\n"
        + scaling_svg(details))


def write_calibration_html(details: dict[str, Any], path: Path) -> None:
    body = calibration_section(details)
    _atomic_write(Path(path), f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>s2fault calibration: {_esc(details.get('mode'))}</title>
<style>{_CSS}</style></head>
<body>
<h1>s2fault calibration: {_esc(details.get('mode'))}</h1>
{body}
</body>
</html>
""")
