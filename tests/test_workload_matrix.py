"""Every workload against every variant, for real: the review's questions answered by
runs, each compared with what the variants declare (patches/*/variant.toml).

Slow: the kernels are the matrix's own (cached after the first build); each
functional cell is one boot of a few seconds, the dilated multi-VM cells tens of
seconds each."""

from __future__ import annotations

import json

import pytest

from conftest import s2fault
from s2fault.guest import workloads
from s2fault.kernel import variants

pytestmark = pytest.mark.slow

FUNCTIONAL = [w.name for w in workloads.WORKLOADS.values()
              if w.name != "exec-fault" and "functional" in w.modes]


def _rows(results) -> dict[tuple[str, str, str], dict]:
    rows = json.loads((results / "check.json").read_text())["cells"]
    return {(r["variant"], r["workload_name"], r["mode"]): r for r in rows}


@pytest.fixture(scope="module")
def functional(tmp_path_factory):
    """One `check` of every workload but exec-fault (tests/test_matrix.py runs that one)
    on every variant, functional mode."""
    results = tmp_path_factory.mktemp("workloads")
    args = ["check", "--mode", "functional", "--results", str(results)]
    for name in FUNCTIONAL:
        args += ["--workload", name]
    r = s2fault(*args)
    return r, results


def test_every_workload_matches_every_variant(functional):
    r, results = functional
    assert r.returncode == 0, r.stdout + r.stderr
    rows = _rows(results)
    for variant in variants.names():
        for wl in FUNCTIONAL:
            row = rows[(variant, wl, "functional")]
            assert row["match"] is True, (variant, wl, row["why"])
    assert "WORKLOAD" in r.stdout  # the table names the workload of each row


def test_many_blocks_slope_is_steeper_without_the_fix(functional):
    _, results = functional
    rows = _rows(results)
    up = rows[("upstream", "many-blocks", "functional")]["workload"]["blocks"]
    rev = rows[("fix-reverted", "many-blocks", "functional")]["workload"]["blocks"]
    assert len(up["cumulative_ms"]) == len(rev["cumulative_ms"]) >= 3
    # Line-by-line invalidation costs the same for every block, so the total grows by
    # that much per block; with the fix each block costs a full I-cache flush (cheap).
    assert rev["slope_ms"] > 10 * up["slope_ms"], (up, rev)
    html = (results / "report.html").read_text()
    assert 'id="blocks-plot"' in html and 'data-variant="fix-reverted"' in html


def test_multi_vm_runs_every_vm(functional):
    _, results = functional
    for variant in ("upstream", "fix-reverted"):
        w = _rows(results)[(variant, "multi-vm", "functional")]["workload"]
        assert w["vms"] == 2 and w["coherent"] is True


def test_coherence_rounds_dropped_and_rewrote_the_block(functional):
    _, results = functional
    w = _rows(results)[("upstream", "coherence-rounds", "functional")]["workload"]
    assert w["remap"] == "dontneed" and w["rounds"] >= 10
    assert w["stale"] == [] and w["coherent"] is True


def test_storm_measured_both_sides(functional):
    _, results = functional
    w = _rows(results)[("fix-reverted", "guest-icache-storm", "functional")]["workload"]
    assert w["storm"]["vcpus"] and w["storm"]["iteration_max_ms"] is not None
    assert w["exec_fault_ms"]["max"] is not None


def test_multi_vm_dilated_locks_up_in_more_than_one_vm(tmp_path):
    r = s2fault("check", "--workload", "multi-vm", "--mode", "dilated",
                "--variant", "upstream", "--variant", "fix-reverted", "--results", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    row = _rows(tmp_path)[("fix-reverted", "multi-vm", "dilated")]
    pids = {s["pid"] for s in row["splats"] if s["kind"] == "soft_lockup"}
    assert len(pids) >= 2, row["splats"]
    assert not _rows(tmp_path)[("upstream", "multi-vm", "dilated")]["splats"]


def test_exec_first_touch_takes_the_map_path(functional):
    """No store before the fetch: KVM maps the block executable in its map walker."""
    _, results = functional
    rows = _rows(results)
    for variant in ("upstream", "fix-reverted"):
        w = rows[(variant, "exec-first-touch", "functional")]["workload"]
        assert w["first_touch"] == "exec" and w["coherent"] is True
    up = rows[("upstream", "exec-first-touch", "functional")]["workload"]["exec_fault_ms"]
    rev = rows[("fix-reverted", "exec-first-touch", "functional")]["workload"]["exec_fault_ms"]
    assert rev["max"] > 5 * up["max"], (up, rev)


def test_alloc_failure_tells_the_variants_apart(functional):
    """The allocation question answered by runs: the as-posted v1 never comes back from
    a failed kzalloc (its PTE stays locked), the cleaned-up port and the spinlock variant
    retry, and the variants that do not allocate under the walk have nothing to fail."""
    _, results = functional
    rows = _rows(results)

    def cell(variant):
        return rows[(variant, "alloc-failure", "functional")]

    posted = cell("interval-tree-v1-as-posted")
    assert posted["verdict"] == "fail" and posted["reason"].startswith("livelock: ")
    assert posted["workload"]["stuck_vcpus"] and posted["workload"]["fault_injection"][
        "failures"] >= 1
    for variant in ("interval-tree-v1", "interval-tree-spinlock"):
        w = cell(variant)["workload"]
        assert w["stuck_vcpus"] == [] and w["fault_injection"]["failures"] >= 1, variant
    for variant in ("upstream", "fix-reverted", "full-inval-always", "interval-tree-onstack"):
        assert cell(variant)["workload"]["fault_injection"]["failures"] == 0, variant


def test_spinlock_variant_names_the_allocation(functional):
    """v1's mutex reports first and hides the allocation's own report; without the mutex
    the might_sleep() that fires is might_alloc()'s."""
    _, results = functional
    rows = _rows(results)
    spin = rows[("interval-tree-spinlock", "exec-first-touch", "functional")]["splats"]
    v1 = rows[("interval-tree-v1", "exec-first-touch", "functional")]["splats"]
    sleeps = [s for s in spin if s["kind"] == "atomic_sleep"]
    assert sleeps and all("include/linux/sched/mm.h" in (s["where"] or "") for s in sleeps)
    assert "add_fault_range" in sleeps[0]["frames"] + [sleeps[0]["function"]]
    assert not [s for s in spin if s["subtype"] == "invalid_wait_context"]
    assert any("locking/mutex.c" in (s["where"] or "") for s in v1)


def test_exec_first_touch_dilated_locks_up_on_the_map_path(tmp_path):
    r = s2fault("check", "--workload", "exec-first-touch", "--mode", "dilated",
                "--variant", "upstream", "--variant", "fix-reverted", "--results", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    row = _rows(tmp_path)[("fix-reverted", "exec-first-touch", "dilated")]
    lockups = [s for s in row["splats"] if s["kind"] == "soft_lockup"]
    assert lockups and "stage2_map_walker_try_leaf" in sum(
        (s["frames"] for s in lockups), []), row["splats"]
    assert not _rows(tmp_path)[("upstream", "exec-first-touch", "dilated")]["splats"]
