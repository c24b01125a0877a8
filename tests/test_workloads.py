"""The workload axis in pure logic: registry, declarations per workload, how results of
multi-VM, many-blocks, storm and coherence runs are read and compared. No QEMU here;
tests/test_workload_matrix.py runs them for real."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from test_verdict import verdict_of

from s2fault.errors import InputError
from s2fault.guest import workloads
from s2fault.judge import lines
from s2fault.judge.verdict import ReportedSplat
from s2fault.kernel import variants
from s2fault.machine import profiles as profile
from s2fault.matrix.cell import Cell, compare
from s2fault.outcome import Outcome

# A real 5-round capture (the fix-reverted kernel, functional, no splat).
REAL = (Path(__file__).parent / "golden" / "real-arm64-fix-reverted-functional.log").read_text()


def console_with(*results: dict) -> str:
    """The real upstream console with its result line replaced by `results`."""
    out = []
    for line in REAL.splitlines():
        if "S2FAULT-RESULT " in line:
            out += ["S2FAULT-RESULT " + json.dumps(r) for r in results]
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def base_result() -> dict:
    line = next(ln for ln in REAL.splitlines() if "S2FAULT-RESULT " in ln)
    return json.loads(line.split("S2FAULT-RESULT ", 1)[1])


def test_registry_names_modes_and_shapes():
    assert workloads.names()[0] == "exec-fault"
    assert [w.name for w in workloads.select(None)] == ["exec-fault"]
    assert len(workloads.select(["all"])) == len(workloads.WORKLOADS)
    with pytest.raises(InputError, match="unknown workload 'nope' \\(valid: exec-fault"):
        workloads.get("nope")
    multi = workloads.get("multi-vm")
    assert "dilated" in multi.modes and multi.profile_changes("dilated")["vms"] == 2
    prof = profile.mode("functional").with_(**workloads.get("many-blocks").profile_changes(
        "functional"))
    line = profile.kernel_cmdline(prof, 512 << 20)
    assert f"hugepages={prof.blocks}" in line and f"s2fault.blocks={prof.blocks}" in line
    # The plain run's command line is what it always was.
    assert "s2fault.blocks" not in profile.kernel_cmdline(profile.mode("functional"), 512 << 20)


def test_workload_declarations_override_the_mode(tmp_path, monkeypatch):
    folder = tmp_path / "patches" / "demo"
    folder.mkdir(parents=True)
    (folder / "variant.toml").write_text(
        "[expect.functional]\nlatency_ratio_min = 10.0\n"
        "[expect.functional.workload.many-blocks]\nslope_ratio_min = 20.0\n"
        "[expect.functional.workload.kvm-selftests]\nlatency_ratio_min = 0\n"
        "[expect.dilated.workload.multi-vm]\n"
        "splats = [{ kind = 'soft_lockup', processes_min = 2 }]\n"
    )
    monkeypatch.setattr("s2fault.project.patches_dir", lambda: tmp_path / "patches")
    v = variants.load("demo")
    assert v.expectation("functional").latency_ratio_min == 10.0
    blocks = v.expectation("functional", None, "many-blocks")
    assert blocks.latency_ratio_min == 10.0 and blocks.slope_ratio_min == 20.0
    assert not v.expectation("functional", None, "kvm-selftests").latency_ratio_min
    multi = v.expectation("dilated", None, "multi-vm")
    assert multi.splats[0].processes_min == 2 and multi.clean is False
    assert "in >=2 processes" in multi.describe()
    assert v.expectation("dilated").clean is True
    (folder / "variant.toml").write_text("[expect.functional.workload.bogus]\nclean = true\n")
    with pytest.raises(InputError, match=r"workload.bogus\]: unknown workload"):
        variants.load("demo")


def test_multi_vm_lines_are_merged_vm_by_vm():
    r0 = base_result() | {"vm": 0, "vms": 2, "vcpus": 8}
    r1 = base_result() | {"vm": 1, "vms": 2, "vcpus": 8}
    r1["rounds"][2] = dict(r1["rounds"][2], exec_fault_us=[500000.0] * 8)
    w = lines.parse(console_with(r1, r0))
    merged = w.result
    assert merged["vcpus"] == 16 and merged["coherent"] is True
    assert len(merged["rounds"][0]["exec_fault_us"]) == 16
    assert [p["vm"] for p in merged["per_vm"]] == [0, 1]
    assert 500.0 in w.summary().exec_fault_ms.per_round_max
    assert verdict_of(console_with(r0, r1)).verdict == "pass"
    # A VM that printed nothing is not a pass.
    v = verdict_of(console_with(r0))
    assert v.verdict == "error" and "vm 1: no result line" in v.reason


def test_many_blocks_cost_and_slope():
    r = base_result() | {"blocks": 4}
    # 3 rounds: round 0 is a warm-up and is left out.
    costs = [[90000.0] * 4, [1000.0, 2000.0, 3000.0, 4000.0], [1000.0, 2000.0, 3000.0, 4000.0]]
    r["rounds"] = [dict(r["rounds"][0], block_fault_us=[row, [None] * 4]) for row in costs]
    s = lines.parse(console_with(r)).summary().blocks
    assert s.cost_ms == [1.0, 2.0, 3.0, 4.0]
    assert s.cumulative_ms == [1.0, 3.0, 6.0, 10.0]
    assert s.slope_ms == 3.0
    assert lines.slope([5.0]) is None


def test_slope_ratio_against_the_reference():
    def run(per_block_us):
        r = base_result() | {"blocks": 3}
        r["rounds"] = [dict(rd, block_fault_us=[[per_block_us] * 3]) for rd in r["rounds"]]
        return verdict_of(console_with(r))

    exp = variants.Expectation(slope_ratio_min=10.0, latency_reference="upstream")
    ref = Cell("upstream", "functional", variants.Expectation(),
                      workload="many-blocks")
    ref.verdicts.append(run(300.0))
    passed, observed, _ = compare(exp, run(150000.0), ref)
    assert passed is Outcome.PASS and "ms/block" in observed
    failed, _, why = compare(exp, run(900.0), ref)
    assert failed is Outcome.FAIL and "cost per block" in why and "expected >= 10x" in why
    assert compare(exp, run(150000.0), None)[0] is Outcome.ERROR


def test_splat_in_too_few_processes_is_a_mismatch():
    spec = variants.SplatSpec("soft_lockup", processes_min=2)
    exp = variants.Expectation(splats=(spec,), clean=False)
    r0 = base_result() | {"vm": 0, "vms": 2, "pid": 39, "vcpu_tids": [43, 44]}
    r1 = base_result() | {"vm": 1, "vms": 2, "pid": 40, "vcpu_tids": [45, 46]}
    v = verdict_of(console_with(r0, r1))
    lockup = ReportedSplat.from_dict({"kind": "soft_lockup", "title": "soft lockup",
                                      "function": "icache_inval_pou"})
    # Two vCPU threads of one VMM process are one process.
    v.splats = [replace(lockup, pid=43), replace(lockup, pid=44)]
    m, _, why = compare(exp, v, None)
    assert m is Outcome.FAIL and "seen in 1 process(es) (VM 0)" in why
    v.splats.append(replace(lockup, pid=46))
    assert compare(exp, v, None)[0] is Outcome.PASS


def test_stale_execution_is_a_failure_naming_the_round():
    r = base_result() | {"remap": "dontneed", "coherent": False}
    prev, cur = r["rounds"][2]["nonce"], r["rounds"][3]["nonce"]
    r["rounds"][3] = dict(r["rounds"][3], coherent=False, values_ok=7, stale=[
        {"vcpu": 5, "got": prev, "expected": cur, "previous": prev}])
    v = verdict_of(console_with(r))
    assert v.verdict == "fail"
    assert v.reason.startswith("incoherent: round 3: vCPU 5 executed the previous round's code")
    assert v.workload.stale[0].round == 3


def test_storm_side_is_summarised():
    r = base_result() | {"storm": 4}
    for rd in r["rounds"]:
        rd["storm_max_us"] = [None] * 4 + [120.0, 80.0, 95.0, 110.0]
        rd["storm_mean_us"] = [None] * 4 + [40.0] * 4
        rd["storm_range_bytes"] = 1 << 20
    s = lines.parse(console_with(r)).summary().storm
    assert s.to_dict() == {"vcpus": 4, "iteration_max_ms": 0.12, "iteration_mean_ms": 0.04,
                           "range_bytes": 1 << 20}


def test_report_names_the_workload_and_plots_cost_per_block(tmp_path):
    from s2fault import report
    from s2fault.report import page

    def row(variant, per_block_ms):
        cum = [round(per_block_ms * m, 3) for m in range(1, 5)]
        return {"variant": variant, "mode": "functional", "workload_name": "many-blocks",
                "match": True, "why": "", "observed": "clean", "runs": 1,
                "declared": {"summary": "clean"},
                "workload": {"blocks": {"cumulative_ms": cum, "slope_ms": per_block_ms}}}

    rows = [row("upstream", 0.3), row("fix-reverted", 150.0)]
    html = page.render_html(rows, {"workloads": ["many-blocks"]}, tmp_path)
    assert "<th>workload</th>" in html and "<td>many-blocks</td>" in html
    assert html.count('<polyline class="series"') == 2
    assert 'data-variant="fix-reverted" data-slope-ms="150.0"' in html
    report.write_tap(rows, tmp_path / "t.tap")
    assert "ok 1 - upstream.many-blocks.functional" in (tmp_path / "t.tap").read_text()
    rows[0] |= {"build": {"seconds": 2.0}, "run_seconds": 3.5}
    report.write_junit(rows, tmp_path / "j.xml")
    junit = (tmp_path / "j.xml").read_text()
    assert 'name="many-blocks.functional" time="5.50"' in junit


def test_selftests_result_is_judged_by_its_statuses():
    def result(*statuses):
        return {"workload": "kvm-selftests", "vcpus": 4, "dic": 0, "ctr_el0": "0x9444c004",
                "errors": [], "selftests": [
                    {"name": f"t{i}", "args": [], "status": st, "exit": 0 if st == "pass" else 1,
                     "seconds": 1.0, "skip_reason": "", "assertion": "lib/x.c:1: boom"}
                    for i, st in enumerate(statuses)]}

    ok = verdict_of(console_with(result("pass", "pass")))
    assert ok.verdict == "pass" and "2 selftests passed" in ok.reason
    bad = verdict_of(console_with(result("pass", "fail")))
    assert bad.verdict == "fail" and bad.reason.startswith("selftest t1 exit 1")
    assert verdict_of(console_with(result("pass", "timeout"))).verdict == "fail"
    assert verdict_of(console_with(result())).verdict == "error"
    assert verdict_of(console_with(result("pass") | {"dic": 1})).verdict == "skip"


def test_alloc_failure_lets_the_vmm_name_stuck_vcpus_before_the_machine_gives_up():
    """failslab dumps a stack by design; the machine's after-splat wait must outlast the
    VMM's own timeout, or QEMU is killed before the stuck vCPUs are listed."""
    from s2fault.machine import profiles

    wl = workloads.get("alloc-failure")
    prof = profiles.mode("functional").with_(**wl.profile_changes("functional"))
    assert prof.first_touch == "exec" and prof.fail_alloc == 1
    t = prof.timeouts()
    assert t.after_splat > prof.vmm_timeout and t.no_output > prof.vmm_timeout
    plain = profiles.mode("functional").timeouts()
    assert plain.after_splat < t.after_splat  # only the fault-injection run waits longer
    line = profiles.kernel_cmdline(prof, 512 << 20)
    assert "s2fault.first_touch=exec" in line and "s2fault.fail_alloc=1" in line
    assert "first_touch" not in profiles.kernel_cmdline(profiles.mode("functional"), 512 << 20)
