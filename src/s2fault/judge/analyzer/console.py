"""Serial console text as the analyzer sees it: decoded, one line per record, prefixes split off.

A console log is whatever QEMU wrote to the log file: printk records with optional
"[  123.456789]" timestamps and "[T123]"/"[C1]" caller ids (CONFIG_PRINTK_CALLER), CRLF or
LFCR line ends from the serial line, user-space output glued into the middle, and bytes that
are not UTF-8. Nothing here raises on such input.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import AnyStr

# Lines longer than this are cut before any regex sees them: a console line is a printk record
# (at most 1024 bytes in 6.12), so anything longer is binary noise, and cutting it keeps every
# per-line match linear in a small constant.
MAX_LINE = 2048

# "<4>" syslog level (dmesg -r), "[  123.456789]" timestamp, "[  T123]"/"[    C1]" caller id.
_PREFIX = re.compile(
    r"(?:<\d{1,3}>)?"
    r"(?:\[\s{0,12}\d{1,10}\.\d{1,9}\]\s?)?"
    r"(?:\[\s{0,12}([TC]\d{1,10})\]\s?)?"
)


def _one_lf_per_line_end(text: AnyStr, cr: AnyStr, lf: AnyStr) -> AnyStr:
    # CRs next to an LF belong to that line end ("\r\n", "\n\r", "\r\r\n"); a lone CR also
    # ends a line (console progress output), so a header after it still starts a line. Plain
    # replace() passes stay cheap on 100 MB where a regex substitution does not.
    if cr not in text:
        return text
    while cr + cr in text:
        text = text.replace(cr + cr, cr)
    text = text.replace(cr + lf, lf)
    if cr in text:
        text = text.replace(lf + cr, lf).replace(cr, lf)
    return text


def decode(text: str | bytes) -> str:
    """Return the console as text with "\\n" line ends only."""
    if isinstance(text, str):
        return str(_one_lf_per_line_end(text, "\r", "\n"))
    # Line ends are fixed on the bytes, where the passes are memchr-fast; one replacement
    # character makes the decoded text a wide string on which every pass costs more.
    data = bytes(_one_lf_per_line_end(bytes(text), b"\r", b"\n"))
    return data.decode("utf-8", errors="replace")


def split_prefix(raw: str) -> tuple[str | None, str]:
    """Split a raw console line into (caller id or None, printk body)."""
    m = _PREFIX.match(raw)
    assert m is not None  # every part of the prefix is optional: it matches any line
    return m.group(1), raw[m.end() :]


@dataclass(frozen=True, slots=True)
class Line:
    number: int  # 1-based
    offset: int  # index of the first character in the decoded text
    caller: str | None  # "T41" / "C1" when the kernel printed caller ids
    body: str  # the printk text without timestamp and caller id


def line_at(text: str, offset: int, number: int) -> Line:
    """The line starting at `offset` (which must be a line start)."""
    end = text.find("\n", offset, offset + MAX_LINE)
    raw = text[offset : end if end >= 0 else offset + MAX_LINE]
    caller, body = split_prefix(raw)
    return Line(number, offset, caller, body)


def lines_from(text: str, offset: int, number: int) -> Iterator[Line]:
    """Yield the lines from the line starting at `offset` to the end of the text."""
    size = len(text)
    while offset < size:
        nl = text.find("\n", offset)
        stop = nl if nl >= 0 else size
        caller, body = split_prefix(text[offset : min(stop, offset + MAX_LINE)])
        yield Line(number, offset, caller, body)
        if nl < 0:
            return
        offset = nl + 1
        number += 1


def previous_line_start(text: str, offset: int) -> int | None:
    """Offset of the line before the one starting at `offset`, or None at the top."""
    if offset <= 0:
        return None
    lo = max(0, offset - 1 - MAX_LINE)
    nl = text.rfind("\n", lo, offset - 1)
    if nl < 0:
        # A previous line longer than MAX_LINE is noise, never a banner worth looking at.
        return 0 if lo == 0 else None
    return nl + 1
