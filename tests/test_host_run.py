"""host-run: the workload on an arm64 host's running kernel (machine/hostrun.py), and its proof
here: `run/check --via host-run` boot the nested host with an arm64 Python root
filesystem and run `s2fault host-run` inside it.

This machine is x86: host-run itself must refuse in one line; everything it does on a
host is exercised for real inside the nested host (slow tests), and its pieces that
need no arm64 (kmsg records, the undo of what it changed, under a real SIGTERM) here.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, s2fault
from conftest import edit_marker_line as _edit
from s2fault.judge import lines as workload
from s2fault.judge.rules import HOST_DIC, NO_LOCKDEP, judge
from s2fault.judge.verdict import Verdict
from s2fault.kernel import variants
from s2fault.machine import MachineRun, hostrun, profiles
from s2fault.matrix.cell import compare, exit_code, host_cell
from s2fault.outcome import Outcome

DATA = Path(__file__).parent / "data"
REAL = (DATA / "upstream-functional-console.log").read_text()
LAVA = ROOT / "ci" / "lava" / "s2fault-host-run.yaml"
LAVA_SCRIPT = ROOT / "ci" / "lava" / "s2fault-host-run.sh"




def _host_verdict(text: str) -> Verdict:
    run = MachineRun("exited", "s2fault-vmm exited with 0", 0, 1.0, Path("/x/console.log"),
                     Path("/x/vmm-stdout.log"), Path("/x/vmm-stderr.log"), ["s2fault-vmm"])
    return judge(run, text, workload.parse(text), runner=hostrun.RUNNER)


# --- on this x86 machine -------------------------------------------------------------

@pytest.mark.skipif(platform.machine() in ("aarch64", "arm64"), reason="an arm64 machine")
def test_host_run_on_x86_is_one_line_exit_2_pointing_to_run():
    r = s2fault("host-run", "--json", "/nonexistent/never-written.json")
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "host-run needs an arm64 host with /dev/kvm" in lines[0]
    assert "s2fault run" in lines[0]


def test_workloads_that_change_more_of_the_host_are_refused_by_name():
    r = s2fault("run", "--kernel", "/nonexistent/Image", "--via", "host-run",
                "--workload", "alloc-failure")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "alloc-failure does not run under host-run" in r.stderr


# --- the same verdict, with a host's rules ---------------------------------------------

def test_a_kernel_without_lockdep_is_judged_and_lockdep_is_not_checked():
    text = _edit(REAL, "S2FAULT-INIT", debug_locks=None)
    # The nested runs call that kernel unfit; a host's production kernel is allowed.
    assert judge(MachineRun("exited", "", 0, 1.0, Path("/x"), Path("/x"), Path("/x"), []),
                 text, workload.parse(text)).verdict == "error"
    v = _host_verdict(text)
    assert v.verdict == "pass" and v.reason.endswith(f"({NO_LOCKDEP})")
    assert v.runner == "host-run" and v.to_dict()["runner"] == "host-run"


def test_a_nested_host_that_wedged_before_host_run_answered_is_the_kernels_failure():
    """Measured in CI: interval-tree-v1's mutex slept under mmu_lock, the nested host
    wedged after its reports and host-run never printed a verdict. The console is then
    judged as any run's; the boot's zero hugepages (host-run reserves its own when it
    starts) are no precondition failure, and the reports make it the kernel's failure."""
    from s2fault import runner

    text = (DATA / "host-run-wedged-console.log").read_text()
    run = MachineRun("timeout", "no output for 20 s (vm running)", None, 60.0,
                     Path("/x/console.log"), Path("/x/qmp.log"), Path("/x/stderr.log"), [])
    v = runner._host_run_verdict(run, text, profiles.mode("functional").with_(
        runner=profiles.HOST_RUN))
    assert v.verdict == "fail", v.reason
    assert "the workload did not finish" in v.reason and "hugepage" not in v.reason
    exp = variants.load("interval-tree-v1").expectation("functional")
    outcome, _, why = compare(exp, v, None)
    assert outcome is Outcome.PASS, why


def test_lockdep_expectations_on_a_host_without_lockdep_are_never_passed():
    v = _host_verdict(_edit(REAL, "S2FAULT-INIT", debug_locks=None))
    exp = variants.load("interval-tree-v1").expectation("functional")
    outcome, _, why = compare(exp, v, None)
    assert outcome is Outcome.ERROR and why.startswith(NO_LOCKDEP)


def test_dic_on_the_host_is_not_applicable_in_the_issue_s_words():
    v = _host_verdict(_edit(REAL, "S2FAULT-RESULT", dic=1, ctr_el0="0xb444c004"))
    assert (v.verdict, v.reason) == ("skip", HOST_DIC)
    assert HOST_DIC == ("not applicable: this CPU has FEAT_DIC; the invalidation under "
                        "test never runs")


def test_a_verdict_survives_the_trip_through_json():
    v = _host_verdict(REAL)
    again = Verdict.from_dict(json.loads(json.dumps(v.to_dict())))
    assert again.to_dict() == v.to_dict()


def test_host_run_reports_name_its_cell_like_every_report(tmp_path):
    from s2fault import report

    cell = host_cell(_host_verdict(_edit(REAL, "S2FAULT-INIT", debug_locks=None)),
                     "exec-fault")
    assert (cell.test_id, cell.outcome) == ("host.exec-fault.host-run", "pass")
    rows = [cell.to_dict()]
    assert rows[0]["runner"] == "host-run"
    report.write_junit(rows, tmp_path / "j.xml")
    report.write_ktap(rows, tmp_path / "k.ktap")
    assert 'classname="s2fault.host"' in (tmp_path / "j.xml").read_text()
    ktap = (tmp_path / "k.ktap").read_text()
    assert "KTAP version 1" in ktap and "ok 1 exec-fault.host-run" in ktap
    dic = host_cell(_host_verdict(_edit(REAL, "S2FAULT-RESULT", dic=1)), "exec-fault")
    assert dic.outcome == "skip" and exit_code([dic]) == 4


# --- what host-run reads and changes ---------------------------------------------------

def test_kmsg_records_read_as_the_serial_console_prints_them():
    record = "4,812,20123456,-;BUG: soft lockup - CPU#1 stuck for 22s! [s2fault-vmm:95]\n"
    assert hostrun.console_line(record) == (
        "[   20.123456] BUG: soft lockup - CPU#1 stuck for 22s! [s2fault-vmm:95]")
    # Continuation lines of a record (dictionary) are dropped; escaped tabs restored.
    multi = "6,3,5,-;Call trace:\\x09x\n SUBSYSTEM=cpu\n DEVICE=+cpu:1\n"
    assert hostrun.console_line(multi) == "[    0.000005] Call trace:\tx"


def test_kmsg_is_read_from_the_start_of_the_workload_only():
    """This machine's own /dev/kmsg: what was logged before host-run opened it is not
    evidence; what is logged after is, in order."""
    import os
    import time
    import uuid

    if not os.access("/dev/kmsg", os.R_OK | os.W_OK):
        pytest.skip("/dev/kmsg not readable and writable here (needs root)")
    tag = uuid.uuid4().hex[:12]
    with open("/dev/kmsg", "w") as f:
        f.write(f"s2fault-test {tag} before\n")
    kmsg = hostrun.Kmsg()
    try:
        with open("/dev/kmsg", "w") as f:
            f.write(f"s2fault-test {tag} after 1\n")
            f.flush()
            f.write(f"s2fault-test {tag} after 2\n")
        time.sleep(0.1)
        kmsg.drain()
    finally:
        kmsg.close()
    ours = [ln.split("] ", 1)[1] for ln in kmsg.lines if tag in ln]
    assert ours == [f"s2fault-test {tag} after 1", f"s2fault-test {tag} after 2"]


def test_the_kernel_config_is_read_as_a_config_file_says():
    cfg = hostrun.parse_config("CONFIG_KVM=y\n# CONFIG_PROVE_LOCKING is not set\n"
                               "CONFIG_NR_CPUS=64\n")
    assert cfg == {"CONFIG_KVM": "y", "CONFIG_PROVE_LOCKING": "n", "CONFIG_NR_CPUS": "64"}


def test_the_nested_command_line_asks_host_run_to_reserve_its_hugepages():
    prof = profiles.mode("functional").with_(runner="host-run", vcpus=4, rounds=3)
    line = profiles.kernel_cmdline(prof, 512 << 20)
    assert "hugepages=0" in line.split()
    assert "s2fault.program=s2fault-host-run" in line.split()
    assert "s2fault.host_run=--workload,exec-fault,--vcpus,4,--rounds,3" in line.split()
    vmm = hostrun.vmm_argv(Path("/v"), profiles.mode("functional").with_(vms=2, storm=1))
    assert vmm[vmm.index("--vms") + 1] == "2" and "--storm" in vmm


def test_what_host_run_changed_is_put_back_on_sigterm(tmp_path):
    """HostChanges under the CLI's own signal handling, with a real SIGTERM while a
    change is in force (files stand in for sysfs: this machine's are not arm64's)."""
    nr = tmp_path / "nr_hugepages"
    nr.write_text("3\n")
    script = textwrap.dedent(f"""
        import os, signal, sys, time
        from pathlib import Path
        from s2fault import cli
        from s2fault.machine import hostrun
        signal.signal(signal.SIGTERM, cli._on_signal)
        try:
            with hostrun.HostChanges() as changes:
                changes.write(Path({str(nr)!r}), "5")
                print("changed", flush=True)
                time.sleep(60)
        except KeyboardInterrupt:
            sys.exit(130)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "changed"
    assert nr.read_text() == "5"
    p.terminate()
    assert p.wait(timeout=30) == 130
    assert nr.read_text() == "3"


# --- where boards run tests ------------------------------------------------------------

def test_lava_definition_has_metadata_install_and_run_calling_host_run():
    d = yaml.safe_load(LAVA.read_text())
    meta = d["metadata"]
    assert meta["format"] == "Lava-Test Test Definition 1.0"
    assert meta["name"] == "s2fault-host-run"
    for key in ("description", "maintainer", "os", "scope", "devices"):
        assert meta[key], key
    assert "python3" in d["install"]["deps"]
    assert any("pip install" in step for step in d["install"]["steps"])
    run = " ".join(d["run"]["steps"])
    assert "ci/lava/s2fault-host-run.sh" in run
    for param in d["params"]:
        assert "${" + param + "}" in run or "${" + param + "}" in str(d["install"])
    script = LAVA_SCRIPT.read_text()
    assert "host-run --workload" in script and "lava-test-case" in script
    # Every workload it names by default is one host-run takes.
    for name in d["params"]["WORKLOADS"].split():
        hostrun.check_workload(name)


def test_lava_script_reports_each_workload_never_as_a_pass_here(tmp_path):
    """Here host-run cannot run (x86): each workload is a test case, reported
    "unknown" (could not judge), by the real script with the real CLI."""
    out = tmp_path / "output"
    r = subprocess.run(["sh", str(LAVA_SCRIPT), "-w", "exec-fault multi-vm", "-o", str(out)],
                       env={"PATH": "/usr/bin:/bin",
                            "S2FAULT": str(Path(sys.executable).with_name("s2fault"))},
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    expected = "unknown" if platform.machine() not in ("aarch64", "arm64") else None
    lines = (out / "result.txt").read_text().splitlines()
    assert [ln.split()[0] for ln in lines] == ["host.exec-fault.host-run",
                                                "host.multi-vm.host-run"]
    if expected:
        assert all(ln.split()[1] == expected for ln in lines)


def test_readme_says_what_host_run_changes_undoes_and_what_dic_means():
    text = (ROOT / "README.md").read_text()
    section = text.split("## On real hardware", 1)[1].split("\n## ", 1)[0]
    for words in ("nr_hugepages", "SIGTERM", "/dev/kmsg", "DIC", "not applicable",
                  "not checked: no lockdep", "package data", "ci/lava/"):
        assert words in section, words


@pytest.mark.slow  # builds the package (pip wheel) and the static programs
def test_the_wheel_ships_the_vmm_and_the_modes_as_package_data(tmp_path):
    import shutil
    import zipfile

    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                        str(tmp_path), str(ROOT)], capture_output=True, text=True,
                       timeout=600)
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("s2fault-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("s2fault/bin/s2fault-vmm", "s2fault/bin/init", "s2fault/bin/s2fault-host-run",
                 "s2fault/profiles/functional.toml", "s2fault/machine/hostrun.py"):
        assert name in names, name
    vmm = zipfile.ZipFile(wheel).read("s2fault/bin/s2fault-vmm")
    assert vmm[:4] == b"\x7fELF" and vmm[18] == 183  # e_machine EM_AARCH64


# --- the proof, end to end, in the nested host ---------------------------------------

def _cells(path: Path) -> dict[str, dict]:
    return {c["test_id"]: c for c in json.loads(path.read_text())["cells"]}


@pytest.mark.slow
@pytest.mark.functional
def test_check_via_host_run_matches_every_declaration_like_the_bare_runner(tmp_path):
    """upstream and fix-reverted, functional: host-run in the nested host gives the
    verdicts the bare runner gives, and every cell says who ran it."""
    common = ["check", "--variant", "upstream", "--variant", "fix-reverted",
              "--mode", "functional"]
    via = s2fault(*common, "--via", "host-run", "--results", str(tmp_path / "via"))
    assert via.returncode == 0, via.stdout + via.stderr
    bare = s2fault(*common, "--results", str(tmp_path / "bare"))
    assert bare.returncode == 0, bare.stdout + bare.stderr
    cells, ref = _cells(tmp_path / "via" / "check.json"), _cells(tmp_path / "bare" / "check.json")
    assert set(cells) == set(ref) == {"upstream.exec-fault.functional",
                                      "fix-reverted.exec-fault.functional"}
    for test_id, cell in cells.items():
        assert cell["outcome"] == "pass" and cell["match"] is True, (test_id, cell["why"])
        assert (cell["outcome"], cell["verdict"]) == (ref[test_id]["outcome"],
                                                      ref[test_id]["verdict"])
        assert cell["runner"] == "host-run" and ref[test_id]["runner"] == "qemu"
        pre = cell["preconditions"]
        # host-run's own reading of the nested host: reserved through sysfs, put back.
        assert pre["host"]["dic"] is False and pre["lockdep"] == "on"
        nr = "/sys/kernel/mm/hugepages/hugepages-524288kB/nr_hugepages"
        assert pre["restored"][nr] == {"before": "0", "after": "0"}
        assert pre["hugepages_total"] == 1
        assert cell["workload"]["exec_fault_ms"]["max"] is not None
        console = Path(cell["artifacts"]["console_log"]).read_text()
        assert "S2FAULT-HOSTRUN " in console


@pytest.mark.slow
@pytest.mark.functional
def test_host_run_sees_splats_through_dev_kmsg(tmp_path):
    """interval-tree-spinlock splats in the fault path: host-run inside the nested host
    finds them in /dev/kmsg and its verdict matches what the variant declares. (Not v1:
    its mutex can sleep under mmu_lock and wedge the host before host-run answers; then
    the console is judged instead, see the wedged-console test above.)"""
    r = s2fault("check", "--via", "host-run", "--variant", "interval-tree-spinlock",
                "--mode", "functional", "--results", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    cell = _cells(tmp_path / "check.json")["interval-tree-spinlock.exec-fault.functional"]
    assert cell["runner"] == "host-run" and cell["match"] is True
    assert any(s["kind"] == "atomic_sleep" for s in cell["splats"])
    assert cell["artifacts"]["host_run"]["console_log"].endswith("console.log")


@pytest.mark.slow
@pytest.mark.functional
def test_run_via_host_run_records_the_runner(tmp_path, upstream_build):
    out = tmp_path / "run.json"
    r = s2fault("run", "--kernel", str(upstream_build.image), "--via", "host-run",
                "--rounds", "3", "--vcpus", "4", "--results", str(tmp_path), "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(out.read_text())
    assert data["runner"] == "host-run" and data["verdict"] == "pass"
    assert data["workload"]["vcpus"] == 4 and data["workload"]["rounds"] == 3
    # host-run's VMM is the package data, not the initramfs's /bin copy.
    assert data["machine"]["host_run"]["argv"][0] == (
        "/usr/lib/python3/dist-packages/s2fault/bin/s2fault-vmm")


def test_via_host_run_has_no_dilated_mode():
    r = s2fault("check", "--via", "host-run", "--mode", "dilated")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "--mode dilated" in r.stderr


def test_the_running_kernel_s_config_is_found_where_distributions_keep_it():
    source, text = hostrun.kernel_config()
    if source is None:
        pytest.skip("neither /proc/config.gz nor /boot/config-$(uname -r) here")
    assert source in ("/proc/config.gz", f"/boot/config-{platform.release()}")
    assert hostrun.parse_config(text).get("CONFIG_64BIT") == "y"
    assert hostrun.kernel_config("no-such-release")[0] in (None, "/proc/config.gz")
