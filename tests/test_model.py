"""The hardware model's pure logic: profiles as data, the fit, the scaling, the
thresholds, the pricing. No QEMU here; test_altra_max.py runs the real thing."""

from __future__ import annotations

import pytest

from s2fault.errors import InputError
from s2fault.judge.measurements import Measurements
from s2fault.judge.rules import _splat_reason, stuck_for
from s2fault.judge.verdict import ReportedSplat
from s2fault.kernel import variants
from s2fault.machine import calibrate
from s2fault.machine import profiles as profile
from s2fault.report import plots


def test_every_mode_is_a_file_and_the_matrix_knows_it():
    files = sorted(p.stem for p in profile.profiles_dir().glob("*.toml"))
    assert sorted(profile.MODES) == files
    assert list(profile.MODES)[:2] == ["functional", "dilated"]
    assert variants.MODES == tuple(profile.MODES)


def test_the_presets_kept_their_values():
    # The recipes the existing declarations were measured with.
    d = profile.mode("dilated")
    assert (d.vcpus, d.rounds, d.icount_shift, d.watchdog_thresh, d.vmm_timeout) == \
        (2, 1, 7, 2, 600)
    assert d.scale is None and not d.count_icache
    f = profile.mode("functional")
    assert (f.vcpus, f.rounds, f.icount_shift) == (8, 5, None)


def test_altra_max_holds_the_seed_figures_and_their_source():
    m = profile.hardware_model("altra-max")
    assert (m.inval_512m_ms, m.inval_all_us, m.vcpus, m.worst_fault_ms) == (579, 71, 64, 37000)
    assert "Gavin Shan" in m.source and "seed" in m.source
    prof = profile.mode("altra-max")
    # one nested CPU per vCPU: 64 concurrent invalidations need 64 CPUs
    assert prof.vcpus == 64 and prof.smp >= 35  # 20 s / 579 ms: enough to lock up
    assert prof.scale == m.scale and prof.count_icache


def test_thresholds_are_the_kernel_defaults_in_model_seconds():
    t = profile.Thresholds(10, 21, 120)
    same = t.in_model(1.0)
    assert same == t and same.soft_lockup_after == 20
    slow = t.in_model(0.5)  # the model runs at half the hardware's speed: twice the seconds
    assert (slow.watchdog_thresh, slow.rcu_cpu_stall_timeout, slow.hung_task_timeout) == \
        (20, 42, 240)
    assert t.in_model(100.0).watchdog_thresh == 1  # never 0: that disables the detector


def test_altra_max_command_line_carries_the_scaled_thresholds():
    prof = profile.mode("altra-max")
    m = profile.hardware_model("altra-max")
    t = m.thresholds.in_model(m.scale)
    cmdline = profile.kernel_cmdline(prof, 512 << 20).split()
    assert f"s2fault.watchdog_thresh={t.watchdog_thresh}" in cmdline
    assert f"rcupdate.rcu_cpu_stall_timeout={t.rcu_cpu_stall_timeout}" in cmdline
    assert f"sysctl.kernel.hung_task_timeout_secs={t.hung_task_timeout}" in cmdline
    assert "s2fault.count_icache=1" in cmdline and "nosoftlockup" in cmdline
    # the others keep the kernel's thresholds, but for dilated's RCU stall timeout
    # (profiles/dilated.toml says why)
    dilated = profile.kernel_cmdline(profile.mode("dilated"), 512 << 20).split()
    assert [a for a in dilated if a.startswith(("rcupdate", "sysctl"))] == [
        "rcupdate.rcu_cpu_stall_timeout=60"]
    assert "rcupdate" not in profile.kernel_cmdline(profile.mode("functional"), 512 << 20)


def test_a_bad_profile_file_is_named(tmp_path, monkeypatch):
    (tmp_path / "bad.toml").write_text("[profile]\nvcpus = 4\nwarp = 9\n")
    with pytest.raises(InputError, match="bad.toml.*warp"):
        profile._load_mode(tmp_path / "bad.toml")
    (tmp_path / "half.toml").write_text("[profile]\n[hardware]\nname = 'x'\n")
    with pytest.raises(InputError, match="half.toml: a hardware model needs"):
        profile._load_mode(tmp_path / "half.toml")
    with pytest.raises(InputError, match="models no hardware"):
        profile.hardware_model("dilated")


def _pt(variant, n, ms, icache=None, splats=()):
    return calibrate.Point(variant, n, ms, ms, list(splats), icache=icache)


def test_fit_uses_the_single_figure_alone_and_predicts_the_rest():
    model = profile.hardware_model("altra-max")
    pts = [_pt("fix-reverted", 1, 600.0), _pt("fix-reverted", 64, 40000.0,
                                               splats=["soft_lockup in icache_inval_pou"])]
    cal = calibrate.Calibration(model, profile.mode("altra-max"), pts)
    k = 579 / 600
    assert cal.scale == pytest.approx(k)
    s = cal.summary()
    assert s == {"scale": round(k, 4),
                 "model": {"vcpus": 64, "inval_512m_ms": 579.0,
                           "worst_fault_ms": round(40000 * k, 1)},
                 "hardware": {"inval_512m_ms": 579, "worst_fault_ms": 37000}}
    text = calibrate.table(cal)
    assert "38600" in text and "37000" in text and "MODEL IS A MODEL" in text
    with pytest.raises(InputError):
        calibrate.fit_scale(579, 0)


def test_scaling_compares_with_n_times_one():
    rows = calibrate.scaling([_pt("fix-reverted", 32, 21800.0), _pt("fix-reverted", 2, 1040.0),
                              _pt("upstream", 32, 3.0)], 615.0, 1.0)
    assert [r["vcpus"] for r in rows] == [2, 32, 32]
    two, thirty_two, up = rows
    assert two["serialized_ms"] == 1230.0 and two["vs_serialized"] == pytest.approx(0.846, 1e-3)
    assert thirty_two["vs_serialized"] == pytest.approx(21800 / (32 * 615), 1e-3)
    assert up["serialized_ms"] is None  # the line is the line-by-line kernel's


def test_whole_cache_invalidations_are_entries_minus_line_by_line():
    assert calibrate.whole_cache_invalidations({"guest_page": 70, "by_line": 6}) == 64
    assert calibrate.whole_cache_invalidations({"guest_page": 6, "by_line": 6}) == 0
    assert calibrate.whole_cache_invalidations("cannot probe icache_inval_pou") is None
    assert calibrate.whole_cache_invalidations(None) is None
    priced = calibrate.price_fault(_pt("upstream", 64, 2.0, {"guest_page": 70, "by_line": 6}),
                                   0.5, 71.0)
    assert priced["worst_fault_hw_ms"] == 1.0
    assert priced["worst_fault_priced_hw_ms"] == pytest.approx(1.0 + 64 * 0.071)


def test_stuck_for_in_model_and_hardware_seconds():
    text = "x\n[   70.1] watchdog: BUG: soft lockup - CPU#3 stuck for 23s! [s2fault-vmm:60]\n"
    splats = [ReportedSplat.from_dict({"kind": "soft_lockup",
                                       "title": "soft lockup in icache_inval_pou",
                                       "function": "icache_inval_pou", "frames": [],
                                       "lines": [2, 2]})]
    splats = stuck_for(splats, text, 0.94)
    assert splats[0].stuck_s == 23 and splats[0].stuck_hw_s == 21.6
    assert "stuck for 23 s model, 21.6 s hardware-equivalent" in _splat_reason(splats)


def test_the_culprit_leads_the_reason():
    knock_on = {"kind": "soft_lockup", "title": "soft lockup in sched_balance_update_blocked_"
                "averages", "function": "sched_balance_update_blocked_averages",
                "frames": ["sched_balance_update_blocked_averages"]}
    culprit = {"kind": "soft_lockup", "title": "soft lockup in icache_inval_pou",
               "function": "icache_inval_pou", "frames": ["icache_inval_pou"]}
    reason = _splat_reason([ReportedSplat.from_dict(knock_on), ReportedSplat.from_dict(culprit)])
    assert reason.startswith("soft_lockup: soft lockup in icache_inval_pou"), reason
    assert reason.endswith("(+1 more)")


def test_scaling_plot_marks_the_seed_and_the_serialized_line():
    model = profile.hardware_model("altra-max")
    pts = [_pt("fix-reverted", n, 600.0 * n) for n in (1, 8, 64)] + \
          [_pt("upstream", n, 2.0) for n in (1, 8, 64)]
    svg = plots.scaling_svg(calibrate.Calibration(model, profile.mode("altra-max"),
                                                   pts).details())
    assert svg.count('class="series"') == 2
    assert "seed report: 37 s" in svg and 'class="serial"' in svg and "MODEL" in svg


def test_a_sweep_console_splits_into_points():
    """One boot, one VMM run per vCPU count: results, splats and kprobe hits per run."""
    def result(n, us):
        values = ", ".join(str(us) for _ in range(n))
        return f'S2FAULT-RESULT {{"vcpus": {n}, "rounds": [{{"exec_fault_us": [{values}]}}]}}'
    lines = [
        "boot",
        result(1, 615000),
        'S2FAULT-POST {"icache": {"guest_page": 3, "by_line": 3}}',
        "[ 60.0] watchdog: BUG: soft lockup - CPU#5 stuck for 23s! [s2fault-vmm:77]",
        result(2, 1240000),
        'S2FAULT-POST {"icache": {"guest_page": 7, "by_line": 7}}',
    ]
    splats = [ReportedSplat.from_dict({"kind": "soft_lockup", "function": "icache_inval_pou",
                                       "lines": [4, 4], "stuck_s": 23})]
    one, two = calibrate.split_runs("fix-reverted", [1, 2], "\n".join(lines), splats)
    assert (one.vcpus, one.worst_ms, one.splats, one.icache) == \
        (1, 615.0, [], {"guest_page": 3, "by_line": 3})
    assert (two.vcpus, two.worst_ms, two.stuck_s) == (2, 1240.0, [23])
    assert two.splats == ["soft_lockup in icache_inval_pou"]
    assert two.icache == {"guest_page": 4, "by_line": 4}  # this run's, not the boot's
    # a run that printed nothing measured nothing: never a silent zero
    (lost,) = calibrate.split_runs("fix-reverted", [64], "boot\n", [])
    assert lost.worst_ms is None and lost.verdict == "no result"


def test_a_model_run_in_the_hardware_terms():
    from s2fault import runner

    m = profile.hardware_model("altra-max")
    hw = runner.hardware_equivalent(Measurements.from_dict(
        {"exec_fault_ms": {"max": 2.0}, "icache": {"guest_page": 70, "by_line": 6}}), m)
    assert hw.worst_fault_ms == pytest.approx(2.0 * m.scale, abs=1e-3)
    assert hw.whole_cache_invalidations == 64
    assert hw.whole_cache_ms == pytest.approx(64 * 0.071)
    assert runner.hardware_equivalent(Measurements(), m).worst_fault_priced_ms is None


def test_a_fitted_scale_is_written_back_to_the_profile(tmp_path, monkeypatch):
    """`calibrate --write-scale`: the new k replaces the old in [model], the rest of the
    file (comments, thresholds) stays, and the profile loads with it."""
    import shutil

    copy = tmp_path / "profiles"
    shutil.copytree(profile.profiles_dir(), copy)
    monkeypatch.setattr(profile, "profiles_dir", lambda: copy)
    before = (copy / "altra-max.toml").read_text()
    path = calibrate.write_scale("altra-max", 2.0123456, "fix-reverted, shift 3: 287.7 ms")
    after = path.read_text()
    assert "scale = 2.012\n" in after
    assert ', fix-reverted, shift 3: 287.7 ms"' in after and after.count("calibrated = ") == 1
    prof, model = profile._load_mode(path)
    assert prof.scale == model.scale == pytest.approx(2.012)
    assert [x for x in before.splitlines() if not x.startswith(("scale =", "calibrated ="))] \
        == [x for x in after.splitlines() if not x.startswith(("scale =", "calibrated ="))]
    (copy / "dilated.toml").write_text((copy / "dilated.toml").read_text())
    with pytest.raises(InputError, match="dilated.toml: no \\[model\\] table"):
        calibrate.write_scale("dilated", 2.0, "x")
    assert not list(copy.glob(".*.tmp"))
