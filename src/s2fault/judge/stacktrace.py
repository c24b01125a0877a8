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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from s2fault import hosttools

if TYPE_CHECKING:
    from s2fault.judge.analyzer import Splat

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


@dataclass(frozen=True)
class DecodedFrame:
    """A frame as the call trace printed it, its function, and its file:line (None when
    vmlinux cannot say)."""

    frame: str
    function: str
    where: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"frame": self.frame, "function": self.function, "where": self.where}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DecodedFrame:
        return cls(d.get("frame") or "", d.get("function") or "", d.get("where"))


def decode(vmlinux: Path, console: str,
           splats: Sequence[Splat]) -> tuple[list[tuple[DecodedFrame, ...]], str | None]:
    """Each splat's frames with their source lines, in the order of `splats`, and None;
    or, when nothing could be decoded, [] and why."""
    lines = console.splitlines()
    spans = [lines[s.start_line - 1: s.end_line] for s in splats]
    decoded = addr2line(vmlinux, frames_in([ln for span in spans for ln in span]))
    if decoded and not any(where for _, where in decoded.values()):
        return [], NO_DEBUG_INFO
    return [tuple(DecodedFrame(f, decoded[f][0], decoded[f][1]) for f in frames_in(span))
            for span in spans], None
