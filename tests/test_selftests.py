"""The kvm-selftests workload: the runner's result line, judged; and a real build and boot."""

from __future__ import annotations

import copy
import json
import subprocess
import time

import pytest

from s2fault import hosttools, kernel, runner
from s2fault import source as sources
from s2fault.errors import BuildError
from s2fault.guest import selftests
from s2fault.judge import lines as workload
from s2fault.machine import profiles

# Recorded from real runs on the upstream kernel under QEMU 7.2 TCG (64K pages).
# The plan of the first was SELFTESTS; the second ran a plan made to skip, fail
# and time out: access_tracking_perf_test without CONFIG_IDLE_PAGE_TRACKING,
# kvm_page_table_test asking for two 512M hugepages when one is reserved,
# dirty_log_perf_test with 100000 iterations and a 4 s timeout.
PASSED = (
    'S2FAULT-RESULT {"workload":"kvm-selftests","vcpus":2,"page_size":65536,'
    '"ctr_el0":"0x9444c004","dic":0,"idc":1,"watchdog_armed":0,"selftests":['
    '{"name":"kvm_page_table_test","args":["-m","8","-s","anonymous_hugetlb","-b",'
    '"524288K","-v","2"],"timeout":240,"exit":0,"status":"pass","seconds":2.05,'
    '"skip_reason":"","assertion":""},{"name":"demand_paging_test","args":["-m","8",'
    '"-b","32M","-v","2"],"timeout":180,"exit":0,"status":"pass","seconds":0.34,'
    '"skip_reason":"","assertion":""},{"name":"dirty_log_perf_test","args":["-m","8",'
    '"-b","32M","-v","2","-i","2"],"timeout":180,"exit":0,"status":"pass",'
    '"seconds":0.43,"skip_reason":"","assertion":""}],"errors":[],"elapsed_ms":2852}'
)
MIXED = (
    'S2FAULT-RESULT {"workload":"kvm-selftests","vcpus":2,"page_size":65536,'
    '"ctr_el0":"0x9444c004","dic":0,"idc":1,"watchdog_armed":0,"selftests":['
    '{"name":"access_tracking_perf_test","args":["-v","2","-b","16M"],"timeout":45,'
    '"exit":4,"status":"skip","seconds":0.17,"skip_reason":"CONFIG_IDLE_PAGE_TRACKING '
    'is not enabled","assertion":""},{"name":"kvm_page_table_test","args":["-m","8",'
    '"-s","anonymous_hugetlb","-b","1G","-v","2"],"timeout":45,"exit":254,'
    '"status":"fail","seconds":0.45,"skip_reason":"","assertion":"lib/kvm_util.c:1000: '
    'region->mmap_start != MAP_FAILED pid=38 tid=38 errno=12 - Cannot allocate memory"},'
    '{"name":"dirty_log_perf_test","args":["-m","8","-b","256M","-v","2","-i","100000"],'
    '"timeout":4,"exit":137,"status":"timeout","seconds":5.05,"skip_reason":"",'
    '"assertion":""}],"errors":[],"elapsed_ms":5697}'
)


def result_of(line: str) -> dict:
    w = workload.parse(f"[    4.1] noise\n{line}\n")
    assert w.result is not None
    return w.result


def test_parse_all_passed():
    m = selftests.parse(result_of(PASSED))
    assert m["judgement"] == ("pass", "3 selftests passed, 0 skipped")
    assert m["counts"] == {"pass": 3, "fail": 0, "skip": 0, "timeout": 0}
    assert [t["name"] for t in m["selftests"]] == [
        "kvm_page_table_test", "demand_paging_test", "dirty_log_perf_test"]
    assert m["selftests"][0]["args"][-1] == "2"
    assert m["seconds"] == pytest.approx(2.82)
    assert not m["dic"] and m["ctr_el0"] == "0x9444c004"


def test_parse_a_failure_names_the_test_and_its_assertion():
    m = selftests.parse(result_of(MIXED))
    verdict, reason = m["judgement"]
    assert verdict == "fail"
    assert reason.startswith("selftest kvm_page_table_test exit 254: lib/kvm_util.c:1000:")
    assert reason.endswith("(+1 more)")
    assert m["counts"] == {"pass": 0, "fail": 1, "skip": 1, "timeout": 1}
    assert m["selftests"][0]["skip_reason"] == "CONFIG_IDLE_PAGE_TRACKING is not enabled"


def test_parse_a_timeout_is_a_failure():
    r = result_of(MIXED)
    r["selftests"] = [t for t in r["selftests"] if t["status"] != "fail"]
    verdict, reason = selftests.parse(r)["judgement"]
    assert (verdict, reason) == ("fail", "selftest dirty_log_perf_test timed out after 5.05 s")


def test_parse_skips_pass_only_with_a_reason():
    r = result_of(MIXED)
    r["selftests"] = [t for t in r["selftests"] if t["status"] == "skip"]
    verdict, reason = selftests.parse(r)["judgement"]
    assert verdict == "pass" and "CONFIG_IDLE_PAGE_TRACKING" in reason
    bare = copy.deepcopy(r)
    bare["selftests"][0]["skip_reason"] = ""
    assert selftests.parse(bare)["judgement"][0] == "error"


def test_parse_could_not_judge():
    r = result_of(PASSED)
    assert selftests.parse(r | {"errors": ["cannot open /ksft/plan"]})["judgement"] == (
        "error", "could not judge: selftests runner: cannot open /ksft/plan")
    assert selftests.parse(r | {"selftests": []})["judgement"][0] == "error"
    verdict, reason = selftests.parse(r | {"dic": 1})["judgement"]
    assert verdict == "skip" and reason.startswith("not applicable: CTR_EL0.DIC=1")


def test_plan_is_one_line_per_test_with_placeholders():
    lines = selftests.plan_text().splitlines()
    assert lines[0].startswith("#")
    tests = [ln.split() for ln in lines[1:]]
    assert [t[0] for t in tests] == [t.name for t in selftests.SELFTESTS]
    assert all(int(t[1]) > 0 for t in tests)
    assert all("@VCPUS@" in t for t in tests)
    assert "@HUGEPAGE@" in tests[0]
    # The runner must be able to give every test its whole timeout.
    assert selftests.budget_seconds() > sum(int(t[1]) for t in tests)


def test_first_error_is_the_compilers(tmp_path):
    gcc = hosttools.require(selftests.CROSS_COMPILE + "gcc")
    (tmp_path / "broken.c").write_text("int f(void)\n{\n\treturn undeclared_thing;\n}\n"
                                       "int g(void) { return also_missing; }\n")
    r = subprocess.run([gcc, "-c", "broken.c"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode != 0
    first = selftests.first_error("make: Entering directory '/x'\n" + r.stderr)
    assert first.startswith("broken.c:3:")
    assert "undeclared_thing" in first and "\n" not in first


@pytest.mark.slow
def test_selftests_build_and_pass_on_upstream(tmp_path):
    started = time.monotonic()
    cpio = selftests.build()
    assert cpio.stat().st_size > 1 << 20
    built = time.monotonic() - started
    assert selftests.build() == cpio  # the second call is a cache hit
    prof = profiles.mode("functional").with_(
        program="s2fault-ksft", vcpus=4, rounds=1, vmm_timeout=selftests.budget_seconds())
    v = runner.run_kernel(kernel.build("upstream").image, prof, tmp_path, "selftests",
                          extra_initramfs=[cpio])
    text = (tmp_path / "console.log").read_text(errors="replace")
    w = workload.parse(text)
    assert w.result is not None, f"no result line; console: {tmp_path / 'console.log'}"
    m = selftests.parse(w.result)
    print(json.dumps({"build_s": round(built, 1), "run": m}, indent=1))
    assert m["judgement"][0] == "pass", m["judgement"]
    assert [t["status"] for t in m["selftests"]] == ["pass"] * len(selftests.SELFTESTS)
    assert m["vcpus"] == 4 and m["dic"] == 0
    assert v.splats == []
    assert w.post is not None and w.post.get("vmm_exit") == 0


def test_a_tree_without_selftests_is_a_build_error_and_publishes_nothing(tmp_path):
    tree = tmp_path / "linux"
    (tree / "arch" / "arm64").mkdir(parents=True)
    (tree / "Makefile").write_text("# not a kernel\n")
    src = sources.Source("linux", "tree:test-no-selftests", tree, "a tree without tools/")
    with pytest.raises(BuildError, match=r"kvm selftests: cannot copy .*linux/tools"):
        selftests.build(src, tmp_path / "cache")
    assert not list((tmp_path / "cache" / "selftests").glob("[!.]*"))
