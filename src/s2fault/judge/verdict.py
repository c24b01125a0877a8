"""A run's verdict, as the judge (judge/rules.py) gives it and result.json and check.json
write it: its outcome and reason, the splats it saw, what the run measured
(judge/measurements.py) and needed (Preconditions), and where its artifacts are.

Each record's to_dict() is the JSON, key for key and in order; from_dict() reads it
back (host-run's verdict, judged inside the nested host; the rows of check.json the
reports read).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from s2fault.judge import analyzer
from s2fault.judge.measurements import FlatRecord, Measurements
from s2fault.judge.stacktrace import DecodedFrame
from s2fault.outcome import Outcome


@dataclass(frozen=True)
class Preconditions(FlatRecord):
    """What a run needs of the kernel and the machine, as its console showed it
    (judge.preconditions()): None where the console did not say."""

    booted: bool = False  # init ran
    kvm: bool | None = None  # /dev/kvm
    hugepages_total: int | None = None  # the boot-time reservation
    hugepage_kb: int | None = None
    debug_locks_before: int | None = None  # lockdep before the workload; None: no lockdep
    debug_locks_after: int | None = None
    dic: int | None = None  # CTR_EL0.DIC: 1, the invalidation under test never runs
    exec_faults_taken: bool | None = None
    watchdog_armed: bool | None = None
    # /proc/sys/kernel/soft_watchdog exists only with CONFIG_SOFTLOCKUP_DETECTOR.
    softlockup_detector: bool | None = None
    kernel_release: str | None = None


@dataclass(frozen=True)
class HostPreconditions:
    """What host-run adds to a verdict's preconditions: the host as it read it before
    the run (hostrun.HostFacts.to_dict()), its lockdep and DIC, and the settings the
    run changed, read back afterwards (`restored`: path -> before, after)."""

    host: dict[str, Any]
    lockdep: str
    dic: bool
    restored: dict[str, Any] | None = None

    @property
    def kernel(self) -> str | None:
        release: str | None = self.host.get("kernel")
        return release

    def to_dict(self) -> dict[str, Any]:
        restored = {"restored": self.restored} if self.restored is not None else {}
        return {"host": self.host, "lockdep": self.lockdep, "dic": self.dic} | restored

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HostPreconditions:
        return cls(d.get("host") or {}, d.get("lockdep") or "", bool(d.get("dic")),
                   d.get("restored"))


@dataclass(frozen=True)
class ReportedSplat(analyzer.Splat):
    """A splat as a verdict reports it: the analyzer's, with its place among the
    console's reports (judge.culprit_first: the incident, culprit or consequence, and
    for a consequence the culprit's index and why), how long a lockup was stuck
    (judge.stuck_for), and its frames decoded to file:line (stacktrace.decode, with a
    vmlinux)."""

    incident: int | None = None
    role: str | None = None  # "culprit" | "consequence"
    consequence_of: int | None = None
    why: str | None = None
    stuck_s: int | None = None  # what the kernel printed: model seconds when dilated
    stuck_hw_s: float | None = None  # a calibrated model's hardware-equivalent seconds
    decoded: tuple[DecodedFrame, ...] | None = None

    @classmethod
    def of(cls, splat: analyzer.Splat) -> ReportedSplat:
        return cls(**{f.name: getattr(splat, f.name) for f in fields(analyzer.Splat)})

    def to_dict(self) -> dict[str, Any]:
        """The analyzer's JSON, then what was added, in the order it was."""
        added = {"incident": self.incident, "role": self.role,
                 "consequence_of": self.consequence_of, "why": self.why,
                 "stuck_s": self.stuck_s, "stuck_hw_s": self.stuck_hw_s,
                 "decoded": [f.to_dict() for f in self.decoded]
                 if self.decoded is not None else None}
        return super().to_dict() | {k: v for k, v in added.items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReportedSplat:
        """A splat of result.json or check.json; what an older file lacks reads as
        not known."""
        start, end = (list(d.get("lines") or []) + [0, 0])[:2]
        decoded = d.get("decoded")
        return cls(
            kind=d.get("kind") or "", subtype=d.get("subtype"), title=d.get("title") or "",
            function=d.get("function"), frames=tuple(d.get("frames") or ()), cpu=d.get("cpu"),
            task=d.get("task"), pid=d.get("pid"), start_line=start, end_line=end,
            knock_on=d.get("knock_on"), where=d.get("where"), incident=d.get("incident"),
            role=d.get("role"), consequence_of=d.get("consequence_of"), why=d.get("why"),
            stuck_s=d.get("stuck_s"), stuck_hw_s=d.get("stuck_hw_s"),
            decoded=tuple(DecodedFrame.from_dict(f) for f in decoded)
            if decoded is not None else None)


@dataclass
class Verdict:
    verdict: Outcome
    reason: str
    splats: list[ReportedSplat] = field(default_factory=list)
    workload: Measurements | None = None  # None: nothing was run (JSON {})
    # None: nothing was judged (host-run found a reason not to run first). check.json
    # writes host-run's additions (host_preconditions) in "preconditions" too.
    preconditions: Preconditions | None = None
    machine: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    # Who ran the workload: "qemu" (nested, the kernel booted under QEMU) or "host-run"
    # (the running kernel of an arm64 host, or `s2fault run --via host-run`).
    runner: str = "qemu"
    host_preconditions: HostPreconditions | None = None

    @property
    def exit_code(self) -> int:
        return self.verdict.exit_code

    @property
    def kernel_release(self) -> str | None:
        """The kernel that ran, as the run reported it: the booted kernel's release, or
        host-run's host's."""
        if self.preconditions and self.preconditions.kernel_release:
            return self.preconditions.kernel_release
        return self.host_preconditions.kernel if self.host_preconditions else None

    @property
    def exec_fault_max_ms(self) -> float | None:
        """The run's exec-fault latency (Latency.max); None when none was measured."""
        return self.workload.exec_fault_ms.max if self.workload else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "splats": [s.to_dict() for s in self.splats],
            "workload": self.workload.to_dict() if self.workload is not None else {},
            # host-run's DIC replaces the console's, in its place
            "preconditions": (self.preconditions.to_dict() if self.preconditions else {})
            | (self.host_preconditions.to_dict() if self.host_preconditions else {}),
            "machine": self.machine,
            "artifacts": self.artifacts,
            "profile": self.profile,
            "versions": self.versions,
            "runner": self.runner,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        """A verdict another process judged (host-run inside the nested host)."""
        names = ("reason", "machine", "artifacts", "profile", "versions", "runner")
        measured = data.get("workload")
        pre = data.get("preconditions") or {}
        return cls(Outcome(data["verdict"]), **{k: data[k] for k in names if k in data},
                   splats=[ReportedSplat.from_dict(s) for s in data.get("splats") or []],
                   workload=Measurements.from_dict(measured) if measured else None,
                   preconditions=Preconditions.from_dict(pre) if "booted" in pre else None,
                   host_preconditions=HostPreconditions.from_dict(pre) if "host" in pre else None)


def incidents(splats: Sequence[ReportedSplat]
              ) -> list[tuple[ReportedSplat, list[ReportedSplat]]]:
    """The splats marked by judge.culprit_first(), as (culprit, its consequences) in the
    order a reason names them; [] for splats that carry no marks (results of older
    versions)."""
    leads = sorted((s for s in splats if s.role == "culprit"), key=lambda s: s.incident or 0)
    return [(lead, [c for c in splats if c.role == "consequence"
                    and c.incident == lead.incident]) for lead in leads]

