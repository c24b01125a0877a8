"""The arithmetic `make bench` prints floors with (bench/floors.py), and the session
record it reads them from (conftest._kept): pure functions, no kernel, no QEMU."""

from __future__ import annotations

import sys

from conftest import ROOT, _kept

sys.path.insert(0, str(ROOT / "bench"))
import floors  # noqa: E402


def _edit(**changes: float) -> floors.EditLoop:
    figures = dict(total=14.0, build=7.7, sync=0.1, tuxmake=7.2, make_edit=5.0,
                   make_walk=2.5, make_replay=3.4, runs=5.4, kernel_boot=2.0) | changes
    return floors.EditLoop(**figures)


def test_the_edit_parts_add_up_to_the_figure():
    parts, _ = floors.edit_breakdown(_edit())
    named = {p.name: round(p.seconds, 6) for p in parts}
    assert named["CLI, Python and judging"] == 0.9  # 14.0 - 7.7 - 5.4
    assert named["build bookkeeping"] == 0.4  # 7.7 - 0.1 - 7.2
    assert named["tuxmake around make"] == 2.2  # 7.2 - 5.0
    assert (named["walk"], named["link"], named["compile"]) == (2.5, 0.9, 1.6)
    assert named["workload and power-off"] == 3.4
    assert round(sum(p.seconds for p in parts), 6) == 14.0


def test_the_edit_floor_is_walk_compile_link_and_one_boot_and_names_its_largest():
    _, floor = floors.edit_breakdown(_edit())
    assert [p.name for p in floor.parts] == ["walk", "compile", "link", "boot"]
    assert round(floor.seconds, 6) == 10.4  # 2.5 + 1.6 + 0.9 + 5.4
    assert floor.largest.name == "boot"
    assert floor.describe() == ("floor 10.4 s: walk 2.5 s + compile 1.6 s + link 0.9 s + "
                                "boot 5.4 s (largest: boot)")


def test_a_part_known_as_a_difference_is_never_negative():
    # A noisy replay slower than the edit itself: the compile costs nothing, not -0.3 s.
    _, floor = floors.edit_breakdown(_edit(make_replay=5.3))
    assert {p.name: p.seconds for p in floor.parts}["compile"] == 0.0


def test_a_functional_cell_holds_its_emulated_cpus_up_to_the_hosts_a_dilated_one():
    assert floors.cell_cpus(dilated=True, smp=4, host_cpus=2) == 1
    assert floors.cell_cpus(dilated=False, smp=4, host_cpus=2) == 2
    assert floors.cell_cpus(dilated=False, smp=2, host_cpus=8) == 2


def test_the_matrix_floor_is_its_longest_cell_or_its_cpu_seconds_spread_over_the_host():
    # Ten 6 s cells on 2 CPUs: 5 functional holding 2, 5 dilated holding 1 -> 90 CPU-s.
    cells = [(6.0, 2)] * 5 + [(6.0, 1)] * 5
    assert floors.matrix_floor(cells, host_cpus=2) == (45.0, "CPUs")
    # One long cell on a big host: nothing ends before it does.
    assert floors.matrix_floor([(40.0, 1), (5.0, 2)], host_cpus=64) == (40.0, "longest cell")
    assert floors.matrix_floor([], host_cpus=2) == (0.0, "longest cell")


def test_the_largest_files_come_first_with_their_share():
    files = {"tests/a.py": 10.0, "tests/b.py": 300.0, "tests/c.py": 90.0}
    assert floors.largest_files(files, total=400.0, n=2) == [
        ("tests/b.py", 300.0, 0.75), ("tests/c.py", 90.0, 0.225)]


def test_the_session_record_keeps_the_newest_whole_suites_of_each_kind():
    old_cold = {"whole_suite": True, "cold": True, "n": 0}
    old_warm = {"whole_suite": True, "cold": False, "n": 1}
    new_warm = {"whole_suite": True, "cold": False, "n": 2}
    parts = [{"whole_suite": False, "cold": False, "n": 3 + i} for i in range(5)]
    kept = _kept([old_cold, old_warm, new_warm, *parts], keep=3)
    assert [s["n"] for s in kept] == [0, 2, 5, 6, 7]


def _cold(**changes) -> floors.ColdCheck:
    figures = dict(total=600.0, unpack=30.0, builds=(
        floors.VariantBuild("fix-reverted", 330.0, 20.0, seed=5.0, base_make=290.0),
        floors.VariantBuild("interval-tree-v1", 40.0, 30.0, seed=6.0),
    ), last_cells=(12.0, 25.0)) | changes
    return floors.ColdCheck(**figures)


def test_the_cold_check_parts_add_up_to_the_figure():
    parts, _ = floors.cold_breakdown(_cold())
    named = {p.name: round(p.seconds, 6) for p in parts}
    assert named["base make"] == 290.0
    assert named["variants' makes"] == 50.0
    assert named["seeds"] == 11.0
    assert named["build bookkeeping"] == 19.0  # 370 - 290 - 50 - 11
    assert named["CLI, cells after the last build, judging"] == 200.0  # 600 - 30 - 370
    assert round(sum(p.seconds for p in parts), 6) == 600.0


def test_the_cold_floor_is_the_build_chain_and_the_last_variants_longest_cell():
    _, floor = floors.cold_breakdown(_cold())
    assert [p.name for p in floor.parts] == ["unpack", "base make", "variants' makes",
                                             "last cell"]
    assert round(floor.seconds, 6) == 395.0  # 30 + 290 + 50 + 25
    assert floor.largest.name == "base make"
    # A check whose builds were all cached has no build in its chain.
    _, floor = floors.cold_breakdown(_cold(builds=(), last_cells=()))
    assert floor.seconds == 30.0


def test_no_schedule_beats_the_cpu_time_spread_over_the_cpus():
    assert floors.cpu_floor(1200.0, 2) == 600.0
    assert floors.cpu_floor(90.0, 0) == 90.0
