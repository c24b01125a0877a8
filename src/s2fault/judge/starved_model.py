"""A time-dilated model that starved the kernel's housekeeping: a run the model failed,
not the kernel (judge/rules.py turns its fail into an error; matrix/__init__.py runs it again).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from s2fault.judge import analyzer

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

