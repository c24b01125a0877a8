"""Applicability: every variant's series is checked against the source before anything
is built. Real patch(1) on a small real tree; the matrix turns a series that does not
apply into "could not judge" cells naming the patch and the hunk, without a build."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from conftest import project_home
from s2fault import matrix
from s2fault.errors import BuildError
from s2fault.judge.verdict import ReportedSplat, Verdict
from s2fault.kernel import series as kernel_series
from s2fault.kernel import variants
from s2fault.matrix.cell import Cell, exit_code, judge_cells, table
from s2fault.outcome import Outcome

ORIGINAL = [f"static int line_{i};\n" for i in range(1, 21)]


def _diff(path: str, old: list[str], new: list[str]) -> str:
    src = f"a/{path}" if old else "/dev/null"
    body = "".join(difflib.unified_diff(old, new, src, f"b/{path}"))
    return f"diff --git a/{path} b/{path}\n{body}"


def _variant(home: Path, name: str, diffs: list[str], base: str | None = None,
             extra: str = "") -> None:
    folder = home / "patches" / name
    folder.mkdir(parents=True)
    names = []
    for i, diff in enumerate(diffs, 1):
        patch = f"{i:04d}-{name}.patch"
        (folder / patch).write_text(f"From: t <t@localhost>\nSubject: [PATCH] {name}\n\n"
                                    f"why\n---\n{diff}")
        names.append(patch)
    (folder / "series").write_text("\n".join(names) + "\n")
    (folder / "variant.toml").write_text((f'base = "{base}"\n' if base else "") + extra)


@pytest.fixture
def tree_and_home(tmp_path, monkeypatch):
    """A kernel-shaped tree (enough for a tree --source) and a patches/ of our own."""
    tree = tmp_path / "linux"
    (tree / "arch" / "arm64" / "kvm").mkdir(parents=True)
    (tree / "Makefile").write_text("all:\n")
    (tree / "arch" / "arm64" / "kvm" / "mmu.c").write_text("".join(ORIGINAL))
    home = project_home(tmp_path / "home")
    monkeypatch.setenv("S2FAULT_HOME", str(home))
    return tree, home


MMU = "arch/arm64/kvm/mmu.c"


def test_a_chain_is_checked_in_order_and_the_tree_stays_pristine(tree_and_home):
    tree, home = tree_and_home
    first = ORIGINAL[:4] + ["static long line_5;\n"] + ORIGINAL[5:]
    second = first[:4] + ["static long long line_5;\n"] + first[5:]
    _variant(home, "first", [_diff(MMU, ORIGINAL, first)])
    # Applies only on top of `first`: the check must see what the base did.
    _variant(home, "second", [_diff(MMU, first, second),
                              _diff("arch/arm64/kvm/new/added.c", [], ["int added;\n"])],
             base="first")
    kernel_series.check_series(variants.load("second"), tree)
    assert (tree / MMU).read_text() == "".join(ORIGINAL)
    assert sorted(p.name for p in tree.rglob("*")) == ["Makefile", "arch", "arm64", "kvm",
                                                      "mmu.c"]


def test_a_patch_that_does_not_apply_names_itself_and_its_hunk(tree_and_home):
    tree, home = tree_and_home
    # Written against a tree where line 10 differs: hunk 1 of patch 2 has it as context.
    elsewhere = ORIGINAL[:9] + ["static char other;\n"] + ORIGINAL[10:]
    changed = elsewhere[:10] + ["static long line_11;\n"] + elsewhere[11:]
    good = ORIGINAL[:1] + ["static int line_1a;\n"] + ORIGINAL[1:]
    _variant(home, "stale", [_diff(MMU, ORIGINAL, good), _diff(MMU, elsewhere, changed)])
    with pytest.raises(BuildError) as e:
        kernel_series.check_series(variants.load("stale"), tree)
    # Patch 2 of 2 fails, after patch 1 applied.
    assert e.value.message.startswith(
        f"patch stale/0002-stale.patch does not apply: Hunk #1 FAILED at 8 in {MMU}")
    _variant(home, "nofile", [_diff("arch/arm64/kvm/gone.c", ORIGINAL, good)])
    with pytest.raises(BuildError, match="nofile/0001-nofile.patch does not apply: file to "
                                         "patch not found"):
        kernel_series.check_series(variants.load("nofile"), tree)


def test_paths_outside_the_tree_are_never_copied(tmp_path):
    patch = tmp_path / "evil.patch"
    patch.write_text("--- a/../../etc/passwd\n+++ b/../../etc/passwd\n"
                     "diff --git a//etc/shadow b//etc/shadow\n--- a/ok/file.c\n")
    assert kernel_series._touched_files(patch) == {"ok/file.c"}


def test_the_matrix_does_not_build_a_series_that_does_not_apply(tree_and_home, tmp_path):
    tree, home = tree_and_home
    stale = ["static char other;\n"] + ORIGINAL[1:]
    _variant(home, "stale", [_diff(MMU, stale, stale[:1] + ["int x;\n"] + stale[1:])],
             extra="[expect.functional]\nclean = true\n")
    cells = matrix.run_matrix(["stale"], ["functional"], tmp_path / "results",
                              matrix.RunOptions(source=str(tree)))
    assert [(c.variant, c.mode, c.outcome, c.build) for c in cells] == [
        ("stale", "functional", Outcome.ERROR, {})]
    assert cells[0].why == (f"could not judge: patch stale/0001-stale.patch does not apply: "
                            f"Hunk #1 FAILED at 1 in {MMU}")
    assert exit_code(cells) == 2
    assert "ERROR" in table(cells)


def test_expectations_not_filled_in_are_never_judged():
    unfilled = variants.Expectation(unfilled=True)
    clean = Verdict(Outcome.PASS, "clean")
    splat = Verdict(Outcome.FAIL, "lockdep",
                    splats=[ReportedSplat.from_dict({"kind": "lockdep", "title": "BUG"})])
    cells = [Cell("imported", "functional", unfilled, verdicts=[clean]),
             Cell("imported", "dilated", unfilled, verdicts=[splat])]
    judge_cells(cells)
    for c in cells:
        assert c.outcome is Outcome.ERROR
        assert c.why == "could not judge: expectations of imported not filled in"
    assert cells[0].observed == "clean" and cells[1].observed.startswith("lockdep")
    assert exit_code(cells) == 2
