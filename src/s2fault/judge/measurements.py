"""What a run measured: the workload's summary of its console (lines.ConsoleLines
.summary()), as a verdict keeps it and check.json writes it (a cell's "workload").

Each record's to_dict() is the JSON, key for key and in order; from_dict() reads it
back, and a key an older check.json lacks reads as not measured.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Self


class FlatRecord:
    """A dataclass of JSON values (numbers, strings, lists of them): its JSON is its
    fields, in their order; read back, a key that is missing or null takes the field's
    default (an older file lacks what was added since)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        given = {}
        for f in fields(cls):
            value = d.get(f.name)
            if value is not None:
                given[f.name] = value
            elif f.default is MISSING and f.default_factory is MISSING:
                given[f.name] = None  # a field with no default: not known
        return cls(**given)


@dataclass(frozen=True)
class Latency(FlatRecord):
    """Exec-fault latency over a run's rounds, in ms (lines._latency): `max` is the
    median over the measured rounds of the max over vCPUs; round 0 is a warm-up when
    there are more (`warmup_max`)."""

    per_vcpu: list[float] = field(default_factory=list)  # the last measured round's
    max: float | None = None
    median: float | None = None
    per_round_max: list[float] = field(default_factory=list)
    warmup_max: float | None = None


@dataclass(frozen=True)
class BlockCosts(FlatRecord):
    """many-blocks: each block's exec-fault cost, their running total, and its slope
    (the cost of one more executable block), in ms."""

    cost_ms: list[float | None] = field(default_factory=list)
    cumulative_ms: list[float] = field(default_factory=list)
    slope_ms: float | None = None


@dataclass(frozen=True)
class Storm(FlatRecord):
    """guest-icache-storm: the storm vCPUs' side, one I-cache maintenance iteration."""

    vcpus: int | None = None
    iteration_max_ms: float | None = None
    iteration_mean_ms: float | None = None
    range_bytes: int | None = None


@dataclass(frozen=True)
class FaultInjection(FlatRecord):
    """alloc-failure: whether failslab was armed under the fault path, where, how many
    failures were asked for, and how many the kernel reported (lines.parse)."""

    armed: bool = False
    window: str | None = None
    requested: int | None = None
    failures: int | None = None


@dataclass(frozen=True)
class VmProcess(FlatRecord):
    """Who is who in one VMM process: a lockup report names a thread (vCPU) id."""

    vm: int = 0
    pid: int | None = None
    vcpu_tids: list[int] = field(default_factory=list)
    vcpus: int | None = None
    coherent: bool | None = None


@dataclass(frozen=True)
class StaleExecution:
    """A vCPU that executed something other than what the VMM had just written: the
    value it got, the round's (`expected`) and the previous round's (stale I-cache when
    it got that); `block` in a many-blocks run, `vm` in a multi-VM one."""

    vcpu: int | None
    got: str | None
    expected: str | None
    previous: str | None
    round: int
    block: int | None = None
    vm: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return ({"vcpu": self.vcpu} | ({"block": self.block} if self.block is not None else {})
                | {"got": self.got, "expected": self.expected, "previous": self.previous}
                | ({"vm": self.vm} if self.vm is not None else {}) | {"round": self.round})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StaleExecution:
        return cls(d.get("vcpu"), d.get("got"), d.get("expected"), d.get("previous"),
                   d.get("round", 0), d.get("block"), d.get("vm"))


@dataclass(frozen=True)
class HardwareEquivalent(FlatRecord):
    """A calibrated model's run in the hardware's terms (runner.hardware_equivalent)."""

    scale: float | None = None
    worst_fault_ms: float | None = None
    whole_cache_invalidations: int | None = None
    whole_cache_ms: float | None = None
    worst_fault_priced_ms: float | None = None


@dataclass(frozen=True)
class Measurements:
    """A run's workload summary. `blocks`, `storm` and `selftests` only for the
    workloads that have them; `hardware_equivalent` only for a calibrated model."""

    vcpus: int | None = None
    block_bytes: int | None = None
    page_size: int | None = None
    rounds: int = 0
    exec_fault_ms: Latency = field(default_factory=Latency)
    exec_fault_wall_ms: Latency = field(default_factory=Latency)
    coherent: bool | None = None
    dic: int | None = None
    ctr_el0: str | None = None
    errors: list[str] = field(default_factory=list)
    runs: int = 0
    vms: int = 1
    remap: str | None = "memslot"
    stale: list[StaleExecution] = field(default_factory=list)
    per_vm: list[VmProcess] = field(default_factory=list)
    first_touch: str | None = "data"
    # vCPUs released into their exec fault that never came back (a timeout)
    stuck_vcpus: list[int] = field(default_factory=list)
    fault_injection: FaultInjection | None = None
    # kprobe hits of the stage-2 I-cache invalidations (init.c), when counted
    icache: dict[str, Any] | None = None
    blocks: BlockCosts | None = None
    storm: Storm | None = None
    # the kernel's own tests, one record each as selftests.parse gives them
    selftests: list[dict[str, Any]] | None = None
    hardware_equivalent: HardwareEquivalent | None = None

    def to_dict(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.blocks is not None:
            extra["blocks"] = self.blocks.to_dict()
        if self.storm is not None:
            extra["storm"] = self.storm.to_dict()
        if self.selftests is not None:
            extra["selftests"] = self.selftests
        out = extra | {
            "vcpus": self.vcpus,
            "block_bytes": self.block_bytes,
            "page_size": self.page_size,
            "rounds": self.rounds,
            "exec_fault_ms": self.exec_fault_ms.to_dict(),
            "exec_fault_wall_ms": self.exec_fault_wall_ms.to_dict(),
            "coherent": self.coherent,
            "dic": self.dic,
            "ctr_el0": self.ctr_el0,
            "errors": self.errors,
            "runs": self.runs,
            "vms": self.vms,
            "remap": self.remap,
            "stale": [s.to_dict() for s in self.stale],
            "per_vm": [p.to_dict() for p in self.per_vm],
            "first_touch": self.first_touch,
            "stuck_vcpus": self.stuck_vcpus,
            "fault_injection": (self.fault_injection.to_dict()
                                if self.fault_injection is not None else None),
            "icache": self.icache,
        }
        if self.hardware_equivalent is not None:
            out["hardware_equivalent"] = self.hardware_equivalent.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurements:
        def record(key: str, kind: Any) -> Any:
            value = d.get(key)
            return kind.from_dict(value) if isinstance(value, dict) else None

        return cls(
            vcpus=d.get("vcpus"), block_bytes=d.get("block_bytes"), page_size=d.get("page_size"),
            rounds=d.get("rounds") or 0,
            exec_fault_ms=Latency.from_dict(d.get("exec_fault_ms") or {}),
            exec_fault_wall_ms=Latency.from_dict(d.get("exec_fault_wall_ms") or {}),
            coherent=d.get("coherent"), dic=d.get("dic"), ctr_el0=d.get("ctr_el0"),
            errors=list(d.get("errors") or []), runs=d.get("runs") or 0, vms=d.get("vms", 1),
            remap=d.get("remap", "memslot"),
            stale=[StaleExecution.from_dict(s) for s in d.get("stale") or []],
            per_vm=[VmProcess.from_dict(p) for p in d.get("per_vm") or []],
            first_touch=d.get("first_touch", "data"),
            stuck_vcpus=list(d.get("stuck_vcpus") or []),
            fault_injection=record("fault_injection", FaultInjection),
            icache=d.get("icache"), blocks=record("blocks", BlockCosts),
            storm=record("storm", Storm),
            selftests=list(d["selftests"]) if d.get("selftests") is not None else None,
            hardware_equivalent=record("hardware_equivalent", HardwareEquivalent))
