"""The guest side of the workloads (guests/vmm.c, init.c): one real boot with every
shape option at once, read back through the result lines the VMM prints.

Under TCG the path is coherent and the upstream kernel fast, so these check the
contract with the Python side (keys, shapes, nulls, what is counted), not a kernel's
behaviour; the variants' behaviour is the matrix's job."""

from __future__ import annotations

from pathlib import Path

import pytest

from s2fault import runner
from s2fault.judge import lines as workload
from s2fault.machine import profiles

STORM_BATCH = 16  # guests/guest_abi.h: storm iterations are reported per batch
STORM_RANGE = 1 << 20  # vmm.c: a storm vCPU invalidates up to 1 MiB


def boot(build, tmp_path, **shape) -> tuple[workload.ConsoleLines, str]:
    prof = profiles.mode("functional").with_(**shape)
    v = runner.run_kernel(build.image, prof, runner.new_run_dir(tmp_path, "guest"), "guest")
    text = Path(v.artifacts["console_log"]).read_text(errors="replace")
    return workload.parse(text), text


@pytest.mark.slow
def test_every_shape_option_in_one_boot(upstream_build, tmp_path):
    # 2 VMs x 2 blocks = 4 hugepages of 512M. The memory is explicit: measured, the
    # boot-time reservation got only 3 of 4 pages in 4608 MiB, all 4 in 5120 MiB.
    w, _ = boot(upstream_build, tmp_path, vms=2, vcpus=3, storm=1, blocks=2,
             remap="dontneed", rounds=3, memory_mb=5120)
    assert w.post and w.post["vmm_exit"] == 0, w.post
    lines = sorted(w.results, key=lambda r: r["vm"])
    assert [r["vm"] for r in lines] == [0, 1]
    assert lines[0]["pid"] != lines[1]["pid"]
    tids = [t for r in lines for t in r["vcpu_tids"]]
    assert len(set(tids)) == 6, tids
    for r in lines:
        assert r["errors"] == [], r["errors"]
        assert (r["vms"], r["blocks"], r["storm"], r["remap"]) == (2, 2, 1, "dontneed")
        assert r["coherent"] is True and r["values_ok"] == 2
        nonces = [rd["nonce"] for rd in r["rounds"]]
        assert len(set(nonces)) == 3, nonces
        for rd in r["rounds"]:
            assert rd["stale"] == [] and rd["stores_lost"] == 0
            # vCPU 2 is the storm vCPU: no exec fault, storm figures; 0 and 1 the opposite.
            assert rd["exec_fault_us"][2] is None and rd["exec_fault_wall_us"][2] is None
            assert all(x > 0 for x in rd["exec_fault_us"][:2])
            assert rd["block_fault_us"][2] == [None, None]
            assert all(x > 0 for row in rd["block_fault_us"][:2] for x in row)
            assert [row[0] for row in rd["block_fault_us"]] == rd["exec_fault_us"]
            assert rd["storm_max_us"][:2] == [None, None]
            n = rd["storm_iterations"][2]
            assert n >= STORM_BATCH and n % STORM_BATCH == 0
            assert rd["storm_max_us"][2] >= rd["storm_mean_us"][2] > 0
            assert rd["storm_range_bytes"] == STORM_RANGE


@pytest.mark.slow
def test_storm_without_faulting_vcpus_is_a_usage_error(upstream_build, tmp_path):
    w, text = boot(upstream_build, tmp_path, vcpus=2, storm=2, rounds=1)
    assert w.post and w.post["vmm_exit"] == 2
    assert w.results == []
    assert "--storm 2 leaves none of the 2 vCPUs to take exec faults" in text
