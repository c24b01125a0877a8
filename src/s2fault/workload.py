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

_DECODER = json.JSONDecoder()


@dataclass
class Workload:
    init: dict | None = None
    results: list[dict] = field(default_factory=list)
    post: dict | None = None
    errors: list[str] = field(default_factory=list)
    done: bool = False

    @property
    def result(self) -> dict | None:
        return self.results[-1] if self.results else None

    def summary(self) -> dict:
        """The `workload` object of a verdict."""
        r = self.result or {}
        rounds = r.get("rounds") or [r]
        return {
            "vcpus": r.get("vcpus"),
            "block_bytes": r.get("block_bytes"),
            "page_size": r.get("page_size"),
            "rounds": len(rounds),
            "exec_fault_ms": _latency(rounds, "exec_fault_us"),
            "exec_fault_wall_ms": _latency(rounds, "exec_fault_wall_us"),
            "coherent": r.get("coherent"),
            "dic": r.get("dic"),
            "ctr_el0": r.get("ctr_el0"),
            "errors": list(r.get("errors") or []),
            "runs": len(self.results),
        }


def _ms(values_us) -> list[float]:
    return [round(float(v) / 1000.0, 3) for v in values_us or [] if v is not None]


def _latency(rounds: list[dict], key: str) -> dict:
    """Exec-fault latency over rounds. Round 0 is a warm-up when there are more: the
    first fault after boot also pays lockdep's one-time validation of the fault path's
    lock chains (measured: 30-45 ms on the shipped kernel, the size of the bug's own
    signal). `max` is the median over the measured rounds of the max over vCPUs, so
    one preempted vCPU in one round cannot fake a 10x signal."""
    measured = rounds[1:] if len(rounds) > 1 else rounds
    per_round = [_ms(r.get(key)) for r in measured]
    round_max = [max(v) for v in per_round if v]
    every = [x for v in per_round for x in v]
    warmup = _ms(rounds[0].get(key)) if len(rounds) > 1 else []
    return {
        "per_vcpu": per_round[-1] if per_round else [],
        "max": round(statistics.median(round_max), 3) if round_max else None,
        "median": round(statistics.median(every), 3) if every else None,
        "per_round_max": round_max,
        "warmup_max": max(warmup) if warmup else None,
    }


def _json_after(line: str, marker: str) -> dict | None:
    pos = line.find(marker)
    brace = line.find("{", pos)
    if brace < 0:
        return None
    try:
        obj, _ = _DECODER.raw_decode(line, brace)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def parse(text: str) -> Workload:
    w = Workload()
    for line in text.splitlines():
        if "S2FAULT-" not in line:
            continue
        if "S2FAULT-INIT" in line:
            w.init = _json_after(line, "S2FAULT-INIT") or w.init
        elif "S2FAULT-RESULT" in line:
            obj = _json_after(line, "S2FAULT-RESULT")
            if obj is not None:
                w.results.append(obj)
            else:
                w.errors.append("unreadable S2FAULT-RESULT line")
        elif "S2FAULT-POST" in line:
            w.post = _json_after(line, "S2FAULT-POST") or w.post
        elif "S2FAULT-ERROR" in line:
            w.errors.append(line.split("S2FAULT-ERROR", 1)[1].strip())
        elif "S2FAULT-DONE" in line:
            w.done = True
    return w
