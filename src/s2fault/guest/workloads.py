"""Workloads: the review's questions, each a named way to drive the stage-2 fault path.

A workload is data: which profile fields it changes, in which modes it runs and
what it measures. The VMM (guests/vmm.c) and init implement the shapes; the
matrix runs every workload against every variant and compares what it saw with
the variant's declaration (variant.toml: `[expect.<mode>.workload.<name>]`
overrides keys of `[expect.<mode>]` for that workload).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s2fault.errors import InputError
from s2fault.guest import selftests
from s2fault.source import Source

DEFAULT = "exec-fault"


@dataclass(frozen=True)
class Workload:
    name: str
    question: str  # what the workload answers, in the review's words
    modes: tuple[str, ...]  # the matrix modes it is meaningful in
    # mode ("*": any) -> profile changes
    shape: dict[str, dict[str, Any]] = field(default_factory=dict)
    measures: tuple[str, ...] = ("exec_fault",)  # metrics its result carries

    def profile_changes(self, mode: str) -> dict[str, Any]:
        return self.shape.get("*", {}) | self.shape.get(mode, {})

    @property
    def needs_source(self) -> bool:
        """Whether extra_initramfs() builds from the kernel's source."""
        return "selftests" in self.measures

    def extra_initramfs(self, source: Source | str | None) -> list[Path]:
        """Archives the guest needs beside the base image, built from the kernel's own
        source (the selftests must match the kernel they run on): the command's
        resolved source, the one its kernels were built from."""
        if self.needs_source:
            return [selftests.build(source)]
        return []


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "exec-fault",
            "N vCPUs of one VM take execute-permission faults on one huge block at once.",
            ("functional", "dilated", "altra-max"),
        ),
        Workload(
            "multi-vm",
            "What happens when another VM does the same: K VMs (VMM processes), each with its "
            "own huge block, released together.",
            ("functional", "dilated"),
            {"functional": {"vms": 2, "vcpus": 4}, "dilated": {"vms": 2}},
        ),
        Workload(
            "guest-icache-storm",
            "What happens when vCPUs perform I-cache invalidation in the guest while others "
            "take exec faults.",
            ("functional",),
            {"*": {"vcpus": 8, "storm": 4}},
            ("exec_fault", "storm"),
        ),
        Workload(
            "coherence-rounds",
            "Is the code the guest executes the code the host wrote: the block is rewritten and "
            "its mapping dropped (MADV_DONTNEED) between rounds.",
            ("functional",),
            {"*": {"remap": "dontneed", "rounds": 10}},
        ),
        Workload(
            "exec-first-touch",
            "The stage-2 map path with exec: the vCPUs' first access to the block is an "
            "instruction fetch, so KVM invalidates the I-cache in stage2_map_walker_try_leaf() "
            "with the PTE already broken (locked), not in the permission-relaxing walker.",
            ("functional", "dilated"),
            {"*": {"first_touch": "exec"}},
        ),
        Workload(
            "alloc-failure",
            "Why the fault path must not allocate: on the map path (first touch is a fetch) "
            "the next slab allocation made under the KVM fault handler fails (failslab, "
            "once). A kernel that does not allocate there sees nothing; one that does must "
            "survive the failure.",
            ("functional",),
            # Failslab fires in round 0; one measured round after it. A vCPU that does not
            # come back within the VMM's 25 s (setup and arming included) is stuck: a
            # whole run took 4-11 s here, the slowest exec fault ~0.5 s (fix-reverted,
            # loaded machine).
            {"*": {"first_touch": "exec", "fail_alloc": 1, "rounds": 2, "vmm_timeout": 25}},
            ("exec_fault", "fault_injection"),
        ),
        Workload(
            "many-blocks",
            "How fault cost grows with the memory made executable: M huge blocks exec-faulted "
            "in turn.",
            ("functional",),
            # 5 rounds: 4 measured; with 2 one descheduled vCPU moved a block's median
            {"*": {"blocks": 4, "rounds": 5}},
            ("exec_fault", "blocks"),
        ),
        Workload(
            "kvm-selftests",
            "The kernel's own KVM selftests from the same tree, run inside the booted kernel.",
            ("functional",),
            # The runner's budget lets every test use its own timeout.
            {"*": {"program": "s2fault-ksft", "rounds": 1,
                   "vmm_timeout": selftests.budget_seconds()}},
            ("selftests",),
        ),
    )
}


def names() -> list[str]:
    return list(WORKLOADS)


def get(name: str) -> Workload:
    if name not in WORKLOADS:
        raise InputError(f"unknown workload '{name}' (valid: {', '.join(WORKLOADS)})")
    return WORKLOADS[name]


def select(requested: list[str] | None) -> list[Workload]:
    """The workloads a command line names ('all' for every one; default exec-fault)."""
    if not requested:
        return [WORKLOADS[DEFAULT]]
    if "all" in requested:
        return list(WORKLOADS.values())
    return [get(n) for n in dict.fromkeys(requested)]
