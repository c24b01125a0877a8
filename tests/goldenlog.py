"""The golden console logs' format (tests/golden/README.md): a header naming the splats a
log must yield, a blank line, then the raw console. Read by tests/test_analyzer.py and by
bench/score_goldens.py, so both judge the same expectations."""

from __future__ import annotations

import re
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"
KEYS = {
    "KIND", "SUBTYPE", "TITLE", "FUNCTION", "TASK", "CPU", "PID", "FRAMES", "LINES",
    "KNOCK_ON", "ROLE",
}


def parse_golden(path: Path) -> tuple[list[dict[str, str]], bytes]:
    data = path.read_bytes()
    blank = re.search(rb"\r?\n\r?\n", data)  # a header saved with CRLF works too
    if blank is None:
        raise ValueError(f"{path.name}: no blank line after the header")
    header, console = data[: blank.start()].decode("utf-8"), data[blank.end() :]
    blocks: list[dict[str, str]] = [{}]
    for line in header.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line == "---":
            blocks.append({})
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"{path.name}: header line {line!r} is not KEY: value")
        key, value = key.strip().upper(), value.strip()
        if key == "EXPECT":
            if value != "none":
                raise ValueError(f"{path.name}: EXPECT takes only 'none'")
            return [], console
        if key not in KEYS:
            raise ValueError(f"{path.name}: unknown header key {key}")
        blocks[-1][key] = value
    if not all(blocks):
        raise ValueError(f"{path.name}: empty expectation block")
    return blocks, console
