"""Judging logic on real and edited console logs: pure functions, no QEMU."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import edit_marker_line
from s2fault import matrix
from s2fault.guest import workloads
from s2fault.judge import lines as workload
from s2fault.judge import starved_model
from s2fault.judge.rules import NEVER_REACHED_INIT, judge
from s2fault.judge.verdict import ReportedSplat
from s2fault.kernel import variants
from s2fault.machine import MachineRun
from s2fault.matrix.cell import Cell, compare, exit_code, judge_cells, table
from s2fault.matrix.cores import Cores
from s2fault.outcome import Outcome, exit_code_of, summary_line

DATA = Path(__file__).parent / "data"
REAL = (DATA / "upstream-functional-console.log").read_text()


def machine(outcome="exited", reason="QEMU exited", tmp=Path("/nonexistent")) -> MachineRun:
    return MachineRun(outcome, reason, 0, 3.0, tmp / "console.log", tmp / "qmp.log",
                      tmp / "err.log", ["qemu"])


def verdict_of(text: str, **kw):
    return judge(machine(**kw), text, workload.parse(text))


def edit_result(text: str, **changes) -> str:
    out = []
    for line in text.splitlines():
        if line.startswith("S2FAULT-RESULT "):
            obj = json.loads(line.split(" ", 1)[1])
            obj.update(changes)
            line = "S2FAULT-RESULT " + json.dumps(obj)
        out.append(line)
    return "\n".join(out) + "\n"


def test_real_upstream_log_passes():
    v = verdict_of(REAL)
    assert v.verdict == "pass", v.reason
    assert v.workload.vcpus == 8 and v.workload.coherent is True
    assert v.workload.exec_fault_ms.max == pytest.approx(27.222)
    assert v.preconditions.exec_faults_taken is True


def test_dic_set_is_not_applicable_never_pass():
    v = verdict_of(edit_result(REAL, dic=1, ctr_el0="0xb444c004"))
    # Not applicable here: a skip (kselftest SKIP, exit 4), never a pass.
    assert v.verdict == "skip" and v.reason.startswith("not applicable: CTR_EL0.DIC=1")
    assert v.exit_code == 4


def test_incoherent_value_is_a_kernel_failure():
    v = verdict_of(edit_result(REAL, coherent=False, values_ok=7))
    assert v.verdict == "fail" and "incoherent" in v.reason


def test_no_exec_fault_observed_cannot_be_judged():
    v = verdict_of(edit_result(REAL, exec_fault_us=[1.0] * 8))
    assert v.verdict == "error" and "no execute-permission fault" in v.reason


def test_vcpu_that_never_reported_is_not_judged_incoherent():
    text = edit_result(REAL, exec_fault_us=[None] * 8, coherent=False, values_ok=0,
                       errors=["timeout after 60 s in round 1 of 5: vcpus 0,1 did not finish"])
    v = verdict_of(text)
    assert v.verdict == "error" and "timeout after 60 s" in v.reason
    assert v.preconditions.exec_faults_taken is None


def test_failed_hugepage_reservation_is_infrastructure():
    text = REAL.replace('"hugepages_total":1', '"hugepages_total":0')
    v = verdict_of(text)
    assert v.verdict == "error" and "hugepage reservation failed" in v.reason


def test_lockdep_off_before_workload_is_not_clean():
    text = REAL.replace('"debug_locks":1,"kvm"', '"debug_locks":0,"kvm"')
    v = verdict_of(text)
    assert v.verdict == "fail" and "lockdep was already off" in v.reason


def test_no_kvm_names_the_options():
    v = verdict_of(REAL.replace('"kvm":true', '"kvm":false'))
    assert v.verdict == "error" and "CONFIG_KVM" in v.reason


def test_silent_guest_is_infrastructure():
    v = verdict_of("", outcome="no_output", reason="no output for 60 s (nothing printed at all)")
    assert v.verdict == "error" and "printed nothing" in v.reason


def test_truncated_run_without_result():
    cut = REAL.split("S2FAULT-RESULT")[0]
    v = verdict_of(cut, outcome="no_output", reason="no output for 60 s after 'x'")
    assert v.verdict == "error" and "no result" in v.reason


def test_splat_makes_run_fail():
    splat = (
        "[    2.1] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [s2fault-vmm:41]\n"
        "[    2.1] pc : icache_inval_pou+0x18/0x58\n"
        "[    2.1] Call trace:\n"
        "[    2.1]  icache_inval_pou+0x18/0x58\n"
        "[    2.1]  stage2_attr_walker+0x1c8/0x228\n"
    )
    text = REAL.replace("S2FAULT-POST", splat + "S2FAULT-POST")
    v = verdict_of(text)
    assert v.verdict == "fail" and v.splats[0].kind == "soft_lockup"
    assert v.splats[0].function == "icache_inval_pou"


def _cell(name, exp, v):
    c = Cell(name, "functional", exp)
    c.verdicts.append(v)
    return c


def test_compare_declared_against_observed():
    clean = variants.Expectation()
    lockup = variants.Expectation(
        splats=(variants.SplatSpec("soft_lockup", function=("icache_inval_pou",)),), clean=False)
    ok = verdict_of(REAL)
    assert compare(clean, ok, None)[0] is Outcome.PASS
    m, _, why = compare(lockup, ok, None)
    assert m is Outcome.FAIL and "expected but not seen: soft_lockup in icache_inval_pou" in why


def test_latency_ratio_against_reference():
    ratio = variants.Expectation(latency_ratio_min=10.0, latency_reference="upstream")
    ref = _cell("upstream", variants.Expectation(), verdict_of(edit_result(
        REAL, exec_fault_us=[600.0] + [1.0] * 7)))
    slow = verdict_of(edit_result(REAL, exec_fault_us=[35000.0] * 8))
    fast = verdict_of(edit_result(REAL, exec_fault_us=[900.0] * 8))
    assert compare(ratio, slow, ref)[0] is Outcome.PASS
    m, observed, why = compare(ratio, fast, ref)
    assert m is Outcome.FAIL and "1.5x upstream" in why and "max 0.9 ms" in observed
    assert compare(ratio, slow, None)[::2] == (
        Outcome.ERROR, "reference upstream has no latency in this run")


def test_a_ratio_short_of_its_minimum_fails_and_a_missing_figure_cannot_be_judged():
    from s2fault.matrix.cell import SLOPE_RATIO

    assert SLOPE_RATIO.short_of(30.0, 2.0, "upstream", 10.0) is None
    assert SLOPE_RATIO.short_of(3.0, 2.0, "upstream", 10.0) == (
        Outcome.FAIL, "cost per block 3 ms is 1.5x upstream's 2 ms, expected >= 10x")
    assert SLOPE_RATIO.short_of(None, 2.0, "upstream", 10.0)[0] is Outcome.ERROR
    assert SLOPE_RATIO.short_of(3.0, 0.0, "upstream", 10.0) == (
        Outcome.ERROR, "reference upstream has no slope in this run")


def test_flaky_cell_is_marked_not_averaged():
    exp = variants.Expectation()
    c = Cell("upstream", "functional", exp)
    c.verdicts = [verdict_of(REAL), verdict_of(edit_result(REAL, coherent=False))]
    judge_cells([c])
    assert c.outcome is Outcome.FAIL and c.flaky and c.why.startswith("flaky: matched in 1/2")
    assert exit_code([c]) == 1


# --- skip vs error, and the lockup detector ------------------------------------------



def test_no_memory_for_the_hugepage_is_a_skip_a_kernel_without_hugetlb_an_error():
    no_page = edit_marker_line(REAL, "S2FAULT-INIT", hugepages_total=0).replace(
        "HugeTLB: registered 512 MiB page size, pre-allocated 1 pages",
        "HugeTLB: allocating 1 of page size 512 MiB failed.  Only allocated 0 hugepages.")
    v = verdict_of(no_page)
    assert v.verdict == "skip" and "no memory for the boot-time hugepage" in v.reason
    # Without the kernel's own words for it, a missing page is not known to be memory.
    v = verdict_of(edit_marker_line(REAL, "S2FAULT-INIT", hugepages_total=0))
    assert v.verdict == "error" and "hugepage reservation failed" in v.reason


def test_a_dilated_run_whose_detector_was_not_armed_is_an_error_never_clean():
    unarmed = edit_result(REAL, watchdog_armed=0)
    v = judge(machine(), unarmed, workload.parse(unarmed), watchdog_thresh=2)
    assert v.verdict == "error" and "CONFIG_SOFTLOCKUP_DETECTOR" in v.reason
    armed = edit_result(REAL, watchdog_armed=2)
    assert judge(machine(), armed, workload.parse(armed), watchdog_thresh=2).verdict == "pass"
    # A functional run arms nothing: the same line is a pass there.
    assert judge(machine(), unarmed, workload.parse(unarmed)).verdict == "pass"


def test_an_expected_lockup_without_a_detector_never_matches():
    """/proc/sys/kernel/soft_watchdog exists only with CONFIG_SOFTLOCKUP_DETECTOR:
    init reads it back as null without it."""
    lockup = variants.Expectation(splats=(variants.SplatSpec("soft_lockup"),), clean=False)
    text = edit_marker_line(REAL, "S2FAULT-POST", soft_watchdog=None)
    v = verdict_of(text)
    assert v.preconditions.softlockup_detector is False
    m, _, why = compare(lockup, v, None)
    assert m is Outcome.ERROR and "CONFIG_SOFTLOCKUP_DETECTOR" in why
    assert verdict_of(REAL).preconditions.softlockup_detector is True
    assert compare(lockup, verdict_of(REAL), None)[0] is Outcome.FAIL  # expected, not seen


def test_cell_outcomes_and_exit_codes():
    clean = variants.Expectation()
    dic = verdict_of(edit_result(REAL, dic=1))
    cells = [Cell("a", "functional", clean, [verdict_of(REAL)]),
             Cell("b", "functional", clean, [dic])]
    judge_cells(cells)
    assert [c.outcome for c in cells] == ["pass", "skip"]
    assert exit_code(cells) == 0  # passes with a skip: kselftest's rule
    assert exit_code(cells[1:]) == 4  # everything skipped: KSFT_SKIP
    assert exit_code([]) == 2  # nothing judged is never a pass
    assert "SKIP" in table(cells) and "b/functional: not applicable" in table(cells)
    assert summary_line([c.outcome for c in cells]) == "PASS: 1 pass, 1 skip of 2 cells"
    assert cells[1].to_dict()["test_id"] == "b.exec-fault.functional"


def test_a_check_with_no_cell_is_refused_before_anything_runs():
    with pytest.raises(Exception, match="no cell to run: .*guest-icache-storm"):
        matrix.check_plan(["dilated"], matrix.RunOptions(workloads=("guest-icache-storm",)))


# --- fault injection and stuck vCPUs (alloc-failure) ------------------------------------

_TIMEOUT = "timeout after 25 s in round 1 of 2: vcpus 0,1,2,3,4,5,6,7 did not finish"


def injected(text: str, n: int) -> str:
    """The console with failslab's report of `n` failed allocations before the result."""
    report = ("[   11.522008] FAULT_INJECTION: forcing a failure.\n"
              "[   11.522008] name failslab, interval 1, probability 100, space 0, times 1\n")
    head, sep, tail = text.partition("S2FAULT-RESULT")
    return head + report * n + sep + tail


def test_stuck_vcpus_after_an_injected_failure_are_a_livelock():
    text = edit_result(REAL, stuck_vcpus=list(range(8)), errors=[_TIMEOUT],
                       fault_injection={"armed": True, "window": "kvm_pgtable_walk",
                                        "requested": 1, "failures": 1})
    v = verdict_of(injected(text, 1))
    assert v.verdict == "fail"
    assert v.reason.startswith("livelock: 8 of 8 vCPUs never came back"), v.reason
    assert "1 injected allocation failure(s) under kvm_pgtable_walk" in v.reason
    assert v.workload.stuck_vcpus == list(range(8))


def test_stuck_vcpus_without_an_injected_failure_cannot_be_judged():
    """A timeout with nothing that explains it may be the host: never a kernel verdict."""
    text = edit_result(REAL, stuck_vcpus=[3], errors=[_TIMEOUT],
                       fault_injection={"armed": True, "window": "kvm_pgtable_walk",
                                        "requested": 1, "failures": 0})
    v = verdict_of(text)
    assert v.verdict == "error" and v.reason.startswith("could not judge: workload error")


def test_fault_injection_that_could_not_be_armed_is_not_judged():
    text = edit_result(REAL, errors=["no /sys/kernel/debug/failslab/: the kernel lacks "
                                     "CONFIG_FAILSLAB or CONFIG_FAULT_INJECTION_DEBUG_FS"],
                       fault_injection={"armed": False, "window": "kvm_pgtable_walk",
                                        "requested": 1, "failures": None})
    v = verdict_of(text)
    assert v.verdict == "error" and "fault injection could not be armed" in v.reason
    assert "CONFIG_FAILSLAB" in v.reason


def _exp(**data) -> variants.Expectation:
    return variants._expectation(data, "test")


def test_declared_livelock_and_failure_count_are_compared():
    stuck = verdict_of(injected(edit_result(
        REAL, stuck_vcpus=[0, 1], errors=[_TIMEOUT], coherent=False, values_ok=6,
        fault_injection={"armed": True, "window": "w", "requested": 1, "failures": 1}), 1))
    fine = verdict_of(injected(edit_result(
        REAL, fault_injection={"armed": True, "window": "w", "requested": 1, "failures": 1}), 1))
    livelock = _exp(stuck=True, injected_failures=1, clean=False)
    assert compare(livelock, stuck, None)[0] is Outcome.PASS
    outcome, _, why = compare(livelock, fine, None)
    assert outcome is Outcome.FAIL and "every vCPU came back" in why
    outcome, _, why = compare(_exp(injected_failures=1), stuck, None)
    assert outcome is Outcome.FAIL and "never came back" in why
    outcome, observed, why = compare(_exp(injected_failures=0), fine, None)
    assert outcome is Outcome.FAIL and "expected 0" in why and "1 injected failure(s)" in observed


def test_splat_where_pattern_names_where_the_report_comes_from():
    spec = _exp(splats=[{"kind": "atomic_sleep", "where": r"include/linux/sched/mm\.h"}]
                ).splats[0]
    alloc = ReportedSplat.from_dict({
        "kind": "atomic_sleep", "title": "sleeping function called from invalid context in "
        "add_fault_range", "where": "include/linux/sched/mm.h:321"})
    mutex = replace(alloc, where="../src/kernel/locking/mutex.c:586")
    assert spec.matches(alloc) and not spec.matches(mutex)
    assert spec.describe().endswith(r"at /include/linux/sched/mm\.h/")


def test_failures_are_counted_from_the_kernels_reports():
    """failslab's `times` is checked and decremented apart: two CPUs can both take the
    last failure (seen on upstream with a wider filter), so the console counts."""
    text = edit_result(REAL, fault_injection={"armed": True, "window": "w", "requested": 1,
                                              "failures": 1})
    assert verdict_of(injected(text, 2)).workload.fault_injection.failures == 2
    assert verdict_of(text).workload.fault_injection.failures == 0


_MUTEX_IN_ATOMIC = ("[    2.1] BUG: sleeping function called from invalid context at "
              "kernel/locking/mutex.c:586\n"
              "[    2.1] in_atomic(): 1, irqs_disabled(): 0, non_block: 0, pid: 41, name: "
              "s2fault-vmm\n"
              "[    2.1] Call trace:\n"
              "[    2.1]  __might_sleep+0x50/0x60\n"
              "[    2.1]  mutex_lock+0x24/0x80\n"
              "[    2.1]  add_fault_range+0x30/0x100\n")


def _raced(**changes) -> str:
    return edit_result(REAL, errors=[_TIMEOUT], coherent=False, values_ok=6, **changes
                       ).replace("S2FAULT-POST", _MUTEX_IN_ATOMIC + "S2FAULT-POST")


def test_stuck_vcpus_with_a_report_in_the_fault_path_are_a_livelock():
    """The v1 as posted: two vCPUs fault on one block, the loser's add_fault_range()
    finds the winner's range and the map walker returns -EAGAIN with its PTE still
    locked. Nothing was injected; the kernel's own report says where it happened."""
    v = verdict_of(_raced(stuck_vcpus=[0, 5]))
    assert v.verdict == "fail"
    assert v.reason.startswith("livelock: 2 of 8 vCPUs never came back"), v.reason
    assert "add_fault_range" in v.reason


def test_a_livelock_that_needs_a_race_may_be_declared_either_way():
    stuck = verdict_of(_raced(stuck_vcpus=[0]))
    fine = verdict_of(REAL.replace("S2FAULT-POST", _MUTEX_IN_ATOMIC + "S2FAULT-POST"))
    splat = [{"kind": "atomic_sleep", "in_frames": ["add_fault_range"]}]
    may = _exp(stuck="may", splats=splat)
    assert may.stuck is None and "may be stuck" in may.describe()
    assert compare(may, fine, None)[0] is Outcome.PASS
    assert compare(may, stuck, None)[0] is Outcome.PASS
    outcome, _, why = compare(_exp(splats=splat), stuck, None)
    assert outcome is Outcome.FAIL and "vCPU(s) 0 never came back" in why
    with pytest.raises(Exception, match=r"stuck must be true, false or \"may\", not 'sometimes'"):
        _exp(stuck="sometimes")


def test_a_verdict_names_the_culprit_and_groups_its_consequences():
    """migration/0 reports first; the VMM's lockup in icache_inval_pou leads the reason,
    and the stopper thread, the repeat and RCU's stall are listed under it (JSON too)."""
    golden = Path(__file__).parent / "golden" / "arm64-dilated-cascade-culprit-second.log"
    from s2fault.judge import analyzer
    from s2fault.judge.rules import _splat_reason, culprit_first

    splats = culprit_first(analyzer.analyze_console(golden.read_text()))
    assert splats[0].task == "migration/0" and splats[0].role == "consequence"
    assert splats[0].why == "stopper thread" and splats[0].consequence_of == 1
    assert splats[1].role == "culprit" and splats[1].function == "icache_inval_pou"
    reason = _splat_reason(splats)
    assert reason.startswith("soft_lockup: soft lockup in icache_inval_pou; 3 consequence(s): "
                             "stopper thread, repeat, RCU stall on the culprit's CPU#1"), reason


def test_many_cpus_behind_one_culprit_are_counted_not_listed():
    from s2fault.judge.rules import _splat_reason

    lead = ReportedSplat.from_dict({"kind": "soft_lockup",
                                    "title": "soft lockup in icache_inval_pou",
                                    "role": "culprit", "incident": 0,
                                    "function": "icache_inval_pou"})
    others = [replace(lead, role="consequence", why=f"lockup on another CPU (CPU#{n})")
              for n in range(2, 64)]
    rcu = replace(lead, kind="rcu_stall", role="consequence",
                  why="RCU stall on the culprit's CPU#1")
    reason = _splat_reason([lead, *others, rcu])
    assert reason == ("soft_lockup: soft lockup in icache_inval_pou; 63 consequence(s): "
                      "lockup on another CPU x62, RCU stall on the culprit's CPU#1"), reason


# --- a time-dilated model that starved the kernel's housekeeping ------------------------

STARVED = (DATA / "upstream-altra-max-starved-console.log").read_text()
FIX_REVERTED_MODEL = (DATA / "fix-reverted-altra-max-console.log").read_text()


def _model_verdict(text: str, dilated: bool = True):
    return judge(machine(), text, workload.parse(text), 5, scale=1.979, dilated=dilated)


def test_upstream_starved_at_64_vcpus_is_the_models_failure_not_the_kernels():
    """CI, upstream in altra-max: the vCPU threads' exits and the idle CPUs' load
    balancing were reported stuck (handle_softirqs, sched_balance_rq), nothing in the
    fault path. Under dilation that is an error worth a second boot, never a fail."""
    v = _model_verdict(STARVED)
    assert v.verdict == "error", v.reason
    assert v.reason.startswith(starved_model.MODEL_STARVED)
    assert "none in the fault path" in v.reason and "handle_softirqs" in v.reason
    assert matrix.retryable(v)
    # Without dilation the same reports are the kernel's.
    v = _model_verdict(STARVED, dilated=False)
    assert v.verdict == "fail" and not matrix.retryable(v)


def test_the_known_bad_model_run_still_fails_on_its_culprit():
    v = _model_verdict(FIX_REVERTED_MODEL)
    assert v.verdict == "fail", v.reason
    assert "icache_inval_pou" in v.reason and not matrix.retryable(v)
    exp = variants.load("fix-reverted").expectation("altra-max")
    outcome, _, why = compare(exp, v, None)
    assert outcome is Outcome.PASS, why


def _lockup(frames, kind="soft_lockup", **kw):
    return ReportedSplat.from_dict({"kind": kind, "frames": frames,
                                    "function": frames[0] if frames else None, "cpu": 4, **kw})


SOFTIRQ_OVER_KVM = ["handle_softirqs", "__do_softirq", "call_on_irq_stack", "el1_interrupt",
                    "icache_inval_pou", "stage2_attr_walker", "kvm_handle_guest_abort"]


@pytest.mark.parametrize("frames,housekeeping", [
    (["sched_balance_rq", "sched_balance_domains", "sched_balance_softirq",
      "handle_softirqs"], True),
    # The CPU was in the fault path when the softirq work took it: still housekeeping.
    (SOFTIRQ_OVER_KVM, True),
    # The stuck context itself is the path under test.
    (["icache_inval_pou", "stage2_attr_walker", "kvm_pgtable_walk"], False),
    (["handle_softirqs", "kvm_mmu_notifier_invalidate_range_start"], False),
    # A stopper thread waiting for another CPU is a knock-on, judged as usual.
    (["cpu_stopper_thread", "smpboot_thread_fn", "kthread"], False),
    ([], False),
])
def test_housekeeping_is_softirq_work_above_any_interrupt_entry(frames, housekeeping):
    assert starved_model.housekeeping_lockup(_lockup(frames)) is housekeeping


def test_any_other_report_keeps_the_run_the_kernels():
    softirq = _lockup(["handle_softirqs", "__do_softirq"])
    stall = ReportedSplat.from_dict({"kind": "rcu_stall", "frames": [], "function": None,
                                     "cpu": None})
    assert starved_model.starved_housekeeping([softirq, stall])
    assert starved_model.starved_housekeeping([stall]) is None
    lockdep = ReportedSplat.from_dict({"kind": "lockdep", "frames": ["add_fault_range"],
                                       "function": "add_fault_range"})
    assert starved_model.starved_housekeeping([softirq, lockdep]) is None
    culprit = _lockup(["icache_inval_pou", "stage2_attr_walker"])
    assert starved_model.starved_housekeeping([softirq, culprit]) is None
    # The fresh-root CI's upstream multi-vm: migration/0 "stuck" in cpu_stop_should_run
    # (a stopper-thread knock-on) beside softirq work; and the stopper alone.
    stopper = _lockup(["cpu_stop_should_run", "smpboot_thread_fn", "kthread"],
                      knock_on="stopper thread", task="migration/0")
    reason = starved_model.starved_housekeeping([softirq, stopper])
    assert reason and "from softirq" in reason
    reason = starved_model.starved_housekeeping([stopper])
    assert reason and "cpu_stop_should_run on CPU#4 in the stopper thread" in reason
    # A stopper waiting on a CPU in the fault path, or with the culprit reported, is not.
    assert starved_model.starved_housekeeping([stopper, culprit]) is None
    waiting = _lockup(["cpu_stopper_thread", "kvm_handle_guest_abort"], knock_on="stopper thread")
    assert starved_model.starved_housekeeping([waiting]) is None
    spin = _lockup(["queued_spin_lock_slowpath", "sched_balance_rq"],
                   knock_on="waiting in queued_spin_lock_slowpath")
    assert starved_model.starved_housekeeping([spin]) is None


def test_check_runs_a_starved_cell_again_and_keeps_every_attempt(tmp_path, monkeypatch):
    """The orchestration alone (runner.run_kernel replaced): a starved run is run again,
    up to --retries, and each discarded attempt stays named in the cell."""
    from s2fault import runner
    from s2fault.judge.starved_model import MODEL_STARVED
    from s2fault.judge.verdict import Verdict
    from s2fault.machine import profiles

    answers = [Verdict(Outcome.ERROR, f"{MODEL_STARVED}: ..."),
               Verdict(Outcome.ERROR, f"{MODEL_STARVED}: ..."), Verdict(Outcome.PASS, "clean")]
    calls = []

    def run_kernel(image, prof, outdir, label, config, extra_initramfs=None):
        calls.append(outdir)
        return answers[len(calls) - 1]

    monkeypatch.setattr(runner, "run_kernel", run_kernel)
    build = type("B", (), {"image": tmp_path / "Image", "config": None})()
    exp = variants.load("upstream").expectation("altra-max")
    for retries, verdict, retried in ((2, "pass", 2), (1, "error", 1)):
        calls.clear()
        cell = Cell("upstream", "altra-max", exp)
        options = matrix.RunOptions(retries=retries)
        matrix._run_cell(cell, profiles.mode("altra-max"), workloads.get(workloads.DEFAULT),
                         build, tmp_path, options, Cores(2))
        assert [v.verdict for v in cell.verdicts] == [verdict]
        assert len(cell.retried) == retried and len(calls) == retried + 1
        assert all(r["reason"].startswith(MODEL_STARVED) for r in cell.retried)
        assert cell.to_dict()["retried"] == cell.retried


def test_one_outcome_type_names_its_exit_code():
    """The README's table: pass 0, fail 1, error 2, skip 4; an Outcome is its name in
    comparisons and JSON, so a verdict's string and the type never disagree."""
    from s2fault.errors import InputError
    from s2fault.outcome import EXIT_CODES

    assert {o.value: o.exit_code for o in Outcome} == {"pass": 0, "fail": 1, "error": 2,
                                                       "skip": 4} == EXIT_CODES
    assert Outcome("fail") == "fail" and json.dumps(Outcome.SKIP) == '"skip"'
    assert exit_code_of(["pass", "skip"]) == 0
    assert exit_code_of(["skip", "error", "fail"]) == 1
    assert exit_code_of([]) == exit_code_of(["error"]) == 2
    with pytest.raises(InputError, match="unknown outcome 'ok'"):
        exit_code_of(["ok"])
    # The table and every report show one word per outcome: what needs a look in capitals.
    assert [o.table_word for o in Outcome] == ["pass", "FAIL", "SKIP", "ERROR"]


def test_a_dilated_boot_that_stalled_before_init_is_run_again_a_functional_one_not():
    """CI, full-inval-always/dilated: silent 120 s after "workingset:" during boot."""
    text = "\n".join(REAL.splitlines()[:40]) + "\n"
    v = verdict_of(text, outcome="timeout", reason="no output for 120 s (vm running)")
    assert v.verdict == "error" and v.reason.startswith(NEVER_REACHED_INIT)
    assert not matrix.retryable(v)  # functional: not a model's stall
    v.profile = {"icount_shift": 7}
    assert matrix.retryable(v)
    v.splats = [ReportedSplat.from_dict({"kind": "soft_lockup", "frames": ["x"]})]
    assert not matrix.retryable(v)  # a report before init is the kernel's


def test_softirq_work_counts_when_the_analyzer_names_the_interrupted_function():
    """CI5, full-inval-always/dilated: kworker "stuck" with handle_softirqs on top of its
    printed trace; the analyzer's frames start below the interrupt, at complete()."""
    lines = ["[ 267.7] watchdog: BUG: soft lockup - CPU#0 stuck for 5s! [kworker/0:0:8]",
             "[ 267.7] Call trace:", "[ 267.7]  handle_softirqs+0xe0/0x4a4",
             "[ 267.7]  __do_softirq+0x10/0x18", "[ 267.7]  call_on_irq_stack+0x30/0x4c",
             "[ 267.7]  el1_interrupt+0x34/0x48", "[ 267.7]  complete+0x7c/0x8c",
             "[ 267.7]  process_one_work+0x204/0x5b0"]
    splat = _lockup(["complete", "process_one_work"], lines=[1, len(lines)])
    assert starved_model.starved_housekeeping([splat]) is None
    reason = starved_model.starved_housekeeping([splat], "\n".join(lines))
    assert reason and "in complete on CPU#4 from softirq" in reason
    # A report with a fault-path frame in its own (analyzer's) frames keeps its say.
    culprit = _lockup(["icache_inval_pou", "stage2_attr_walker"])
    assert starved_model.starved_housekeeping([splat, culprit], "\n".join(lines)) is None


CONSOLES = sorted(DATA.glob("*console.log")) + sorted(
    (Path(__file__).parent / "golden").glob("*.log"))


@pytest.mark.parametrize("console", CONSOLES, ids=lambda p: p.name)
def test_a_verdict_reads_back_from_its_json_as_it_was_written(console):
    """result.json and check.json are read back (host-run's verdict, the reports):
    every record gives the same JSON again, and equal records."""
    from s2fault.judge.verdict import Verdict

    text = console.read_text(errors="replace")
    v = verdict_of(text)
    written = json.loads(json.dumps(v.to_dict()))
    again = Verdict.from_dict(written)
    assert json.loads(json.dumps(again.to_dict())) == written
    assert again.workload == v.workload and again.preconditions == v.preconditions


def test_a_key_an_older_file_lacks_or_holds_null_reads_as_the_default():
    from s2fault.judge.measurements import FaultInjection, Latency, VmProcess
    from s2fault.judge.verdict import Preconditions

    assert Latency.from_dict({}) == Latency()
    assert Latency.from_dict({"per_vcpu": None, "max": 3.5}) == Latency(max=3.5)
    assert FaultInjection.from_dict({"armed": None}).armed is False
    assert VmProcess.from_dict({"pid": 7}) == VmProcess(vm=0, pid=7)
    assert Preconditions.from_dict({"kvm": True}) == Preconditions(booted=False, kvm=True)
    # Written in field order, every field, so check.json keeps its key order.
    assert list(Latency().to_dict()) == ["per_vcpu", "max", "median", "per_round_max",
                                         "warmup_max"]
