"""Reports of a matrix run: JSON (the source of truth), JUnit XML and TAP.

Every report is written to a temporary name and renamed, so a reader never
sees half a file.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(rows: list[dict], path: Path, meta: dict | None = None) -> None:
    _atomic_write(path, json.dumps({"meta": meta or {}, "cells": rows}, indent=2) + "\n")


def load_json(path: Path) -> tuple[list[dict], dict]:
    data = json.loads(path.read_text())
    return data["cells"], data.get("meta", {})


def _status(row: dict) -> str:
    return {True: "ok", False: "mismatch", None: "error"}[row["match"]]


def write_junit(rows: list[dict], path: Path) -> None:
    suite = ET.Element("testsuite", name="s2fault", tests=str(len(rows)))
    failures = errors = 0
    for row in rows:
        case = ET.SubElement(
            suite, "testcase", classname=f"s2fault.{row['variant']}", name=row["mode"]
        )
        seconds = (row.get("build", {}) or {}).get("seconds", 0)
        case.set("time", str(seconds))
        status = _status(row)
        message = f"declared: {row['declared']['summary']}; observed: {row['observed']}"
        if status == "mismatch":
            failures += 1
            el = ET.SubElement(case, "failure", message=row["why"] or message)
            el.text = message
        elif status == "error":
            errors += 1
            el = ET.SubElement(case, "error", message=row["why"] or row.get("reason", ""))
            el.text = message
        out = ET.SubElement(case, "system-out")
        out.text = f"{message}\nconsole: {row.get('artifacts', {}).get('console_log')}"
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    _atomic_write(path, ET.tostring(suite, encoding="unicode") + "\n")


def write_tap(rows: list[dict], path: Path) -> None:
    lines = ["TAP version 13", f"1..{len(rows)}"]
    for i, row in enumerate(rows, 1):
        status = _status(row)
        name = f"{row['variant']} {row['mode']}"
        if status == "ok":
            lines.append(f"ok {i} - {name}: {row['observed']}")
        elif status == "error":
            lines.append(f"not ok {i} - {name} # could not judge: {row['why']}")
        else:
            lines.append(f"not ok {i} - {name}")
            lines += ["  ---", f"  declared: {row['declared']['summary']!r}",
                      f"  observed: {row['observed']!r}", f"  why: {row['why']!r}", "  ..."]
    _atomic_write(path, "\n".join(lines) + "\n")
