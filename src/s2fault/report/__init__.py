"""Reports of a matrix run: JSON (the source of truth), JUnit XML, TAP and KTAP here;
the HTML page in report/page.py, its SVG plots in report/plots.py.

Each says the cell's outcome (pass, fail, skip, error: outcome.py) in its own terms
and names the cell by its stable id (variant.workload.mode), never by a measurement,
so a dashboard sees the same test in every run. The helpers that read a row of
check.json (_status, _workload, test_id, ...) live here and the HTML modules use them.

Every report is written to a temporary name and renamed, so a reader never
sees half a file. `s2fault report RESULTS_DIR` (report_main) writes all of them
from a results directory's check.json, merging per-cell CI results first.
"""

from __future__ import annotations

import json
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from s2fault import __version__
from s2fault.errors import EXIT_ERROR, EXIT_FAIL, EXIT_PASS, EXIT_SKIP, InputError, S2Error
from s2fault.judge.measurements import Measurements
from s2fault.outcome import Outcome, summary_line
from s2fault.outcome import exit_code_of as exit_code_of_outcomes

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
    """pass | fail | skip | error (a row of schema 1 has only "match": True, False, or
    None when not judged). A string, not yet an Outcome: an unknown one is named where
    the exit code is taken (outcome.exit_code_of)."""
    if row.get("outcome"):
        outcome: str = row["outcome"]
        return outcome
    return {True: Outcome.PASS, False: Outcome.FAIL, None: Outcome.ERROR}[row["match"]]


def _measured(row: dict[str, Any]) -> Measurements:
    """What the cell's last run measured (its "workload"); nothing, for a cell not run."""
    return Measurements.from_dict(row.get("workload") or {})


def _workload(row: dict[str, Any]) -> str:
    return row.get("workload_name") or "exec-fault"


def test_id(row: dict[str, Any]) -> str:
    """variant.workload.mode (+ vCPUs/pages when not the defaults): cell.Cell.test_id."""
    from s2fault.matrix.cell import stable_id

    return row.get("test_id") or stable_id(row["variant"], _workload(row), row["mode"])


def _short_id(row: dict[str, Any]) -> str:
    """The test id without its variant: a subtest of the variant's suite."""
    return test_id(row).removeprefix(row["variant"] + ".")


def _reason(row: dict[str, Any]) -> str:
    return " ".join(str(row.get("why") or row.get("reason") or "").split())


def _is_dilated(row: dict[str, Any]) -> bool:
    prof = row.get("profile") or {}
    if prof:
        return prof.get("icount_shift") is not None
    return row.get("mode") == "dilated"


def _measurements(row: dict[str, Any]) -> list[str]:
    """What the cell measured and declared, for diagnostic lines (never in a name)."""
    lines = [f"declared: {row['declared']['summary']}", f"observed: {row['observed']}"]
    ms = _measured(row).exec_fault_ms.max
    if ms is not None:
        lines.append(f"exec_fault_max_ms: {ms}")
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


def _word(status: str) -> str:
    """The verdict table's word for an outcome (Outcome.table_word)."""
    return Outcome(status).table_word


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
        if status == Outcome.FAIL:
            failures += 1
            el = ET.SubElement(case, "failure", message=row["why"] or message)
            el.text = message
        elif status == Outcome.ERROR:
            errors += 1
            el = ET.SubElement(case, "error", message=row["why"] or row.get("reason", ""))
            el.text = message
        elif status == Outcome.SKIP:
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
    if status == Outcome.PASS:
        return f"ok {number} {dash}{name}"
    if status == Outcome.SKIP:
        return f"ok {number} {dash}{name} # SKIP {reason}"
    if status == Outcome.ERROR:
        return f"not ok {number} {dash}{name} # error {reason}"
    return f"not ok {number} {dash}{name}"


def write_tap(rows: list[dict[str, Any]], path: Path) -> None:
    """TAP 13: one test per cell named by its stable id; what it measured in '#' lines."""
    lines = ["TAP version 13", f"1..{len(rows)}"]
    for i, row in enumerate(rows, 1):
        status = _status(row)
        lines += [f"# {test_id(row)}: {m}" for m in _measurements(row)]
        lines.append(_result_line(status, i, test_id(row), _reason(row), "- "))
        if status == Outcome.FAIL:
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
                           for o in Outcome if o in statuses)
        lines.append(f"# {variant}: {counts}")
        if set(statuses) == {Outcome.SKIP}:
            suite_status, why = Outcome.SKIP, "every subtest skipped"
        elif Outcome.FAIL in statuses or Outcome.ERROR in statuses:
            suite_status, why = Outcome.FAIL, ""
        else:
            suite_status, why = Outcome.PASS, ""
        lines.append(_result_line(suite_status, n, variant, why, ""))
    _atomic_write(path, "\n".join(lines) + "\n")


def exit_code_of(rows: list[dict[str, Any]]) -> int:
    """The exit-code contract over report rows (outcome.exit_code_of)."""
    return exit_code_of_outcomes([_status(r) for r in rows])


def _summary(rows: list[dict[str, Any]]) -> tuple[str, str]:
    code = exit_code_of(rows)
    css = {EXIT_PASS: "pass", EXIT_FAIL: "fail", EXIT_ERROR: "error", EXIT_SKIP: "skip"}[code]
    return css, summary_line([_status(r) for r in rows])


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
    # Here, not at the top: report_html imports this module's row helpers.
    from s2fault.report.page import write_html

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
        if _status(row) != Outcome.PASS:
            print(f"{test_id(row)}: {_word(_status(row))}: "
                  f"{row.get('why') or row.get('reason')}")
    print(summary)
    for path in written:
        print(f"  {path}")
    return exit_code_of(rows)
