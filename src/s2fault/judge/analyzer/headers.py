"""Pass 1 of the scan: the lines that start a report.

One regex search for the catalogue's scan keywords over the whole text (done in C); only the
lines holding a keyword are tried against the rows, in the catalogue's order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from s2fault.judge.analyzer import console
from s2fault.judge.analyzer.catalogue import FAMILIES, SCAN_KEYWORDS, Family

_SCAN = re.compile("|".join(re.escape(k) for k in SCAN_KEYWORDS))


@dataclass
class Header:
    """A line that starts a report: the row it matched and its header groups."""

    line: console.Line
    family: Family
    fields: dict[str, str | None]


def _match_header(body: str) -> tuple[Family, dict[str, str | None]] | None:
    for family in FAMILIES:
        if family.needle in body:
            m = family.header.search(body)
            if m is not None:
                return family, m.groupdict()
    return None


def find_headers(text: str) -> list[Header]:
    """Every line of `text` that starts a report, in order."""
    headers: list[Header] = []
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
                headers.append(Header(line, found[0], found[1]))
        end = text.find("\n", hit)
        if end < 0:
            break
        # Restart at the next line: one search per line however many keywords it holds.
        number += 1
        pos = end + 1
    return headers
