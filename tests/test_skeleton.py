"""The walking skeleton, for real: Debian source -> tuxmake build -> initramfs -> QEMU
(TCG, virtualization=on) -> nested KVM exec-fault workload -> verdict."""

from __future__ import annotations

import json
import time

import pytest

from conftest import s2fault
from s2fault import kernel
from s2fault.kernel import kconfig

pytestmark = [pytest.mark.slow, pytest.mark.functional]


def test_upstream_build_has_every_requested_symbol(upstream_build):
    config = upstream_build.config.read_text()
    assert kconfig.dropped(kconfig.fragment_paths(), config) == []
    assert upstream_build.image.stat().st_size > 1 << 20
    for name in ("Image", "config", "build.log", "metadata.json", "reproducer", "manifest.json"):
        assert (upstream_build.dir / name).is_file(), name
    assert "tuxmake" in (upstream_build.dir / "reproducer").read_text()


def test_second_identical_build_is_a_cache_hit(upstream_build):
    start = time.monotonic()
    again = kernel.build("upstream")
    assert again.cached and again.key == upstream_build.key
    assert time.monotonic() - start < 30


def test_run_upstream_kernel_passes_with_latencies(upstream_build, tmp_path):
    out = tmp_path / "verdict.json"
    r = s2fault("run", "--kernel", str(upstream_build.image), "--vcpus", "8", "--json", str(out),
                "--results", str(tmp_path / "runs"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("PASS")
    v = json.loads(out.read_text())
    assert v["verdict"] == "pass" and v["reason"]
    w = v["workload"]
    assert w["vcpus"] == 8 and w["coherent"] is True and w["dic"] == 0
    assert len(w["exec_fault_ms"]["per_vcpu"]) == 8
    assert 0 < w["exec_fault_ms"]["max"] < 1000
    assert v["splats"] == []
    assert v["preconditions"]["hugepages_total"] >= 1
    assert v["preconditions"]["debug_locks_before"] == 1
    assert v["preconditions"]["exec_faults_taken"] is True
    console = open(v["artifacts"]["console_log"]).read()
    assert "S2FAULT-RESULT" in console and "S2FAULT-DONE" in console


def test_check_prints_the_verdict_table(tmp_path):
    r = s2fault("check", "--variant", "upstream", "--mode", "functional",
                "--results", str(tmp_path), "--json", str(tmp_path / "c.json"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "VARIANT" in r.stdout and "upstream" in r.stdout and "PASS" in r.stdout
    rows = json.loads((tmp_path / "c.json").read_text())["cells"]
    assert [(c["variant"], c["mode"], c["match"]) for c in rows] == [
        ("upstream", "functional", True)]
