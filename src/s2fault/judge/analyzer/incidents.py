"""Culprit first: group a console's splats into incidents, each led by the report that names
the code doing the work.

A lockup rarely comes alone. When one CPU spends seconds non-preemptible in a line-by-line
I-cache invalidation, the other CPUs report too: the stopper thread (migration/N) cannot run
its work, a CPU spinning on a lock the culprit holds trips its own watchdog, and RCU reports
the culprit's CPU as stalled. The first report in time is often one of those (in
fix-reverted's dilated cell migration/0 reports 0.16 s before the VMM). So the lockup-class
reports of a console form one incident whose lead is the report that is not itself a
knock-on, and the others are its consequences, each with the reason it was grouped.

Every other splat (lockdep, sleeping in atomic, a WARN, ...) is an incident of its own.
Incidents are in order of their first report, so a verdict can lead with incidents[0].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from s2fault.judge.analyzer.splat import Splat, summary_line

# Reports about CPUs or pools that stopped making progress: one cascade per console.
_CASCADE_KINDS = frozenset({"soft_lockup", "hard_lockup", "rcu_stall", "workqueue_lockup"})
# Reports that can lead a cascade, best first: a watchdog's sample of the CPU itself beats
# RCU's report about it.
_LEAD_ORDER = ("soft_lockup", "hard_lockup", "rcu_stall")


@dataclass(frozen=True)
class Consequence:
    index: int  # into Analysis.splats
    why: str  # "stopper thread", "repeat", "RCU stall on the culprit's CPU#1", ...

    def to_dict(self) -> dict[str, Any]:
        return {"splat": self.index, "why": self.why}


@dataclass(frozen=True)
class Incident:
    lead: int  # index into Analysis.splats of the report that names the culprit
    consequences: tuple[Consequence, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"lead": self.lead, "consequences": [c.to_dict() for c in self.consequences]}


@dataclass(frozen=True)
class Analysis:
    """What a console shows: its splats in order of appearance, grouped culprit first."""

    splats: tuple[Splat, ...]
    incidents: tuple[Incident, ...]

    @property
    def culprit(self) -> Splat | None:
        """The lead of the first incident: what a verdict should name first."""
        return self.splats[self.incidents[0].lead] if self.incidents else None

    @property
    def consequences(self) -> tuple[tuple[Splat, str], ...]:
        """The first incident's knock-on reports, with why each was grouped under it."""
        if not self.incidents:
            return ()
        return tuple((self.splats[c.index], c.why) for c in self.incidents[0].consequences)

    def ordered(self) -> list[Splat]:
        """Every splat once: each incident's lead, then its consequences."""
        out: list[Splat] = []
        for incident in self.incidents:
            out.append(self.splats[incident.lead])
            out.extend(self.splats[c.index] for c in incident.consequences)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "splats": [s.to_dict() for s in self.splats],
            "incidents": [i.to_dict() for i in self.incidents],
            "culprit": self.incidents[0].lead if self.incidents else None,
        }

    def lines(self) -> list[str]:
        """Text for a terminal: each incident's lead, its consequences indented under it."""
        out: list[str] = []
        for incident in self.incidents:
            out.append(summary_line(self.splats[incident.lead]))
            for c in incident.consequences:
                out.append(f"  consequence ({c.why}): {summary_line(self.splats[c.index])}")
        return out


def group(splats: Sequence[Splat]) -> Analysis:
    """Group splats (in order of appearance) into incidents, culprit first."""
    cascade = [i for i, s in enumerate(splats) if s.kind in _CASCADE_KINDS]
    incidents = [Incident(i) for i, s in enumerate(splats) if s.kind not in _CASCADE_KINDS]
    if cascade:
        lead = _lead(splats, cascade)
        why = [(i, _why(splats[lead], splats[i], splats, cascade)) for i in cascade if i != lead]
        incidents.append(Incident(lead, tuple(Consequence(i, w) for i, w in why if w)))
        # A stall of a CPU no lockup report is about stands on its own.
        incidents.extend(Incident(i) for i, w in why if not w)
    incidents.sort(key=lambda inc: min([inc.lead, *(c.index for c in inc.consequences)]))
    return Analysis(tuple(splats), tuple(incidents))


def _lead(splats: Sequence[Splat], cascade: list[int]) -> int:
    for kind in _LEAD_ORDER:
        for i in cascade:
            s = splats[i]
            if s.kind == kind and s.function is not None and s.knock_on is None:
                return i
    # Every report is a knock-on (the culprit's own report was lost): the first with a culprit.
    for i in cascade:
        if splats[i].function is not None and splats[i].kind in _LEAD_ORDER:
            return i
    return cascade[0]


def _same_context(a: Splat, b: Splat) -> bool:
    if a.pid is not None and a.pid == b.pid:
        return True
    return a.cpu is not None and a.cpu == b.cpu and a.task == b.task


def _why(lead: Splat, s: Splat, splats: Sequence[Splat], cascade: list[int]) -> str | None:
    """Why `s` is a consequence of `lead`'s incident, or None if it is not."""
    if s.kind == "rcu_stall":
        if _same_context(lead, s) or (s.cpu is not None and s.cpu == lead.cpu):
            return f"RCU stall on the culprit's CPU#{s.cpu}" if s.cpu is not None else (
                "RCU stall of the culprit's task"
            )
        if s.function is not None and s.function == lead.function:
            return "RCU stall in the culprit's function"
        others = {splats[i].cpu for i in cascade if splats[i].kind != "rcu_stall"}
        if s.cpu is not None and s.cpu in others:
            return f"RCU stall on CPU#{s.cpu}, stuck behind the culprit"
        return None
    if s.kind == "workqueue_lockup":
        return "workqueue pool stuck behind the culprit"
    if s.knock_on is not None:
        return s.knock_on
    if _same_context(lead, s) and s.function == lead.function:
        return "repeat"
    if s.cpu is not None and s.cpu != lead.cpu:
        return f"lockup on another CPU (CPU#{s.cpu})"
    return "another report of the same lockup"
