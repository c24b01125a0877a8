"""Splat frames to file:line with the kernel's vmlinux, as scripts/decode_stacktrace.sh
does: the first thing a kernel developer does with a stack.

A frame of an arm64 call trace reads `icache_inval_pou+0x1c/0x30`; binutils' addr2line
takes `symbol+offset` itself, so one addr2line call decodes every frame of a console.
Without debug info in the vmlinux (CONFIG_DEBUG_INFO_NONE) addr2line knows the function
but not the line: the frames stay undecoded and the run says why.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from . import hosttools

ADDR2LINE = "aarch64-linux-gnu-addr2line"
_FRAME = re.compile(r"(?<![\w.$])(?P<sym>[A-Za-z_][\w.$]*)\+(?P<off>0x[0-9a-f]+)/0x[0-9a-f]++"
                    r"(?!\s*\[)")  # a frame in a module ("... [kvm]") is not in vmlinux
NO_DEBUG_INFO = ("vmlinux has no debug info: build with CONFIG_DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT"
                 "=y for file:line")


def frames_in(lines: list[str]) -> list[str]:
    """Every `symbol+0xoff/0xsize` of `lines`, in order, each once."""
    seen: dict[str, None] = {}
    for line in lines:
        for m in _FRAME.finditer(line):
            seen.setdefault(m.group(0), None)
    return list(seen)


def addr2line(vmlinux: Path, frames: list[str]) -> dict[str, tuple[str, str | None]]:
    """frame -> (function, "file:line" or None when vmlinux cannot say)."""
    if not frames:
        return {}
    tool = hosttools.require(ADDR2LINE)
    queries = [f.split("/", 1)[0] for f in frames]
    r = subprocess.run([tool, "-f", "-e", str(vmlinux), *queries], capture_output=True,
                       text=True, timeout=120)
    out = r.stdout.splitlines()
    decoded: dict[str, tuple[str, str | None]] = {}
    for i, frame in enumerate(frames):
        function, where = (out[2 * i: 2 * i + 2] + ["??", "??:0"])[:2]
        known = not where.startswith("??") and not where.endswith((":0", ":?"))
        decoded[frame] = (function, where if known else None)
    return decoded


def decode(vmlinux: Path, console: str, splats: list[dict[str, Any]]) -> str | None:
    """Give each splat `decoded`: [{"frame", "function", "where"}], its frames with their
    source lines. Returns why nothing could be decoded, or None."""
    lines = console.splitlines()
    spans = {id(s): lines[s["lines"][0] - 1: s["lines"][1]] for s in splats}
    decoded = addr2line(vmlinux, frames_in([ln for span in spans.values() for ln in span]))
    if decoded and not any(where for _, where in decoded.values()):
        return NO_DEBUG_INFO
    for s in splats:
        s["decoded"] = [{"frame": f, "function": decoded[f][0], "where": decoded[f][1]}
                        for f in frames_in(spans[id(s)])]
    return None
