"""The Avocado front end for real: ci/matrix.yaml multiplexed over tests/functional.

Lists the cells (a dry run: Avocado's own product of tests and variants), then runs
a subset through `avocado run` and checks the job passed and left each cell's
artifacts (console, QMP log, result, kernel .config) and the HTML report where
Avocado users look for them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, upstream_env
from s2fault.kernel import variants

pytestmark = [pytest.mark.slow, pytest.mark.functional]

AVOCADO = Path(sys.executable).with_name("avocado")
MATRIX = ROOT / "ci" / "matrix.yaml"
TESTS = ROOT / "tests" / "functional"


def avocado(*args: str, env: dict | None = None, timeout: float = 1800):
    return subprocess.run([str(AVOCADO), *args], cwd=ROOT, capture_output=True, text=True,
                          env=os.environ | (env or {}), timeout=timeout)


def _declared(name: str) -> bool:
    return (ROOT / "patches" / name / "variant.toml").is_file()


def _job(results: Path) -> tuple[Path, dict]:
    job = next(results.glob("job-*"))
    return job, json.loads((job / "results.json").read_text())


def test_the_matrix_has_ten_cells_for_avocado(tmp_path):
    listed = avocado("list", str(TESTS))
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "ExecFault.test" in listed.stdout
    tags = avocado("list", "--filter-by-tags", "arch:aarch64,accel:tcg", str(TESTS))
    assert "ExecFault.test" in tags.stdout, tags.stdout + tags.stderr

    # A dry run is Avocado's own product of tests and variants (`avocado list` takes
    # no --mux-yaml); it keeps no job directory, so the cells are read from stdout.
    r = avocado("run", "--dry-run", "--mux-yaml", str(MATRIX), "--disable-sysinfo",
                str(TESTS), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    ids = sorted({m.group(1) for m in re.finditer(r"ExecFault\.test;(\S+):\s+CANCEL", r.stdout)})
    assert len(ids) == 2 * len(variants.names()), r.stdout
    for variant in variants.names():
        for mode in ("functional", "dilated"):
            cell = re.compile(rf"mode-{mode}-.*-variant-{variant}-[0-9a-f]{{4}}$")
            assert sum(bool(cell.search(i)) for i in ids) == 1, (variant, mode, ids)


def test_avocado_runs_a_subset_of_the_matrix(tmp_path):
    """upstream x functional, and fix-reverted x functional once it is declared
    (its latency expectation runs upstream as its reference inside the test)."""
    env = upstream_env(tmp_path)
    wanted = ["upstream"] + (["fix-reverted"] if not env and _declared("fix-reverted") else [])
    results = tmp_path / "job-results"
    html = tmp_path / "job.html"
    r = avocado(
        "run", "--mux-yaml", str(MATRIX),
        "--mux-filter-only", *[f"/run/variant/{v}" for v in wanted], "/run/mode/functional",
        "--job-results-dir", str(results), "--html", str(html), "--disable-sysinfo",
        "--max-parallel-tasks", "1",  # QEMU runs stay sequential on a small machine
        str(TESTS), env=env,
    )
    job, summary = _job(results)
    debug = (job / "job.log").read_text()[-4000:]
    assert r.returncode == 0, r.stdout + r.stderr + debug
    assert summary["pass"] == len(wanted) == summary["total"], summary
    assert html.is_file() and html.stat().st_size > 1000
    assert (job / "results.html").is_file()

    for test in summary["tests"]:
        logdir = Path(test["logdir"])
        for name in ("console.log", "qmp.log", "result.json", "kernel.config", "cell.json"):
            assert (logdir / name).is_file(), (logdir, name)
        assert "S2FAULT-RESULT" in (logdir / "console.log").read_text(errors="replace")
        assert "CONFIG_KVM=y" in (logdir / "kernel.config").read_text()
        cell = json.loads((logdir / "cell.json").read_text())
        assert cell["match"] is True and cell["mode"] == "functional"
        assert cell["variant"] in test["id"]


def test_avocado_runs_a_workload_cell(tmp_path):
    """The workload axis (ci/matrix-workloads.yaml) on top of the matrix: the many-blocks
    cell of fix-reverted, with its upstream reference run inside the test; a workload
    that has no dilated form is cancelled there, not failed."""
    results = tmp_path / "job-results"
    r = avocado(
        "run", "--mux-yaml", str(MATRIX), str(ROOT / "ci" / "matrix-workloads.yaml"),
        "--mux-filter-only", "/run/variant/fix-reverted", "/run/workload/many-blocks",
        "--job-results-dir", str(results), "--disable-sysinfo", "--max-parallel-tasks", "1",
        str(TESTS),
    )
    job, summary = _job(results)
    assert r.returncode == 0, r.stdout + r.stderr + (job / "job.log").read_text()[-4000:]
    assert (summary["pass"], summary["cancel"]) == (1, 1), summary
    passed = next(t for t in summary["tests"] if t["status"] == "PASS")
    cell = json.loads((Path(passed["logdir"]) / "cell.json").read_text())
    assert cell["workload_name"] == "many-blocks" and cell["match"] is True
    assert cell["workload"]["blocks"]["slope_ms"] > 0
