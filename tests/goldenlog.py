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


# --- update mode (`pytest tests/test_analyzer.py --update-goldens`) ---------------------
# Like syzkaller's -update: when the analyzer's answer changed on purpose, rewrite the
# headers to say what it says now, then read the diff before committing it. Comments and
# the choice of keys stay; a splat the header did not have gets KIND, FUNCTION and TASK.

NEW_BLOCK_KEYS = ("KIND", "FUNCTION", "TASK")


def _split(path: Path) -> tuple[list[str], bytes, bytes]:
    data = path.read_bytes()
    blank = re.search(rb"\r?\n\r?\n", data)
    if blank is None:
        raise ValueError(f"{path.name}: no blank line after the header")
    return (data[: blank.start()].decode("utf-8").splitlines(), data[blank.start(): blank.end()],
            data[blank.end():])


def updated_header(lines: list[str], actual: list[dict[str, str]]) -> list[str]:
    """`lines` (a golden header) with each block's values replaced by `actual`'s, blocks
    added or dropped to match its length; `actual` holds every key's value per splat."""
    out: list[str] = []
    block = 0
    keyed = False  # the header has expectation blocks (not EXPECT: none)
    for line in lines:
        key, sep, _ = line.strip().partition(":")
        key = key.strip().upper()
        if line.strip() == "---":
            block += 1
            if block >= len(actual):
                break  # the blocks from here on are splats no longer found
            out.append(line)
        elif sep and key == "EXPECT":
            continue  # rewritten below from `actual`
        elif sep and key in KEYS:
            keyed = True
            if block < len(actual):
                out.append(f"{key}: {actual[block][key]}")
        else:
            out.append(line)  # comments
    if not actual:
        return out + ["EXPECT: none"]
    have = block + 1 if keyed else 0
    for i, extra in enumerate(actual[have:]):
        if have + i:
            out.append("---")
        out.extend(f"{k}: {extra[k]}" for k in NEW_BLOCK_KEYS)
    return out


def update_golden(path: Path, actual: list[dict[str, str]]) -> bool:
    """Rewrite `path`'s header to `actual`; True when the file changed."""
    lines, blank, console = _split(path)
    new = updated_header(lines, actual)
    if new == lines:
        return False
    data = "\n".join(new).encode("utf-8") + blank + console
    tmp = path.with_suffix(".log.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return True
