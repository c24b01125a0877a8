"""A walked report made a Splat: its first line, its fields, title and subtype, its culprit.

The fields a title is formatted with come from the header's groups, then the report's own
lines (who), then the culprit's dump (the stalled CPU and its task, not the detecting one).
A warning raised by lockdep itself (DEBUG_LOCKS_WARN_ON, a WARN_ON in lockdep.c) is
titled as the lockdep report it is.
"""

from __future__ import annotations

import re

from s2fault.judge.analyzer import console
from s2fault.judge.analyzer.blame import knock_on, pick_dump
from s2fault.judge.analyzer.catalogue import slug
from s2fault.judge.analyzer.evidence import Evidence
from s2fault.judge.analyzer.frames import trim
from s2fault.judge.analyzer.headers import Header
from s2fault.judge.analyzer.splat import Splat

_BANNER = re.compile(r"\s*(?:-{5,}\[ cut here \]-{5,}|={5,})\s*$")
_LOCKDEP_FILE = re.compile(r"kernel/(?:locking/)?lockdep\.c:")


class _Fields(dict[str, str]):
    """Header groups for titles; a group the header did not capture prints as "?"."""

    def __missing__(self, key: str) -> str:
        return "?"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _start_line(text: str, head: Header, floor: int, ev: Evidence) -> int:
    """Include the banner the kernel prints just before the header ("[ cut here ]", "===="),
    and the WARN() message printed between the two (arm64 and x86 print it first)."""
    offset = head.line.offset
    number = head.line.number
    message = False
    for back in range(1, 4):
        prev = console.previous_line_start(text, offset)
        if prev is None or number - back <= floor:
            break
        body = console.line_at(text, prev, number - back).body
        if _BANNER.match(body):
            if message:
                ev.notes.add("debug_locks")
            return number - back
        if head.family.kind != "warning" or not body.strip():
            break
        message = message or "DEBUG_LOCKS_WARN_ON" in body
        offset = prev
    return number


def assemble(text: str, head: Header, ev: Evidence, end: int, floor: int) -> Splat:
    """The splat of the report at `head`: `ev` is what its walk found, `end` its last line,
    `floor` the last line of the splat before it (whose banner is not this one's)."""
    family = head.family
    start = _start_line(text, head, floor, ev)
    dump, function, frames = pick_dump(head, ev)
    fields = _Fields({k: v for k, v in head.fields.items() if v is not None})
    for key, value in ev.who.items():
        fields.setdefault(key, value)
    if dump is not ev.dumps[0]:
        # The culprit's dump names the stalled CPU and its task, not the detecting one.
        for key in ("cpu", "task", "pid"):
            value = getattr(dump, key)
            if value:
                fields[key] = value
    for key in ("cpu", "pid", "task"):
        value = getattr(ev.dumps[0], key)
        if value:
            fields.setdefault(key, value)
    if ev.stalled_cpus:
        fields.setdefault("cpu", ev.stalled_cpus[0])
    kind, subtype_spec = family.kind, family.subtype
    title_spec, untitled_spec = family.title, family.untitled
    if kind == "warning" and (
        "debug_locks" in ev.notes or _LOCKDEP_FILE.search(fields.get("where") or "")
    ):
        # DEBUG_LOCKS_WARN_ON() and lockdep's own WARN_ON()s are lockdep reports: the locking
        # state went wrong, whatever line of lockdep.c noticed it.
        kind, subtype_spec = "lockdep", "debug_locks_warn_on"
        title_spec = "lockdep: locking bug (DEBUG_LOCKS_WARN_ON) in {function}"
        untitled_spec = "lockdep: locking bug (DEBUG_LOCKS_WARN_ON)"
    task = fields.get("task")
    task = task.strip() if task else None
    if function is not None:
        fields["function"] = function
        template = title_spec
    else:
        template = untitled_spec
    title = template(fields) if callable(template) else template.format_map(fields)
    if callable(subtype_spec):
        subtype = subtype_spec(fields)
    elif subtype_spec is not None:
        subtype = slug(subtype_spec.format_map(fields))
    else:
        subtype = None
    return Splat(
        kind=kind,
        subtype=subtype or None,
        title=_one_line(title),
        function=function,
        frames=trim(frames) if function is not None else tuple(frames),
        cpu=_int(fields.get("cpu")),
        task=task or None,
        pid=_int(fields.get("pid")),
        start_line=start,
        end_line=max(end, head.line.number),
        knock_on=knock_on(family, dump, task, frames, function),
        where=fields.get("where"),
    )
