"""The workload's side of the console: the machine-readable lines init and the VMM print.

  S2FAULT-INIT {json}    init reached, before the workload (hugepages, debug_locks, /dev/kvm)
  S2FAULT-RESULT {json}  the VMM's one result line (per-vCPU exec-fault latency, coherence, DIC)
  S2FAULT-POST {json}    after the workload (VMM exit code, debug_locks)
  S2FAULT-ERROR reason   init could not run the workload
  S2FAULT-DONE           init is powering off

Kernel messages can land in the middle of a line, so markers are searched
anywhere in a line and the JSON is decoded up to where it ends.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from typing import Any

from s2fault.judge.measurements import (
    BlockCosts,
    FaultInjection,
    Latency,
    Measurements,
    StaleExecution,
    Storm,
    VmProcess,
)

_DECODER = json.JSONDecoder()


@dataclass
class ConsoleLines:
    """The S2FAULT-* lines of one run's console, parsed (parse()): the INIT line, every
    RESULT line (a multi-VM run prints one per VMM process), the POST line, the ERROR
    reasons, and whether DONE was seen. What a workload printed, not what it is: the
    workload definitions (what the guest is asked to do) are workloads.Workload."""

    init: dict[str, Any] | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    post: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)
    done: bool = False

    @property
    def result(self) -> dict[str, Any] | None:
        """The last run's result; a multi-VM run's lines (one per VMM process) merged."""
        if not self.results:
            return None
        last = self.results[-1]
        vms = int(last.get("vms") or 1)
        if vms <= 1:
            return last
        group: list[dict[str, Any]] = []
        for r in reversed(self.results):
            if len(group) == vms or any(g.get("vm") == r.get("vm") for g in group):
                break
            group.insert(0, r)
        return merge_vms(group, vms)

    def summary(self) -> Measurements:
        """The `workload` of a verdict: what the run measured."""
        r = self.result or {}
        rounds = r.get("rounds") or [r]
        injection = r.get("fault_injection")
        return Measurements(
            vcpus=r.get("vcpus"),
            block_bytes=r.get("block_bytes"),
            page_size=r.get("page_size"),
            rounds=len(rounds),
            exec_fault_ms=_latency(rounds, "exec_fault_us"),
            exec_fault_wall_ms=_latency(rounds, "exec_fault_wall_us"),
            coherent=r.get("coherent"),
            dic=r.get("dic"),
            ctr_el0=r.get("ctr_el0"),
            errors=list(r.get("errors") or []),
            runs=len(self.results),
            vms=int(r.get("vms") or 1),
            remap=r.get("remap", "memslot"),
            stale=[StaleExecution.from_dict(dict(s, round=i))
                   for i, rd in enumerate(rounds) for s in rd.get("stale") or []],
            per_vm=[VmProcess.from_dict(p)
                    for p in r.get("per_vm") or ([_vm_of(r)] if r else [])],
            first_touch=r.get("first_touch", "data"),
            stuck_vcpus=list(r.get("stuck_vcpus") or []),
            fault_injection=FaultInjection.from_dict(injection) if injection else None,
            icache=(self.post or {}).get("icache"),
            blocks=_block_costs(rounds) if int(r.get("blocks") or 1) > 1 else None,
            storm=_storm(rounds, r) if r.get("storm") else None,
            selftests=list(r.get("selftests") or []) if "selftests" in r else None,
        )


# Keys every VMM process reports alike (the machine's, not the VM's).
_SHARED = ("page_size", "block_bytes", "ctr_el0", "dic", "idc", "cntfrq", "blocks", "storm",
           "remap", "watchdog_armed")
# Per-round lists with one entry per vCPU: concatenated VM after VM.
_PER_VCPU = ("exec_fault_us", "exec_fault_wall_us", "block_fault_us", "storm_max_us",
             "storm_mean_us", "storm_iterations")


def merge_vms(lines: list[dict[str, Any]], vms: int) -> dict[str, Any]:
    """One result out of the lines of a multi-VM run: vCPUs of VM 0, then VM 1, ...;
    a VM that printed nothing is an error of the run."""
    lines = sorted(lines, key=lambda r: r.get("vm") or 0)
    merged: dict[str, Any] = {k: lines[0].get(k) for k in _SHARED if k in lines[0]}
    merged["vms"] = vms
    merged["vcpus"] = sum(int(r.get("vcpus") or 0) for r in lines)
    merged["coherent"] = all(r.get("coherent") for r in lines) and len(lines) == vms
    merged["values_ok"] = sum(int(r.get("values_ok") or 0) for r in lines)
    errors = [f"vm {r.get('vm')}: {e}" for r in lines for e in r.get("errors") or []]
    seen = {r.get("vm") for r in lines}
    errors += [f"vm {i}: no result line" for i in range(vms) if i not in seen]
    merged["errors"] = errors
    merged["per_vm"] = [_vm_of(r) for r in lines]
    n_rounds = max(len(r.get("rounds") or []) for r in lines)
    rounds = []
    for i in range(n_rounds):
        parts = [(r.get("vm"), (r.get("rounds") or [])[i]) for r in lines
                 if i < len(r.get("rounds") or [])]
        rd: dict[str, Any] = {k: [x for _, p in parts for x in p.get(k) or []]
                    for k in _PER_VCPU if any(k in p for _, p in parts)}
        rd["coherent"] = all(p.get("coherent") for _, p in parts) and len(parts) == vms
        rd["values_ok"] = sum(int(p.get("values_ok") or 0) for _, p in parts)
        rd["stale"] = [dict(s, vm=vm) for vm, p in parts for s in p.get("stale") or []]
        rd["elapsed_ms"] = max((p.get("elapsed_ms") or 0) for _, p in parts)
        rounds.append(rd)
    merged["rounds"] = rounds
    return merged


def _vm_of(r: dict[str, Any]) -> dict[str, Any]:
    """Who is who in a VMM process: a lockup report names a thread (vCPU) id."""
    return {"vm": r.get("vm", 0), "pid": r.get("pid"), "vcpu_tids": r.get("vcpu_tids") or [],
            "vcpus": r.get("vcpus"), "coherent": r.get("coherent")}


def _measured(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Round 0 is a warm-up when there are more (see _latency)."""
    return rounds[1:] if len(rounds) > 1 else rounds


def _block_costs(rounds: list[dict[str, Any]]) -> BlockCosts:
    """many-blocks: what each block's exec fault cost (the slowest vCPU on it, median
    over measured rounds), the running total against the number of blocks, and the
    least-squares slope of that total: the cost of making one more block executable."""
    per_round = []
    for rd in _measured(rounds):
        rows = [row for row in rd.get("block_fault_us") or [] if row]
        if not rows:
            continue
        width = max(len(row) for row in rows)
        per_round.append([
            max((row[b] for row in rows if b < len(row) and row[b] is not None), default=None)
            for b in range(width)
        ])
    if not per_round:
        return BlockCosts()
    width = max(len(c) for c in per_round)
    cost = []
    for b in range(width):
        seen = [v for c in per_round if b < len(c) and (v := c[b]) is not None]
        cost.append(round(statistics.median(seen) / 1000.0, 3) if seen else None)
    known = [c for c in cost if c is not None]
    cumulative = [round(sum(known[: i + 1]), 3) for i in range(len(known))]
    return BlockCosts(cost, cumulative, slope(cumulative))


def slope(totals: list[float]) -> float | None:
    """Least-squares slope of totals[m-1] against m = 1..M."""
    n = len(totals)
    if n < 2:
        return None
    xs = range(1, n + 1)
    mx, my = (n + 1) / 2, sum(totals) / n
    den = sum((x - mx) ** 2 for x in xs)
    return round(sum((x - mx) * (y - my) for x, y in zip(xs, totals, strict=True)) / den, 3)


def _storm(rounds: list[dict[str, Any]], r: dict[str, Any]) -> Storm:
    """guest-icache-storm: the storm vCPUs' side, one I-cache maintenance iteration."""
    maxes = [max(v) for rd in _measured(rounds)
             if (v := [x for x in rd.get("storm_max_us") or [] if x is not None])]
    means = [x for rd in _measured(rounds) for x in rd.get("storm_mean_us") or []
             if x is not None]
    return Storm(
        vcpus=r.get("storm"),
        iteration_max_ms=round(statistics.median(maxes) / 1000.0, 3) if maxes else None,
        iteration_mean_ms=round(statistics.median(means) / 1000.0, 3) if means else None,
        range_bytes=(rounds[-1] or {}).get("storm_range_bytes") if rounds else None,
    )


def _ms(values_us: list[Any] | None) -> list[float]:
    return [round(float(v) / 1000.0, 3) for v in values_us or [] if v is not None]


def _latency(rounds: list[dict[str, Any]], key: str) -> Latency:
    """Exec-fault latency over rounds. Round 0 is a warm-up when there are more: the
    first fault after boot also pays lockdep's one-time validation of the fault path's
    lock chains (measured: 30-45 ms on the shipped kernel, the size of the bug's own
    signal). `max` is the median over the measured rounds of the max over vCPUs, so
    one preempted vCPU in one round cannot fake a 10x signal."""
    measured = _measured(rounds)
    per_round = [_ms(r.get(key)) for r in measured]
    round_max = [max(v) for v in per_round if v]
    every = [x for v in per_round for x in v]
    warmup = _ms(rounds[0].get(key)) if len(rounds) > 1 else []
    return Latency(
        per_vcpu=per_round[-1] if per_round else [],
        max=round(statistics.median(round_max), 3) if round_max else None,
        median=round(statistics.median(every), 3) if every else None,
        per_round_max=round_max,
        warmup_max=max(warmup) if warmup else None,
    )


def json_after(line: str, marker: str) -> dict[str, Any] | None:
    pos = line.find(marker)
    brace = line.find("{", pos)
    if brace < 0:
        return None
    try:
        obj, _ = _DECODER.raw_decode(line, brace)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


# What failslab prints for each allocation it fails (verbose >= 1).
FAULT_INJECTED = "FAULT_INJECTION: forcing a failure."


def parse(text: str) -> ConsoleLines:
    w = ConsoleLines()
    injected = 0
    for line in text.splitlines():
        if FAULT_INJECTED in line:
            injected += 1
        if "S2FAULT-" not in line:
            continue
        if "S2FAULT-INIT" in line:
            w.init = json_after(line, "S2FAULT-INIT") or w.init
        elif "S2FAULT-RESULT" in line:
            obj = json_after(line, "S2FAULT-RESULT")
            if obj is not None:
                w.results.append(obj)
            else:
                w.errors.append("unreadable S2FAULT-RESULT line")
        elif "S2FAULT-POST" in line:
            w.post = json_after(line, "S2FAULT-POST") or w.post
        elif "S2FAULT-ERROR" in line:
            w.errors.append(line.split("S2FAULT-ERROR", 1)[1].strip())
        elif "S2FAULT-DONE" in line:
            w.done = True
    for r in w.results:
        # The kernel's own report is the count: failslab's `times` budget is checked
        # and decremented apart, so two CPUs can both take the last failure.
        if isinstance(r.get("fault_injection"), dict) and r["fault_injection"].get("armed"):
            r["fault_injection"]["failures"] = injected
    return w
