"""Reports: JSON, JUnit, TAP and the self-contained HTML page, opened in a real browser.

The rows come from the engine itself: real console logs (tests/data, tests/golden)
with their result lines set to measured latencies, judged by judge.judge() and
compared by cell.judge_cells(), exactly as a matrix run makes them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import s2fault, upstream_env
from s2fault import report
from s2fault.judge import lines as workload
from s2fault.judge.rules import judge
from s2fault.kernel import variants
from s2fault.machine import MachineRun, profiles
from s2fault.matrix.cell import Cell, judge_cells

DATA = Path(__file__).parent / "data"
REAL = (DATA / "upstream-functional-console.log").read_text()
# The VMM's lockup with its knock-on reports (migration/0 first, RCU last).
LOCKUP = (Path(__file__).parent / "golden" / "arm64-dilated-cascade-culprit-second.log"
          ).read_text()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Exec-fault latency per round (us), slowest vCPUs first; round 0 is lockdep's warm-up.
# Magnitudes as measured (DESIGN.md): 0.1-1.5 ms shipped, 33-41 ms fix reverted,
# seconds of guest time under dilation.
# Functional: 8 vCPUs, of which only the first to fault does the invalidation.
UPSTREAM_ROUNDS = [[31000.0, 900.0] + [1.5] * 6, [1200.0, 300.0] + [1.2] * 6,
                   [800.0, 250.0] + [1.4] * 6, [1500.0, 90.0] + [1.1] * 6]
REVERTED_ROUNDS = [[45000.0, 1.0] + [1.3] * 6, [35100.0, 1.2] + [1.6] * 6,
                   [38000.0, 1.0] + [1.2] * 6, [41000.0, 2.0] + [1.0] * 6]
UPSTREAM_DILATED = [[4100000.0, 3000.0]]
REVERTED_DILATED = [[55000000.0, 52000000.0]]


def _console(rounds_us: list[list[float]], splat: str = "") -> str:
    """The real upstream console with its result line carrying these rounds."""
    out = []
    for line in REAL.splitlines():
        if line.startswith("S2FAULT-RESULT "):
            obj = json.loads(line.split(" ", 1)[1])
            obj["vcpus"] = len(rounds_us[0])
            obj["rounds"] = [{"exec_fault_us": r, "exec_again_us": [1.0] * len(r)}
                             for r in rounds_us]
            obj["exec_fault_us"] = rounds_us[-1]
            out.append(splat + "S2FAULT-RESULT " + json.dumps(obj))
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def _golden_console(text: str) -> str:
    return text.split("\n\n", 1)[1]


def _cell(results: Path, variant: str, mode: str, exp: variants.Expectation,
          console: str | None) -> Cell:
    """One cell as run_variant() leaves it: artifacts on disk, verdict judged."""
    cell = Cell(variant, mode, exp, build={"key": f"k-{variant}", "cached": True,
                                           "seconds": 0.4, "config": None})
    if console is None:
        cell.why = "build: patch interval-tree-v1/0001.patch does not apply"
        return cell
    outdir = results / f"20260101-000000-{variant}-{mode}-x"
    outdir.mkdir(parents=True)
    (outdir / "console.log").write_text(console)
    (outdir / "qmp.log").write_text('{"return": {}}\n')
    (outdir / "kernel.config").write_text("CONFIG_KVM=y\n")
    run = MachineRun("exited", "QEMU exited", 0, 3.0, outdir / "console.log",
                     outdir / "qmp.log", outdir / "err.log", ["qemu-system-aarch64"])
    v = judge(run, console, workload.parse(console))
    prof = profiles.mode(mode)
    v.profile = prof.to_dict() | {"page_size": 65536, "model_note": (
        "time dilation models a slow CPU; not a hardware measurement" if prof.dilated else None)}
    v.artifacts = {"dir": str(outdir), "console_log": str(outdir / "console.log"),
                   "qmp_log": str(outdir / "qmp.log"), "config": str(outdir / "kernel.config")}
    (outdir / "result.json").write_text(json.dumps(v.to_dict(), indent=2) + "\n")
    cell.verdicts.append(v)
    return cell


def make_results(results: Path) -> tuple[list[dict], dict]:
    """A small matrix: ok, a latency expectation against its reference, a dilated
    lockup, a mismatch and a cell that could not be judged."""
    clean = variants.Expectation()
    slower = variants.Expectation(latency_ratio_min=10.0, latency_reference="upstream")
    lockup = variants.Expectation(
        splats=(variants.SplatSpec("soft_lockup", function=("icache_inval_pou",
                                                            "stage2_attr_walker")),),
        clean=False)
    lockdep = variants.Expectation(
        splats=(variants.SplatSpec("lockdep", subtype="invalid_wait_context"),), clean=False)
    cells = [
        _cell(results, "upstream", "functional", clean, _console(UPSTREAM_ROUNDS)),
        _cell(results, "fix-reverted", "functional", slower, _console(REVERTED_ROUNDS)),
        _cell(results, "upstream", "dilated", clean, _console(UPSTREAM_DILATED)),
        _cell(results, "fix-reverted", "dilated", lockup,
              _console(REVERTED_DILATED, _golden_console(LOCKUP))),
        # Declared to splat, came out clean: the suite must call that a mismatch.
        _cell(results, "interval-tree-onstack", "functional", lockdep,
              _console(UPSTREAM_ROUNDS)),
        _cell(results, "interval-tree-v1", "functional", lockdep, None),
    ]
    judge_cells(cells)
    meta = {"variants": sorted({c.variant for c in cells}), "modes": ["functional", "dilated"],
            "pages": "64k"}
    rows = [c.to_dict() for c in cells]
    report.write_json(rows, results / "check.json", meta)
    return rows, meta


@pytest.fixture
def results(tmp_path) -> Path:
    make_results(tmp_path / "results")
    return tmp_path / "results"


def test_the_fixture_is_what_the_engine_says(results):
    rows, _ = report.load_json(results / "check.json")
    got = {(r["variant"], r["mode"]): r["match"] for r in rows}
    assert got == {
        ("upstream", "functional"): True, ("fix-reverted", "functional"): True,
        ("upstream", "dilated"): True, ("fix-reverted", "dilated"): True,
        ("interval-tree-onstack", "functional"): False,
        ("interval-tree-v1", "functional"): None,
    }


def test_write_all_writes_every_report_and_keeps_check_json(results):
    before = (results / "check.json").read_bytes()
    written = report.write_all(results)
    assert {p.name for p in written} == {"junit.xml", "check.tap", "check.ktap", "report.html"}
    assert (results / "check.json").read_bytes() == before
    suite = ET.parse(results / "junit.xml").getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("6", "1", "1")
    tap = (results / "check.tap").read_text().splitlines()
    assert tap[:2] == ["TAP version 13", "1..6"]
    assert sum(ln.startswith("not ok") for ln in tap) == 2


def test_html_is_one_self_contained_file(results):
    report.write_all(results)
    page = (results / "report.html").read_text()
    # The only URL is the SVG namespace, which is a name, not a fetch.
    urls = [w for w in page.replace('"', " ").split() if "://" in w]
    assert set(urls) == {"http://www.w3.org/2000/svg"}, urls
    for tag in ("<script", "<link", "<img", "@import", "url(http"):
        assert tag not in page
    assert page.count('<svg id="latency-plot"') == 1


def test_html_table_and_plot_say_what_the_engine_said(results):
    report.write_all(results)
    page = (results / "report.html").read_text()
    assert "FAIL: 4 pass, 1 fail, 1 error of 6 cells" in page
    assert "FAIL" in page and "ERROR" in page
    assert "expected but not seen: lockdep:invalid_wait_context" in page
    assert "build: patch interval-tree-v1/0001.patch does not apply" in page
    # Dilated figures are labelled as a model wherever they appear.
    assert "dilated: a MODEL, not hardware" in page
    assert "not a hardware measurement" in page
    assert page.count('class="badge"') == 2
    # One bar per cell that measured a latency, one dot per measured round.
    assert page.count('class="bar"') == 5
    assert page.count('class="round"') == 3 + 3 + 1 + 1 + 3
    assert 'data-variant="fix-reverted" data-mode="functional" data-ms="38"' in page


def test_console_links_are_relative_and_survive_a_move(tmp_path, results):
    """CI downloads each job's results elsewhere: absolute paths in check.json no
    longer exist, the layout below the results directory does."""
    moved = tmp_path / "downloaded" / "results"
    shutil.move(results, moved)
    report.write_all(moved)
    page = (moved / "report.html").read_text()
    hrefs = [h.split('"', 1)[0] for h in page.split('href="')[1:]]
    assert hrefs and all(not h.startswith(("/", "file:")) for h in hrefs), hrefs
    for h in hrefs:
        assert (moved / h).is_file(), h
    assert sum(h.endswith("console.log") for h in hrefs) == 5
    assert "(missing)" not in page


def test_report_merges_per_cell_ci_results(tmp_path):
    """One CI job per cell: the fix-reverted job also ran its reference, upstream."""
    root = tmp_path / "results"
    make_results(root / "all")
    rows, meta = report.load_json(root / "all" / "check.json")
    (root / "all" / "check.json").unlink()
    pick = {"upstream-functional": [("upstream", "functional")],
            "fix-reverted-functional": [("upstream", "functional"),
                                        ("fix-reverted", "functional")]}
    for job, keys in pick.items():
        own = [r for r in rows if (r["variant"], r["mode"]) in keys]
        if job == "fix-reverted-functional":
            own[0] = own[0] | {"observed": "reference run"}
        report.write_json(own, root / job / "check.json",
                          meta | {"variants": [job.rsplit("-", 1)[0]], "modes": ["functional"]})
    assert report.report_main(str(root)) == 0
    merged, merged_meta = report.load_json(root / "check.json")
    assert [(r["variant"], r["mode"]) for r in merged] == [
        ("upstream", "functional"), ("fix-reverted", "functional")]
    # The upstream job's own row wins over the copy run as a reference.
    assert merged[0]["observed"] != "reference run"
    assert merged_meta["merged_from"] == ["fix-reverted-functional", "upstream-functional"]
    assert (root / "report.html").is_file() and (root / "junit.xml").is_file()


def test_report_main_exit_codes(tmp_path, results, capsys):
    assert report.report_main(str(results)) == 1
    out = capsys.readouterr().out
    assert "interval-tree-onstack.exec-fault.functional: FAIL" in out
    assert str(results / "report.html") in out
    assert report.report_main(str(tmp_path / "nothing")) == 2
    assert "no check.json in" in capsys.readouterr().err


# --- In a real browser --------------------------------------------------------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    if not CHROMIUM:
        pytest.skip("chromium is not installed (`make setup` installs it)")
    profile = tmp / "chromium-profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120,
        env=os.environ | {"HOME": str(tmp)},  # chromium writes its dot-files there
    )


class _PlotCounter(HTMLParser):
    """Counts bars and dots inside <svg id="latency-plot"> of a serialised DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.in_plot = 0
        self.seen_plot = False
        self.bars: list[dict] = []
        self.rounds = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "svg" and a.get("id") == "latency-plot":
            self.in_plot, self.seen_plot = 1, True
        elif self.in_plot and tag == "svg":
            self.in_plot += 1
        if self.in_plot and tag == "rect" and a.get("class") == "bar":
            self.bars.append(a)
        if self.in_plot and tag == "circle" and a.get("class") == "round":
            self.rounds += 1

    def handle_endtag(self, tag):
        if self.in_plot and tag == "svg":
            self.in_plot -= 1


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit non-interlaced PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    assert header is not None
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and interlace == 0 and colour in (2, 6), header
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, ul = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - ul
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - ul)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else ul
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line) if bpp == 3 else
                    bytes(b for j in range(0, stride, 4) for b in line[j:j + 3]))
        prev = line
    return width, height, rows


def check_in_browser(html_path: Path, tmp: Path, cells_with_latency: int) -> None:
    url = html_path.resolve().as_uri()
    dom = chromium(tmp, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    plot = _PlotCounter()
    plot.feed(dom.stdout)
    assert plot.seen_plot, "no <svg id=latency-plot> in the rendered DOM"
    assert len(plot.bars) == cells_with_latency
    assert all(float(b["width"]) > 0 for b in plot.bars)
    assert plot.rounds >= cells_with_latency

    png = tmp / "report.png"
    shot = chromium(tmp, f"--screenshot={png}", "--window-size=1200,900", url)
    assert png.is_file(), shot.stderr[-2000:]
    assert png.stat().st_size > 10_000, "screenshot is suspiciously small"
    width, height, rows = png_pixels(png)
    assert (width, height) == (1200, 900)
    pixels = [row[i:i + 3] for row in rows[::3] for i in range(0, len(row), 9)]
    colours = {p for p in pixels}
    assert len(colours) > 20, "the screenshot is (nearly) one colour"
    non_white = sum(p != b"\xff\xff\xff" for p in pixels)
    assert non_white > 0.02 * len(pixels)
    # The green of an "ok" bar, drawn by the browser from the inline SVG.
    ok_green = bytes((0x2E, 0x7D, 0x32))
    assert any(row[i:i + 3] == ok_green for row in rows for i in range(0, len(row), 3))


def test_report_renders_in_headless_chromium(tmp_path, results):
    report.write_all(results)
    rows, _ = report.load_json(results / "check.json")
    measured = sum(r["workload"].get("exec_fault_ms", {}).get("max") is not None
                   for r in rows)
    check_in_browser(results / "report.html", tmp_path, measured)


@pytest.mark.slow
@pytest.mark.functional
def test_report_of_a_real_check_run(tmp_path):
    """The real thing end to end: `s2fault check` boots upstream, the report renders."""
    results = tmp_path / "results"
    r = s2fault("check", "--variant", "upstream", "--mode", "functional",
                "--results", str(results), env=upstream_env(tmp_path))
    # upstream is declared clean in functional (patches/upstream/variant.toml): its
    # cell must pass. A mismatch (1) is the regression this lab exists to catch.
    assert r.returncode == 0, r.stdout + r.stderr
    report.write_all(results)
    rows, _ = report.load_json(results / "check.json")
    assert rows[0]["workload"]["exec_fault_ms"]["max"] is not None, rows[0]["reason"]
    page = (results / "report.html").read_text()
    assert Path(rows[0]["artifacts"]["console_log"]).is_file()
    assert "console</a>" in page
    check_in_browser(results / "report.html", tmp_path, 1)


# --- KTAP, stable names, schema ---------------------------------------------------------

def test_ktap_is_version_1_a_suite_per_variant_with_skip_and_diagnostics(tmp_path, results):
    rows, _ = report.load_json(results / "check.json")
    rows[2] = rows[2] | {"outcome": "skip", "match": None,
                         "why": "not applicable: CTR_EL0.DIC=1 # here"}
    report.write_ktap(rows, tmp_path / "r.ktap")
    lines = (tmp_path / "r.ktap").read_text().splitlines()
    assert lines[:2] == ["KTAP version 1", "1..4"]
    top = [ln for ln in lines if re.match(r"(not )?ok \d+ ", ln)]
    assert top == ["ok 1 upstream", "ok 2 fix-reverted", "not ok 3 interval-tree-onstack",
                   "not ok 4 interval-tree-v1"]
    sub = [ln.strip() for ln in lines if re.match(r" {4}(not )?ok \d+ ", ln)]
    assert sub[:2] == ["ok 1 exec-fault.functional",
                       "ok 2 exec-fault.dilated # SKIP not applicable: CTR_EL0.DIC=1 no. here"]
    assert "    # Subtest: upstream" in lines and lines.count("    KTAP version 1") == 4
    assert "not ok 1 exec-fault.functional # error " in "\n".join(sub[-1:]) + " "
    # Measurements only in diagnostic lines: no result line carries a number of ms.
    assert not any("ms" in ln for ln in top + sub if "# SKIP" not in ln and "# error" not in ln)
    assert any(ln.startswith("    # exec-fault.functional: exec_fault_max_ms: ") for ln in lines)


def test_names_are_stable_across_runs_whatever_was_measured(tmp_path, results):
    rows, _ = report.load_json(results / "check.json")
    other = [r | {"observed": "clean; max 99 ms", "workload": {}} for r in rows]
    names = []
    for i, rs in enumerate((rows, other)):
        report.write_tap(rs, tmp_path / f"{i}.tap")
        report.write_ktap(rs, tmp_path / f"{i}.ktap")
        report.write_junit(rs, tmp_path / f"{i}.xml")
        tap = [re.sub(r"^(not )?ok \d+ - (\S+).*", r"\2", ln)
               for ln in (tmp_path / f"{i}.tap").read_text().splitlines()
               if re.match(r"(not )?ok \d+ ", ln)]
        ktap = [re.sub(r"^\s*(not )?ok \d+ (\S+).*", r"\2", ln)
                for ln in (tmp_path / f"{i}.ktap").read_text().splitlines()
                if re.match(r"\s*(not )?ok \d+ ", ln)]
        junit = [(c.get("classname"), c.get("name"))
                 for c in ET.parse(tmp_path / f"{i}.xml").getroot()]
        names.append((tap, ktap, junit))
    assert names[0] == names[1]
    tap, _, junit = names[0]
    assert tap[0] == "upstream.exec-fault.functional"
    assert junit[0] == ("s2fault.upstream", "exec-fault.functional")


def test_junit_says_skipped_and_json_has_schema_and_versions(tmp_path, results):
    rows, _ = report.load_json(results / "check.json")
    doc = json.loads((results / "check.json").read_text())
    assert doc["schema_version"] == report.SCHEMA_VERSION and doc["meta"]["s2fault_version"]
    assert all({"test_id", "outcome", "versions"} <= set(r) for r in doc["cells"])
    assert all({"s2fault", "qemu", "cpu", "kernel"} <= set(r["versions"]) for r in doc["cells"])
    rows[0] = rows[0] | {"outcome": "skip", "match": None, "why": "not applicable: DIC=1"}
    report.write_junit(rows, tmp_path / "j.xml")
    suite = ET.parse(tmp_path / "j.xml").getroot()
    assert suite.get("skipped") == "1"
    skipped = suite.find("testcase/skipped")
    assert skipped is not None and skipped.get("message") == "not applicable: DIC=1"


def test_ktap_reads_as_the_kernel_parses_it(tmp_path, results):
    """The kernel's own KTAP parser (tools/testing/kunit, `kunit.py parse`) from the
    Debian tree in the cache: suites, subtests, skip, fail and error as it counts them."""
    trees = sorted((Path.home() / ".cache" / "s2fault").glob(
        "sources/*/tree/linux-source-6.12/tools/testing/kunit/kunit.py"))
    trees += sorted(Path(os.environ.get("S2FAULT_CACHE", "/nonexistent")).glob(
        "sources/*/tree/linux-source-6.12/tools/testing/kunit/kunit.py"))
    if not trees:
        pytest.skip("Debian linux-source-6.12 is not unpacked in the cache (run `make check`)")
    rows, _ = report.load_json(results / "check.json")
    rows[2] = rows[2] | {"outcome": "skip", "match": None, "why": "not applicable: DIC=1"}
    report.write_ktap(rows, tmp_path / "r.ktap")
    r = subprocess.run([sys.executable, str(trees[0]), "parse", str(tmp_path / "r.ktap")],
                       capture_output=True, text=True, cwd=trees[0].parent)
    out = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout)
    assert "Ran 6 tests: passed: 3, failed: 2, skipped: 1" in out, out + r.stderr
    assert "[SKIPPED] exec-fault.dilated" in out and "[PASSED] upstream" in out
    assert "[FAILED] interval-tree-onstack" in out
    assert "[FAILED] interval-tree-v1" in out  # an error is never a pass


def test_html_and_json_list_reports_culprit_first(results):
    """The dilated lockup's cell: the VMM's report leads, the stopper thread that
    reported first is a consequence under it, in the JSON and the page alike."""
    rows = json.loads((results / "check.json").read_text())["cells"]
    row = next(r for r in rows if r["variant"] == "fix-reverted" and r["mode"] == "dilated")
    roles = [(s["task"], s.get("role"), s.get("why")) for s in row["splats"]]
    assert roles[0] == ("migration/0", "consequence", "stopper thread")
    assert ("init", "culprit", None) in roles
    assert row["reason"].startswith("soft_lockup: soft lockup in icache_inval_pou (stuck for 4 s); "
                                    "3 consequence(s): stopper thread"), row["reason"]
    report.write_all(results)
    page = (results / "report.html").read_text()
    block = page[page.index('<details class="incidents">'):]
    block = block[:block.index("</details>")]
    assert block.index("<b>soft lockup in icache_inval_pou</b>") < block.index(
        "consequence (stopper thread)")
