"""Every workload against every variant, for real: the review's questions answered by
runs, each compared with what the variants declare (patches/*/variant.toml).

Slow: the kernels are the matrix's own (cached after the first build); each
functional cell is one boot of a few seconds, the dilated multi-VM cells tens of
seconds each."""

from __future__ import annotations

import json

import pytest

from conftest import s2fault
from s2fault import variants, workloads

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
