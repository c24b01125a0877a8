"""The CI pipelines are generated from ci/matrix.yaml, the file Avocado multiplexes.

Checked here: both pipelines parse and have what each CI system requires, their
jobs are exactly the matrix's cells, the cells are the ones Avocado's own
yaml-to-mux varianter makes of the file, and a stale pipeline is caught.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from s2fault import cimatrix
from s2fault.errors import InputError

CI = ROOT / "ci"
AVOCADO = Path(sys.executable).with_name("avocado")


@pytest.fixture(scope="module")
def cells() -> list[cimatrix.CiCell]:
    return cimatrix.load_cells(CI / "matrix.yaml")


def _load(name: str) -> dict:
    return yaml.safe_load((CI / name).read_text())


def test_the_matrix_is_variant_by_mode(cells):
    assert len(cells) == 10
    assert {c.mode for c in cells} == {"functional", "dilated"}
    assert {c.variant for c in cells} == {"upstream", "fix-reverted", "interval-tree-v1",
                                          "interval-tree-onstack", "full-inval-always"}
    assert {(c.mode, c.vcpus, c.pages) for c in cells} == {("functional", 8, "64k"),
                                                           ("dilated", 2, "64k")}
    assert {c.id for c in cells} == {f"{c.variant}-{c.mode}" for c in cells}


def test_cells_are_what_avocado_makes_of_the_same_file(cells, tmp_path):
    """Our reading of !mux must agree with the varianter Avocado runs."""
    dump = tmp_path / "variants.json"
    r = subprocess.run([str(AVOCADO), "variants", "--mux-yaml", str(CI / "matrix.yaml"),
                        "--json-variants-dump", str(dump)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    avocado_cells = set()
    for variant in json.loads(dump.read_text()):
        params = {key: value for _, leaf in variant["variant"] for _, key, value in leaf}
        avocado_cells.add((params["variant"], params["mode"], params["vcpus"],
                           params["pages"]))
    assert avocado_cells == {(c.variant, c.mode, c.vcpus, c.pages) for c in cells}


def test_github_workflow_has_what_github_requires(cells):
    wf = _load("github-actions.yml")
    assert "on" in wf and {"push", "pull_request"} <= set(wf["on"])
    jobs = wf["jobs"]
    assert set(jobs) == {c.id for c in cells} | {"report"}
    for job_id, job in jobs.items():
        assert job["runs-on"] == "ubuntu-latest"
        assert job["container"] == "debian:12"
        assert job["steps"], job_id
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), (job_id, step)
    for cell in cells:
        steps = jobs[cell.id]["steps"]
        runs = [s["run"] for s in steps if "run" in s]
        assert "make setup" in runs
        check = next(r for r in runs if "s2fault check" in r)
        assert f"--variant {cell.variant} --mode {cell.mode}" in check
        assert f"--results results/{cell.id}" in check and "--junit" in check
        cached = {s["with"]["path"] for s in steps if s.get("uses", "").startswith(
            "actions/cache@")}
        assert cached == {"~/.cache/s2fault/sources", "~/.ccache", "~/.cache/s2fault/kernels"}
        upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
        assert upload["if"] == "always()" and upload["with"]["path"] == "results/"
    report = jobs["report"]
    assert set(report["needs"]) == {c.id for c in cells} and report["if"] == "always()"
    assert any("s2fault report results" in s.get("run", "") for s in report["steps"])


def test_gitlab_pipeline_has_what_gitlab_requires(cells):
    pl = _load("gitlab-ci.yml")
    keywords = {"stages", "variables", "default", "workflow", "include"}
    jobs = {k: v for k, v in pl.items() if k not in keywords and not k.startswith(".")}
    assert set(jobs) == {c.id for c in cells} | {"report"}
    assert pl["default"]["image"] == "debian:12"
    assert "make setup" in pl["default"]["before_script"]
    for job_id, job in jobs.items():
        assert job["stage"] in pl["stages"], job_id
        assert job["script"] and all(isinstance(line, str) for line in job["script"])
        assert "results/" in job["artifacts"]["paths"]
        assert job["artifacts"]["when"] == "always"
    for cell in cells:
        job = jobs[cell.id]
        assert f"--variant {cell.variant} --mode {cell.mode}" in job["script"][0]
        assert job["artifacts"]["reports"]["junit"] == f"results/{cell.id}/junit.xml"
        cached = {p for c in job["cache"] for p in c["paths"]}
        # GitLab caches only inside the project; the variables point the caches there.
        assert cached == {".cache/s2fault/sources", ".ccache", ".cache/s2fault/kernels"}
    assert pl["variables"]["S2FAULT_CACHE"] == "$CI_PROJECT_DIR/.cache/s2fault"
    assert {n["job"] for n in jobs["report"]["needs"]} == {c.id for c in cells}
    assert jobs["report"]["script"] == [".venv/bin/s2fault report results"]


def test_committed_pipelines_are_up_to_date():
    r = subprocess.run([sys.executable, "-m", "s2fault.cimatrix", "--check"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr


def _ci_copy(tmp_path: Path) -> Path:
    ci = tmp_path / "ci"
    ci.mkdir()
    for name in ("matrix.yaml", cimatrix.GITHUB_FILE, cimatrix.GITLAB_FILE):
        shutil.copy(CI / name, ci / name)
    return ci


def test_adding_a_variant_makes_check_fail_until_write(tmp_path):
    ci = _ci_copy(tmp_path)
    text = (ci / "matrix.yaml").read_text()
    text = text.replace(
        "  full-inval-always:\n    variant: full-inval-always\n",
        "  full-inval-always:\n    variant: full-inval-always\n"
        "  mutex-free-v2:\n    variant: mutex-free-v2\n")
    assert "mutex-free-v2" in text
    (ci / "matrix.yaml").write_text(text)

    cmd = [sys.executable, "-m", "s2fault.cimatrix", "--ci-dir", str(ci)]
    r = subprocess.run([*cmd, "--check"], capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.splitlines()[0] == (
        "ci/ is out of date with ci/matrix.yaml: run `python -m s2fault.cimatrix --write`")

    assert subprocess.run([*cmd, "--write"], capture_output=True).returncode == 0
    assert subprocess.run([*cmd, "--check"], capture_output=True).returncode == 0
    jobs = yaml.safe_load((ci / cimatrix.GITHUB_FILE).read_text())["jobs"]
    assert {"mutex-free-v2-functional", "mutex-free-v2-dilated"} <= set(jobs)
    assert len(jobs) == 12 + 1


def test_wider_cells_get_their_own_job_names(tmp_path):
    """64 vCPUs and 4K pages on request: the usual job names do not change."""
    ci = _ci_copy(tmp_path)
    text = (ci / "matrix.yaml").read_text()
    text = text.replace('      "8":\n        vcpus: 8\n',
                        '      "8":\n        vcpus: 8\n      "64":\n        vcpus: 64\n')
    text = text.replace("  64k:\n    pages: 64k\n",
                        "  64k:\n    pages: 64k\n  4k:\n    pages: 4k\n")
    (ci / "matrix.yaml").write_text(text)
    ids = {c.id for c in cimatrix.load_cells(ci / "matrix.yaml")}
    assert len(ids) == 5 * 3 * 2
    assert {"upstream-functional", "upstream-functional-64vcpus", "upstream-functional-4k",
            "upstream-functional-64vcpus-4k", "upstream-dilated-4k"} <= ids


def test_yaml_to_mux_tags_other_than_mux_are_refused_by_name(tmp_path):
    path = tmp_path / "matrix.yaml"
    path.write_text("variant: !mux\n  upstream:\n    variant: upstream\n"
                    "    !filter-only : /run/mode/functional\nmode: functional\n")
    with pytest.raises(InputError, match="!filter-only is not understood"):
        cimatrix.load_cells(path)
