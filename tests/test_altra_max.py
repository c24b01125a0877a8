"""The altra-max model, for real: 64 vCPUs on a 64-CPU nested host under -icount
calibrated on Altra Max, the kernel's own thresholds scaled by k. The suite runs
fix-reverted and upstream in this mode (the scaling curve is `make calibrate`)."""

from __future__ import annotations

import json

import pytest

from conftest import s2fault
from s2fault.machine import profiles

pytestmark = pytest.mark.slow


def test_altra_max_cells_match_with_64_vcpus(tmp_path):
    out = tmp_path / "results"
    r = s2fault("check", "--mode", "altra-max", "--variant", "fix-reverted",
                "--variant", "upstream", "--results", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    cells = {c["variant"]: c for c in json.loads((out / "check.json").read_text())["cells"]}
    model = profiles.hardware_model("altra-max")
    for cell in cells.values():
        assert cell["mode"] == "altra-max" and cell["match"] is True, cell["why"]
        assert cell["workload"]["vcpus"] == 64
        assert cell["profile"]["smp"] == profiles.mode("altra-max").smp
        assert "not a hardware measurement" in cell["profile"]["model_note"]
    fr = cells["fix-reverted"]
    assert "icache_inval_pou" in fr["reason"] or "stage2_attr_walker" in fr["reason"]
    lockup = next(s for s in fr["splats"] if s["kind"] == "soft_lockup")
    # The kernel's own threshold, scaled: stuck for more than 2 x watchdog_thresh.
    t = model.thresholds.in_model(model.scale)
    assert lockup["stuck_s"] > t.soft_lockup_after
    assert lockup["stuck_hw_s"] == pytest.approx(lockup["stuck_s"] * model.scale, abs=0.1)
    assert "hardware-equivalent" in fr["reason"]
    # Counted in the guest kernel: upstream blows the whole cache for the 512M block,
    # fix-reverted never does.
    up_icache = cells["upstream"]["workload"]["icache"]
    fr_icache = fr["workload"]["icache"]
    assert up_icache["guest_page"] > up_icache["by_line"]
    assert fr_icache["guest_page"] == fr_icache["by_line"] > 0
