"""Judging one run: console splats + workload lines + how QEMU ended -> a verdict
(judge/verdict.py), by the rules below; the outcomes are outcome.py's.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from typing import Any

from s2fault.judge import analyzer
from s2fault.judge.lines import ConsoleLines
from s2fault.judge.measurements import Measurements
from s2fault.judge.starved_model import starved_housekeeping
from s2fault.judge.verdict import Preconditions, ReportedSplat, Verdict, incidents
from s2fault.machine import MachineRun
from s2fault.outcome import Outcome

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


# A dilated boot that went silent before init with nothing reported: seen once in CI
# (2026-11-30, full-inval-always, 120 s without output after "workingset:", where a
# normal boot of the same kernel is silent ~6 s wall); the next boot of it was fine.
NEVER_REACHED_INIT = "could not judge: the guest never reached init"


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
        from s2fault.guest import selftests

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

