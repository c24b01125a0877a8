"""Pass 3 of the scan: which dump of a report shows the culprit, and which function it names.

The row's `pick` says whose dump it is (the report's own, the stalled CPUs' and tasks', the
locked-up CPU's); in that dump the row's `blame` lists the evidence in order (the trace, pc,
lr, held locks, in-flight work, "caller is", the lockdep lock's "at:", the header). A trace
that starts in the stack dumper was printed by the reporter on top of the code it
interrupted, so it is blamed below its first interrupt entry (frames.interrupted_part).
"""

from __future__ import annotations

import re

from s2fault.judge.analyzer.catalogue import Family
from s2fault.judge.analyzer.evidence import Dump, Evidence
from s2fault.judge.analyzer.frames import base_name, first_own, interrupted_part, is_plumbing
from s2fault.judge.analyzer.headers import Header

_STOPPER_TASK = re.compile(r"migration/\d+$")
# A CPU busy in one of these is waiting for another CPU: a lockup there is a knock-on.
_SPIN_WAITS = re.compile(
    r"(?:native_|__pv_)?queued_(?:spin|read|write)_lock_slowpath|do_raw_(?:spin|read|write)_lock"
    r"|_raw_(?:spin|read|write)_lock\w*|arch_(?:spin|read|write)_lock\w*|csd_lock_wait"
    r"|smp_call_function\w*|on_each_cpu\w*|multi_cpu_stop|stop_machine\w*|stop_one_cpu\w*"
    r"|kick_all_cpus_sync|rcu_barrier|synchronize_rcu\w*|spin_dump|rwlock_bug"
)


def _own(name: str | None) -> str | None:
    return base_name(name) if name and not is_plumbing(name) else None


def _trace_culprit(family: Family, dump: Dump) -> tuple[str | None, list[str]]:
    """(culprit, the frames it is in) from a dump's trace."""
    frames = dump.frames
    if family.interrupted:
        part = interrupted_part(frames, dump.breaks, dump.regs_at)
        if part is not None:
            return first_own(part), part
    return first_own(frames), frames


def _blame_dump(head: Header, ev: Evidence, dump: Dump) -> tuple[str | None, list[str]]:
    """The culprit named by one dump and the frames it comes from, following the row's order."""
    for evidence in head.family.blame:
        found: str | None
        frames = dump.frames
        if evidence == "trace":
            found, frames = _trace_culprit(head.family, dump)
        elif evidence == "held_lock":
            found = first_own(ev.held)
        elif evidence == "workqueue":
            found = first_own(ev.works)
        elif evidence == "pc":
            found = _own(dump.pc) or _own(dump.idle)
            if found and (not frames or base_name(frames[0]) != found):
                # x86 does not repeat the RIP function as the first frame of the trace.
                frames = [found, *frames]
        elif evidence == "lr":
            found = _own(dump.lr)
        elif evidence == "caller":
            found = _own(ev.caller)
        elif evidence == "lock_at":
            found = _own(ev.lock_at)
        else:
            found = _own(head.fields.get("function"))
        if found:
            return found, frames
    return None, dump.frames


def pick_dump(head: Header, ev: Evidence) -> tuple[Dump, str | None, list[str]]:
    """The dump that shows the culprit: the stalled CPU's, the locked-up CPU's, or the main one."""
    family = head.family
    candidates = [d for d in ev.dumps if d.label not in ("gp_kthread", "gp_heading")]
    if not candidates:
        candidates = ev.dumps[:1]
    wanted: list[tuple[str, str]] = []
    if family.pick == "stalled":
        wanted = [("cpu", c) for c in ev.stalled_cpus] + [("pid", p) for p in ev.stalled_pids]
    elif family.pick == "cpu" and head.fields.get("cpu"):
        wanted = [("cpu", head.fields["cpu"] or "")]
    for key, value in wanted:
        for dump in candidates:
            if getattr(dump, key) == value:
                found, frames = _blame_dump(head, ev, dump)
                if found:
                    return dump, found, frames
    if family.pick == "stalled":
        # No usable dump for a listed CPU ("All QSes seen", an idle CPU): any dump but the
        # detecting CPU's, which only shows the detector.
        for dump in candidates:
            if ev.stalled_cpus and dump.cpu is not None and dump.cpu == ev.detected_by:
                continue
            found, frames = _blame_dump(head, ev, dump)
            if found:
                return dump, found, frames
    dump = candidates[0]
    found, frames = _blame_dump(head, ev, dump)
    return dump, found, frames


def knock_on(
    family: Family, dump: Dump, task: str | None, frames: list[str], function: str | None
) -> str | None:
    """Why a lockup or stall looks like the consequence of work on another CPU, if it does."""
    if not family.interrupted:
        return None
    if dump.stopper or (task and _STOPPER_TASK.match(task)):
        return "stopper thread"
    names = [dump.pc] if dump.pc else []
    for name in frames:
        if function is not None and base_name(name) == function:
            break
        names.append(name)
    for name in names:
        if name and _SPIN_WAITS.fullmatch(base_name(name)):
            return f"waiting in {base_name(name)}"
    return None
