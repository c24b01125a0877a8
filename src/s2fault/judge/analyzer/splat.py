"""The analyzer's output record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Splat:
    """One kernel report found in a console log."""

    kind: str  # soft_lockup, lockdep, atomic_sleep, kasan, ... (see the catalogue)
    subtype: str | None  # e.g. invalid_wait_context, sleeping_in_atomic, slab_use_after_free
    title: str  # one line naming the failure and the culprit
    function: str | None  # the culprit function
    # The culprit's call trace, top first, from its first frame that is not reporter, interrupt
    # or lock machinery (lock wrappers such as rtnl_lock stay, above the function they serve).
    frames: tuple[str, ...]
    cpu: int | None
    task: str | None  # comm of the task the report is about
    pid: int | None
    start_line: int  # 1-based, inclusive
    end_line: int
    # Lockups and stalls only: why this report looks like the consequence of work on another
    # CPU ("stopper thread", "waiting in queued_spin_lock_slowpath"), None when it does not.
    knock_on: str | None = None
    # The source location the report itself names ("... at include/linux/sched/mm.h:321"):
    # one message, different culprits (mutex_lock's might_sleep against might_alloc's).
    where: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "subtype": self.subtype,
            "title": self.title,
            "function": self.function,
            "frames": list(self.frames),
            "cpu": self.cpu,
            "task": self.task,
            "pid": self.pid,
            "lines": [self.start_line, self.end_line],
            "knock_on": self.knock_on,
            "where": self.where,
        }


def summary_line(splat: Splat) -> str:
    """ "L12-40 soft_lockup CPU#1 s2fault-vmm: soft lockup in icache_inval_pou"."""
    parts = [f"L{splat.start_line}-{splat.end_line}", splat.kind]
    if splat.cpu is not None:
        parts.append(f"CPU#{splat.cpu}")
    if splat.task:
        parts.append(splat.task)
    return " ".join(parts) + ": " + splat.title
