"""Judging one run: console splats + workload lines + how QEMU ended -> a verdict.

  pass   the kernel booted, ran the workload on the path under test, coherent, no splat
  fail   the kernel misbehaved: a splat, a lockup, a wrong value from the guest
  skip   the path under test cannot run here (CTR_EL0.DIC=1, kvm-arm.mode refused, no
         memory for the hugepage): kselftest's SKIP, JUnit's <skipped>, Avocado's CANCEL
  error  the run could not be judged: infrastructure, bad input, a kernel without what
         the workload needs (lockdep, KVM, the lockup detector a dilated run arms).
Neither skip nor error is ever a pass.
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from . import analyzer
from .errors import EXIT_ERROR, EXIT_FAIL, EXIT_PASS, EXIT_SKIP
from .machine import MachineRun
from .measurements import Measurements
from .stacktrace import DecodedFrame
from .workload import ConsoleLines


class Outcome(enum.StrEnum):
    """The four outcomes of a run, a cell or a command (module docstring), each with the
    exit code it stands for. A str: it compares, prints and serializes as its name."""

    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"

    @property
    def exit_code(self) -> int:
        return _EXIT[self]


_EXIT = {Outcome.PASS: EXIT_PASS, Outcome.FAIL: EXIT_FAIL, Outcome.SKIP: EXIT_SKIP,
         Outcome.ERROR: EXIT_ERROR}
EXIT_CODES = {o.value: o.exit_code for o in Outcome}
OUTCOMES = tuple(o.value for o in Outcome)

# The kernel's message when the boot-time hugepage reservation found no memory
# (mm/hugetlb.c: "HugeTLB: allocating 1 of page size 512 MiB failed").
_NO_HUGEPAGE_MEMORY = re.compile(r"HugeTLB: allocating \d+ of page size [^\n]*? failed")
UNARMED = ("could not judge: the soft-lockup detector was not armed (needs "
           "CONFIG_SOFTLOCKUP_DETECTOR=y); a run that arms it cannot call the kernel clean "
           "without it")

# host-run: the host's own CPU, and a kernel that may have no lockdep.
HOST_DIC = "not applicable: this CPU has FEAT_DIC; the invalidation under test never runs"
NO_LOCKDEP = "not checked: no lockdep"

# Evidence in a console that a kernel lacks what the workload needs, and what to enable.
_MISSING = (
    ("Unable to mount root fs", "the kernel did not run /init from the initramfs "
     "(needs CONFIG_BLK_DEV_INITRD=y)"),
    ("No working init found", "the kernel could not execute /init (needs CONFIG_BINFMT_ELF=y)"),
    ("Kernel is not configured for hugetlb", "needs CONFIG_HUGETLBFS=y"),
)


# Time dilation (-icount) slows every guest instruction, the kernel's housekeeping
# with the rest, but not the rate of its ticks; and all nested CPUs share one
# instruction budget. With many CPUs busy, a CPU can spend a whole watchdog period in
# softirq work (load balancing over all CPUs, timers, RCU) and be reported stuck there
# although nothing in the kernel is wrong (measured: upstream at 64 vCPUs, idle CPUs
# "stuck" 56 s in sched_balance_rq; upstream multi-vm dilated, migration/0 in
# sched_balance_update_blocked_averages). Such a run says nothing about the path under
# test: it is the model's failure, never the kernel's pass or fail.
MODEL_STARVED = "could not judge: time dilation starved the kernel's housekeeping"
_SOFTIRQ_WORK = re.compile(r"^(handle_softirqs|__do_softirq|run_ksoftirqd|sched_balance_\w+)$")
# Where an interrupted context's frames begin, below the interrupt's own.
_IRQ_ENTRY = frozenset({"call_on_irq_stack", "do_interrupt_handler", "el1_interrupt",
                        "el1h_64_irq_handler", "el1h_64_irq", "el0_interrupt",
                        "irq_exit_rcu", "__irq_exit_rcu"})
# The stage-2 fault path and the I-cache maintenance under test (the variants' helpers
# included): a report with one of these in its stuck context is judged as usual.
_PATH_UNDER_TEST = re.compile(
    r"^(__?kvm_|kvm_|stage2_|icache_|__invalidate_icache|invalidate_icache|user_mem_abort|"
    r"add_fault_range|handle_exit)")


def housekeeping_lockup(splat: analyzer.Splat) -> bool:
    """A lockup or stall whose stuck context (its frames above any interrupt entry) is
    softirq work, with no frame of the path under test in it, and not a spin on a lock
    another CPU holds."""
    if splat.kind not in ("soft_lockup", "rcu_stall"):
        return False
    if (splat.knock_on or "").startswith("waiting in"):
        return False  # spinning on a lock another CPU holds: judged with that CPU's report
    top = []
    for frame in splat.frames:
        if frame in _IRQ_ENTRY:
            break
        top.append(frame)
    return (any(_SOFTIRQ_WORK.match(f) for f in top)
            and not any(_PATH_UNDER_TEST.match(f) for f in top))


def stopper_knock_on(splat: analyzer.Splat) -> bool:
    """A lockup of a CPU's stopper thread (migration/N) that the analyzer calls the
    consequence of another CPU (knock_on), with no frame of the path under test: the
    watchdog's own work could not run there. Measured in the fresh-root CI (2026-11-30):
    upstream multi-vm dilated, migration/0 "stuck" in cpu_stop_should_run beside lockups
    in softirq work."""
    return (splat.kind == "soft_lockup" and splat.knock_on == "stopper thread"
            and not any(_PATH_UNDER_TEST.match(f) for f in splat.frames))


_TRACE_FRAME = re.compile(r"^\s*(?:\[[^\]]*\]\s*)?([A-Za-z0-9_.$]+)\+0x")


def _as_printed(splat: analyzer.Splat, lines: list[str]) -> analyzer.Splat:
    """`splat` with the frames of its call trace as the kernel printed them: the analyzer's
    frames start below interrupt machinery, which is where softirq work shows (CI5:
    "soft lockup in complete", the trace's top handle_softirqs)."""
    frames, seen = [], False
    for line in lines[max(splat.start_line - 1, 0):splat.end_line]:
        if "Call trace:" in line:
            seen = True
            continue
        m = _TRACE_FRAME.match(line) if seen else None
        if m:
            frames.append(m.group(1))
    return replace(splat, frames=tuple(frames)) if frames else splat


def starved_housekeeping(splats: Sequence[analyzer.Splat],
                         text: str | None = None) -> str | None:
    """The reason for a dilated run whose only reports are lockups and stalls in softirq
    housekeeping or of stopper threads (frame-less stall summaries aside), None for any
    other run."""
    if not splats or any(s.kind not in ("soft_lockup", "rcu_stall") for s in splats):
        return None
    named = [s for s in splats if s.frames]
    lines = text.splitlines() if text is not None else []
    if not named or not all(housekeeping_lockup(s) or stopper_knock_on(s)
                            or housekeeping_lockup(_as_printed(s, lines)) for s in named):
        return None
    first = named[0]
    where = first.function or first.frames[0]
    cpu = f" on CPU#{first.cpu}" if first.cpu is not None else ""
    context = ("in the stopper thread" if stopper_knock_on(first) and not
               housekeeping_lockup(_as_printed(first, lines)) else "from softirq")
    return (f"{MODEL_STARVED}: {len(named)} report(s), the first a {first.kind} in "
            f"{where}{cpu} {context}, none in the fault path (a model artifact, not a "
            "result about the kernel)")


# A dilated boot that went silent before init with nothing reported: seen once in CI
# (2026-11-30, full-inval-always, 120 s without output after "workingset:", where a
# normal boot of the same kernel is silent ~6 s wall); the next boot of it was fine.
NEVER_REACHED_INIT = "could not judge: the guest never reached init"


def retryable(v: Verdict) -> bool:
    """A run worth running again: the model failed, not the kernel or the set-up. A
    starved model, or a time-dilated boot that stalled before init without a report."""
    if v.verdict is not Outcome.ERROR:
        return False
    if v.reason.startswith(MODEL_STARVED):
        return True
    dilated = (v.profile or {}).get("icount_shift") is not None
    return dilated and v.reason.startswith(NEVER_REACHED_INIT) and not v.splats


@dataclass(frozen=True)
class Preconditions:
    """What a run needs of the kernel and the machine, as its console showed it
    (preconditions()): None where the console did not say."""

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "booted": self.booted,
            "kvm": self.kvm,
            "hugepages_total": self.hugepages_total,
            "hugepage_kb": self.hugepage_kb,
            "debug_locks_before": self.debug_locks_before,
            "debug_locks_after": self.debug_locks_after,
            "dic": self.dic,
            "exec_faults_taken": self.exec_faults_taken,
            "watchdog_armed": self.watchdog_armed,
            "softlockup_detector": self.softlockup_detector,
            "kernel_release": self.kernel_release,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preconditions:
        return cls(bool(d.get("booted")), d.get("kvm"), d.get("hugepages_total"),
                   d.get("hugepage_kb"), d.get("debug_locks_before"), d.get("debug_locks_after"),
                   d.get("dic"), d.get("exec_faults_taken"), d.get("watchdog_armed"),
                   d.get("softlockup_detector"), d.get("kernel_release"))


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
    console's reports (culprit_first: the incident, culprit or consequence, and for a
    consequence the culprit's index and why), how long a lockup was stuck (stuck_for),
    and its frames decoded to file:line (stacktrace.decode, with a vmlinux)."""

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


def judge(run: MachineRun, text: str, workload: ConsoleLines,
          watchdog_thresh: int | None = None, scale: float | None = None,
          runner: str = "qemu", dilated: bool = False) -> Verdict:
    """`watchdog_thresh`: the threshold the profile asked the VMM to arm the soft-lockup
    detector with (dilated runs); then a run in which it was not armed is an error.
    `scale`: a calibrated model's k, for hardware-equivalent "stuck for" times.
    `runner` "host-run": the kernel is a host's own, which may be a production kernel
    without lockdep (lockups and latency are still judged; lockdep is "not checked"),
    and a CPU with DIC is the host's, not a CPU model to change.
    `dilated`: the run was time-dilated (-icount); lockups only in softirq housekeeping
    are then the model's failure (MODEL_STARVED), an error."""
    splats = stuck_for(culprit_first(analyzer.analyze_console(text)), text, scale)
    measured = workload.summary()
    pre = preconditions(workload)
    v = Verdict(Outcome.ERROR, "", splats, measured, pre, run.to_dict(), runner=runner)
    v.verdict, v.reason = _decide(run, text, workload, measured, splats, pre, watchdog_thresh,
                                  runner)
    starved = starved_housekeeping(splats, text) if dilated else None
    coherent = (workload.result or {}).get("coherent")
    if starved and v.verdict is Outcome.FAIL and coherent is not False:
        v.verdict, v.reason = Outcome.ERROR, starved
    return v


_STUCK = re.compile(r"stuck for (\d+)s!")


def stuck_for(splats: list[ReportedSplat], text: str,
              scale: float | None) -> list[ReportedSplat]:
    """The splats, each lockup report with its "stuck for" in model seconds (what the
    kernel printed) and, for a calibrated model, in hardware-equivalent seconds (k x)."""
    lines = text.splitlines()
    out = []
    for s in splats:
        m = _STUCK.search(lines[s.start_line - 1]) if 0 < s.start_line <= len(lines) else None
        if m:
            stuck = int(m.group(1))
            s = replace(s, stuck_s=stuck, stuck_hw_s=round(stuck * scale, 1) if scale else None)
        out.append(s)
    return out


def preconditions(w: ConsoleLines) -> Preconditions:
    init, r, post = w.init or {}, w.result or {}, w.post or {}
    return Preconditions(
        booted=w.init is not None,
        kvm=init.get("kvm"),
        hugepages_total=init.get("hugepages_total"),
        hugepage_kb=init.get("hugepage_kb"),
        debug_locks_before=init.get("debug_locks"),
        debug_locks_after=post.get("debug_locks"),
        dic=r.get("dic"),
        exec_faults_taken=_exec_faults_taken(r),
        watchdog_armed=r.get("watchdog_armed"),
        softlockup_detector=(post.get("soft_watchdog") is not None) if w.post else None,
        kernel_release=init.get("kernel"),
    )


def _exec_faults_taken(r: dict[str, Any]) -> bool | None:
    """Did the workload really take an execute-permission fault on the block?

    A branch into an already executable block costs about a microsecond of guest
    time; one that takes the permission fault exits to the host and back, which takes
    far longer (0.2 ms and more under TCG) in every round, since the VMM re-faults the
    block each round."""
    rounds = r.get("rounds") or [r]
    # A vCPU that never reported has null latencies: it proves nothing either way.
    seen = [v for rd in rounds for v in (rd.get("exec_fault_us") or []) if v is not None]
    if not seen:
        return None
    return bool(max(seen) >= 20.0)


# The code doing the I-cache invalidation of a stage-2 block: among the incidents on a
# console (analyzer.group: each lockup cascade is one, led by its culprit), the one whose
# lead names it is what a verdict names first, even when a lockdep report came earlier.
_INVALIDATION = frozenset({"icache_inval_pou", "stage2_attr_walker",
                           "invalidate_icache_guest_page", "stage2_map_walker_try_leaf"})


def _names_invalidation(s: analyzer.Splat) -> bool:
    return s.function in _INVALIDATION or bool(_INVALIDATION.intersection(s.frames))


def culprit_first(analysis: analyzer.Analysis) -> list[ReportedSplat]:
    """The console's splats in order of appearance, each marked with its incident:
    `role` "culprit" (an incident's lead) or "consequence" (a knock-on report, with
    `consequence_of`, the lead's index, and `why` it was grouped there). `incident`
    numbers the incidents in the order a reason names them: the one about the
    invalidation first, then by first report."""
    splats = [ReportedSplat.of(s) for s in analysis.splats]
    incidents = sorted(analysis.incidents, key=lambda inc: not _names_invalidation(
        splats[inc.lead]))
    for n, incident in enumerate(incidents):
        splats[incident.lead] = replace(splats[incident.lead], incident=n, role="culprit")
        for c in incident.consequences:
            splats[c.index] = replace(splats[c.index], incident=n, role="consequence",
                                      consequence_of=incident.lead, why=c.why)
    return splats


_CPU_NUMBER = re.compile(r" \(CPU#\d+\)")


def incidents(splats: Sequence[ReportedSplat]
              ) -> list[tuple[ReportedSplat, list[ReportedSplat]]]:
    """The splats marked by culprit_first(), as (culprit, its consequences) in the order
    a reason names them; [] for splats that carry no marks (results of older versions)."""
    leads = sorted((s for s in splats if s.role == "culprit"), key=lambda s: s.incident or 0)
    return [(lead, [c for c in splats if c.role == "consequence"
                    and c.incident == lead.incident]) for lead in leads]


def _stuck_text(s: ReportedSplat) -> str:
    if s.stuck_hw_s is not None:
        return f" (stuck for {s.stuck_s} s model, {s.stuck_hw_s:g} s hardware-equivalent)"
    if s.stuck_s is not None:
        return f" (stuck for {s.stuck_s} s)"
    return ""


def _splat_reason(splats: list[ReportedSplat]) -> str:
    """The culprit's report first; its knock-on reports summed up after it by why they
    were grouped there; then how many other reports the console holds."""
    grouped = incidents(splats)
    if grouped:
        first, knock_on = grouped[0]
    else:  # splats not marked by culprit_first(): the one naming the invalidation
        first, knock_on = min(splats, key=lambda s: not _names_invalidation(s)), []
    title = first.title
    prefix = "" if title.startswith(first.kind) else f"{first.kind}: "
    text = f"{prefix}{title}{_stuck_text(first)}"
    if knock_on:
        # 63 CPUs locked up behind one: "lockup on another CPU x63", not 63 CPU numbers.
        whys = Counter(_CPU_NUMBER.sub("", s.why or "") for s in knock_on)
        parts = [why + (f" x{n}" if n > 1 else "") for why, n in whys.items()]
        text += (f"; {len(knock_on)} consequence(s): " + ", ".join(parts[:3])
                 + (f" +{len(parts) - 3}" if len(parts) > 3 else ""))
    others = len(splats) - 1 - len(knock_on)
    if others > 0:
        text += f" (+{others} more)"
    return text


def _refused_option(text: str) -> str | None:
    """A kvm-arm.mode the kernel did not honour: the run did not test what was asked
    (measured on QEMU 7.2 TCG: `max` lacks FEAT_NV2, so "nested" silently falls back to
    VHE; an nVHE CPU model rejects the option, after a boot-time WARN)."""
    if "Malformed early option 'kvm-arm.mode'" in text:
        return ("the kernel rejected kvm-arm.mode (\"Malformed early option\"; "
                "nested needs a VHE CPU model with FEAT_NV2)")
    if "kvm-arm.mode=nested" in text and "unavailable: Nested Virtualization Support" in text:
        return ("kvm-arm.mode=nested was not granted (CPU features: "
                "unavailable: Nested Virtualization Support; the CPU model lacks FEAT_NV2) "
                "and KVM ran as an ordinary host")
    return None


def _incoherent(measured: Measurements, r: dict[str, Any]) -> str:
    """Name the first round in which a vCPU executed something other than what the VMM
    had just written, and whether it was the previous round's code (stale I-cache)."""
    stale = measured.stale
    if not stale:
        return (f"incoherent: {r.get('values_ok')}/{r.get('vcpus')} vCPUs ran the code the "
                "VMM wrote")
    first = stale[0]
    what = ("the previous round's code" if first.got == first.previous
            else "neither this round's nor the previous round's code")
    vm = f"VM {first.vm} " if first.vm is not None else ""
    rounds = sorted({s.round for s in stale})
    return (f"incoherent: round {first.round}: {vm}vCPU {first.vcpu} executed {what} "
            f"(got {first.got}, expected {first.expected}); stale executions: "
            f"{len(stale)} in round(s) {', '.join(map(str, rounds))}")


def _not_armed(r: dict[str, Any], watchdog_thresh: int | None) -> bool:
    return bool(watchdog_thresh) and not r.get("watchdog_armed")


def _decide(run: MachineRun, text: str, w: ConsoleLines, measured: Measurements,
            splats: list[ReportedSplat], pre: Preconditions, watchdog_thresh: int | None = None,
            runner: str = "qemu") -> tuple[Outcome, str]:
    on_host = runner == "host-run"
    if run.outcome == "qemu_failed" and not text.strip():
        return Outcome.ERROR, f"could not judge: {run.reason}"
    refused = _refused_option(text)
    if refused:
        return Outcome.SKIP, f"not applicable: {refused}"
    if w.init is None:
        for needle, why in _MISSING:
            if needle in text:
                return Outcome.ERROR, f"could not judge: {why}"
        if splats:
            return Outcome.FAIL, f"kernel failed before init: {_splat_reason(splats)}"
        if not text.strip():
            return Outcome.ERROR, (
                f"could not judge: the kernel printed nothing ({run.reason}; needs "
                "CONFIG_SERIAL_AMBA_PL011_CONSOLE=y, or it hung before the console)"
            )
        return Outcome.ERROR, f"{NEVER_REACHED_INIT} ({run.reason})"
    init = w.init
    if not init.get("kvm"):
        return Outcome.ERROR, (
            "could not judge: no /dev/kvm in the booted kernel (needs CONFIG_VIRTUALIZATION=y "
            "and CONFIG_KVM=y, and a CPU model with EL2)"
        )
    # host-run reserves its hugepages itself when the workload starts (the nested host
    # boots with none for it), so the boot's count says nothing about its run.
    if not init.get("hugepages_total") and not on_host:
        if _NO_HUGEPAGE_MEMORY.search(text):
            return Outcome.SKIP, (
                "not applicable: the nested host had no memory for the boot-time hugepage "
                "(\"HugeTLB: allocating ... failed\"; give it more with --memory)"
            )
        return Outcome.ERROR, (
            "could not judge: the boot-time hugepage reservation failed (needs CONFIG_HUGETLBFS=y "
            "and enough guest memory for one block)"
        )
    lockdep_note = ""
    if on_host and not init.get("debug_locks"):
        # A host's kernel as it is: without lockdep, or with lockdep already off
        # before this workload (not this workload's doing). Never a lockdep pass.
        lockdep_note = (f" ({NO_LOCKDEP})" if init.get("debug_locks") is None else
                        " (lockdep not checked: already off before the workload)")
    elif init.get("debug_locks") is None:
        return Outcome.ERROR, ("could not judge: lockdep is not built in "
                               "(needs CONFIG_PROVE_LOCKING=y)")
    elif init.get("debug_locks") == 0:
        why = _splat_reason(splats) if splats else "no splat seen"
        return Outcome.FAIL, (
            f"lockdep was already off when the workload started (a boot-time splat: {why}); "
            "the workload was not checked"
        )
    r = w.result
    if r is None:
        if splats:
            return Outcome.FAIL, f"{_splat_reason(splats)}; the workload did not finish"
        reason = "; ".join(w.errors) if w.errors else run.reason
        return Outcome.ERROR, f"could not judge: the workload reported no result ({reason})"
    if "selftests" in r:
        # The kernel's own tests: a splat is the kernel's failure whatever they said;
        # otherwise their statuses decide (selftests.parse explains the rules).
        if splats:
            return Outcome.FAIL, _splat_reason(splats)
        if _not_armed(r, watchdog_thresh):
            return Outcome.ERROR, UNARMED
        from . import selftests

        judgement: tuple[Outcome, str] = selftests.parse(r)["judgement"]
        return judgement
    if r.get("dic") and on_host:
        return Outcome.SKIP, HOST_DIC
    if r.get("dic"):
        return Outcome.SKIP, (
            f"not applicable: CTR_EL0.DIC=1 (CTR_EL0={r.get('ctr_el0')}): the I-cache "
            "invalidation under test never runs; pick a CPU model without DIC"
        )
    injection = r.get("fault_injection")
    if injection is not None and not injection.get("armed"):
        why = "; ".join(r.get("errors") or []) or "no reason given"
        return Outcome.ERROR, f"could not judge: fault injection could not be armed ({why})"
    stuck = r.get("stuck_vcpus") or []
    if stuck and injection and injection.get("failures"):
        # The failure was injected under the fault handler and the vCPUs never came
        # back: the kernel turned one failed allocation into a livelock.
        also = f"; also: {_splat_reason(splats)}" if splats else ""
        return Outcome.FAIL, (
            f"livelock: {len(stuck)} of {r.get('vcpus')} vCPUs never came back from their "
            f"exec fault after {injection['failures']} injected allocation failure(s) under "
            f"{injection.get('window')} ({(r.get('errors') or ['timeout'])[0]}){also}")
    if stuck and splats:
        # Nothing was injected, but the kernel already reported trouble in the fault
        # path: the vCPUs lost a race there (a retry that can never succeed).
        return Outcome.FAIL, (
            f"livelock: {len(stuck)} of {r.get('vcpus')} vCPUs never came back from their "
            f"exec fault ({(r.get('errors') or ['timeout'])[0]}); also: {_splat_reason(splats)}")
    if r.get("errors"):
        # A vCPU that never reported (timeout, KVM error) is not an incoherent I-cache;
        # with a splat on the console the kernel is to blame, without one nobody is.
        if splats:
            return Outcome.FAIL, f"{_splat_reason(splats)}; workload error: {r['errors'][0]}"
        return Outcome.ERROR, f"could not judge: workload error: {r['errors'][0]}"
    if r.get("coherent") is False:
        return Outcome.FAIL, _incoherent(measured, r)
    if splats:
        return Outcome.FAIL, _splat_reason(splats)
    if _not_armed(r, watchdog_thresh):
        return Outcome.ERROR, UNARMED
    if pre.exec_faults_taken is False:
        return Outcome.ERROR, ("could not judge: no execute-permission fault was observed "
                               "on the block")
    if run.outcome not in ("exited",):
        return Outcome.ERROR, f"could not judge: {run.reason}"
    ms = measured.exec_fault_ms
    return Outcome.PASS, (
        f"{r.get('vcpus')} vCPUs, exec fault max {ms.max} ms, median {ms.median} ms, "
        f"coherent{lockdep_note}"
    )
