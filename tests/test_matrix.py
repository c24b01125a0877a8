"""The variant matrix for real: every variant built, booted in both modes, and
compared with what it declares. Known-bad kernels must be seen as bad."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from conftest import project_home, s2fault
from s2fault.kernel import variants

pytestmark = [pytest.mark.slow, pytest.mark.functional]


@pytest.fixture(scope="module")
def matrix_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("matrix")
    r = s2fault("check", "--results", str(out / "runs"), "--json", str(out / "check.json"),
                "--junit", str(out / "junit.xml"), "--tap", str(out / "check.tap"))
    return r, out


def test_full_matrix_matches_every_declaration(matrix_run):
    r, out = matrix_run
    assert r.returncode == 0, r.stdout + r.stderr
    cells = json.loads((out / "check.json").read_text())["cells"]
    expected = {(name, mode) for name in variants.names() for mode in variants.DEFAULT_MODES}
    assert {(c["variant"], c["mode"]) for c in cells} == expected
    for c in cells:
        assert c["match"] is True, c
        for key in ("variant", "mode", "declared", "observed", "match", "splats", "workload"):
            assert key in c


def test_known_bad_variants_really_show_their_splats(matrix_run):
    _, out = matrix_run
    cells = {(c["variant"], c["mode"]): c for c in
             json.loads((out / "check.json").read_text())["cells"]}
    lockup = cells[("fix-reverted", "dilated")]["splats"]
    assert any(s["kind"] == "soft_lockup" and s["function"] in
               ("icache_inval_pou", "stage2_attr_walker") for s in lockup)
    v1 = cells[("interval-tree-v1", "functional")]["splats"]
    assert any(s["kind"] == "lockdep" and s["subtype"] == "invalid_wait_context" for s in v1)
    assert any(s["kind"] == "atomic_sleep" for s in v1)
    for clean in ("upstream", "full-inval-always"):
        for mode in variants.DEFAULT_MODES:
            assert cells[(clean, mode)]["splats"] == []
    up = cells[("upstream", "functional")]["workload"]["exec_fault_ms"]["max"]
    rev = cells[("fix-reverted", "functional")]["workload"]["exec_fault_ms"]["max"]
    assert rev >= 10 * up


def test_reports_are_written(matrix_run):
    _, out = matrix_run
    suite = ET.parse(out / "junit.xml").getroot()
    assert suite.tag == "testsuite" and int(suite.get("failures")) == 0
    assert len(suite.findall("testcase")) == 2 * len(variants.names())
    tap = (out / "check.tap").read_text().splitlines()
    assert tap[0] == "TAP version 13" and all(not ln.startswith("not ok") for ln in tap)


def test_flipped_expectation_fails_and_names_the_row(tmp_path):
    """Declare that upstream locks up: the same kernel must now be a mismatch (exit 1)."""
    home = project_home(tmp_path / "home", copy_patches=True)
    toml = home / "patches" / "upstream" / "variant.toml"
    text = toml.read_text().split("[expect.functional]")[0]
    toml.write_text(text + '[expect.functional]\nsplats = [{kind = "soft_lockup"}]\n'
                    "clean = false\n")
    r = s2fault("check", "--variant", "upstream", "--mode", "functional",
                "--results", str(tmp_path / "runs"), env={"S2FAULT_HOME": str(home)})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL" in r.stdout
    assert "upstream/functional: expected but not seen: soft_lockup" in r.stdout
