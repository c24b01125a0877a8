"""`bisect --fix`, for real: a history that breaks the I-cache fix and later restores it,
bisected through `git bisect run` with real builds and real QEMU.

The history is made by test_bisect.py's machinery on a shared clone of its fixture
repository: a work tree (and so a bisect build directory) of its own, so this bisection
never waits for, or rebuilds over, the one test_bisect.py runs.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from test_bisect import (
    _ICACHE_FIX,
    BASE_TAG,
    ICACHE_BUG,
    Change,
    fixture_repo,
    git,
    harmless,
    make_history,
)

from conftest import s2fault
from s2fault import bisection as bisect
from s2fault import cache, project
from s2fault.bisection import step as bisect_step

_NO_FIX = "if (icache_is_aliasing())"


def _restore_icache_fix(text: str) -> str:
    assert text.count(_NO_FIX) == 1 and _ICACHE_FIX not in text, "the fixture's break moved"
    return text.replace(_NO_FIX, _ICACHE_FIX)


ICACHE_RESTORED = Change(
    "KVM: arm64: invalidate the whole I-cache for large blocks again (fixture: the fix)",
    (("arch/arm64/include/asm/kvm_mmu.h", _restore_icache_fix),),
)


def fix_repo() -> Path:
    """A shared clone (objects borrowed, work tree its own) of the bisect fixture."""
    origin = fixture_repo()
    repo = origin.parent / f"{origin.name}-fix"
    with cache.locked(project.cache_dir() / "locks" / f"bisect-fixture-{repo.name}.lock"):
        if not (repo / ".git").is_dir():
            tmp = repo.with_name(f".tmp-{repo.name}")
            subprocess.run(["rm", "-rf", str(tmp)], check=True)
            subprocess.run(["git", "clone", "-q", "--shared", str(origin), str(tmp)], check=True)
            git(tmp, "config", "gc.auto", "0")
            git(tmp, "config", "advice.detachedHead", "false")
            tmp.rename(repo)
    return repo


@pytest.fixture(scope="session")
def fix_history() -> dict:
    """base, note, BREAK (fix removed), note, note, RESTORE (fix back), note."""
    repo = fix_repo()
    if subprocess.run(["git", "-C", str(repo), "bisect", "log"],
                      capture_output=True).returncode == 0:
        git(repo, "bisect", "reset")  # an interrupted earlier session
    git(repo, "checkout", "-q", "--detach", BASE_TAG)
    git(repo, "reset", "-q", "--hard")
    commits = make_history(repo, "icache-fix", [
        harmless(1, "f"), ICACHE_BUG, harmless(2, "f"), harmless(3, "f"), ICACHE_RESTORED,
        harmless(4, "f")])
    return {"repo": repo, "commits": commits, "broken": commits[1], "fixed": commits[4]}


def test_fix_terms_turn_only_the_exit_code_around():
    assert bisect_step.FIX_EXIT_OF["bad"] == bisect_step.EXIT_GOOD  # old: still broken
    assert bisect_step.FIX_EXIT_OF["good"] == bisect_step.EXIT_BAD  # new: fixed
    assert bisect_step.FIX_EXIT_OF["skip"] == 125 and bisect_step.FIX_EXIT_OF["abort"] == 128
    req = bisect.Request(repo=".", good="NEW", bad="OLD", fix=True, expect="latency>=10")
    assert req.new_term == "fixed" and req.step_args(Path("d"))[-1] == "--fix"
    log = ("git bisect start '--term-old=broken' '--term-new=fixed' 'aa' 'bb'\n"
           "# first fixed commit: [0123abcd] KVM: arm64: the fix\n")
    assert bisect_step._outcome(log, "fixed")[0] == ("0123abcd", "KVM: arm64: the fix")
    assert bisect_step._outcome(log)[0] is None


def test_a_bisection_request_saved_for_resume_reads_back_and_gives_its_steps_flags():
    from dataclasses import asdict

    req = bisect.Request(repo="/r", good="a", bad="b", expect="latency>=10", repeat=3,
                         vcpus=16, fix=True, good_commit="a" * 40)
    again = bisect.Request(**json.loads(json.dumps(asdict(req))))
    assert again == req
    assert req.step_args(Path("d")) == [
        "--repo", "/r", "--dir", "d", "--mode", "functional", "--expect", "latency>=10",
        "--repeat", "3", "--vcpus", "16", "--fix"]
    # A step judges as its bisection asked: the same options, field for field.
    step = bisect_step.StepOptions(repo=Path("/r"), bdir=Path("d"),
                                   **{k: v for k, v in asdict(req).items()
                                      if k in bisect_step.Judging.__dataclass_fields__})
    assert step.step_flags() == req.step_flags()


@pytest.mark.slow
@pytest.mark.functional
def test_bisect_fix_finds_the_commit_that_restored_the_icache_fix(fix_history, tmp_path):
    """--bad is the commit that broke the fix (fix-reverted's ~30x slower exec fault),
    --good the tip; the answer is the commit that put the fix back."""
    repo, out = fix_history["repo"], tmp_path / "bisect.json"
    head = git(repo, "rev-parse", "HEAD")
    r = s2fault("bisect", "--fix", "--repo", str(repo), "--bad", fix_history["broken"],
                "--good", "icache-fix", "--mode", "functional", "--expect", "latency>=10",
                "--dir", str(tmp_path / "bisect"), "--json", str(out))
    fixed = fix_history["fixed"]
    subject = git(repo, "log", "-1", "--format=%s", fixed)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1] == f"first fixed commit: {fixed} {subject}"
    summary = json.loads(out.read_text())
    assert summary["first_fixed"] == fixed and summary["fix"] is True
    assert "first_bad" not in summary
    # The steps speak of the symptom as usual: before the fix bad, from it on good.
    order = fix_history["commits"]
    for step in summary["steps"]:
        assert step["fix"] is True
        expected = "good" if order.index(step["commit"]) >= order.index(fixed) else "bad"
        assert step["result"] == expected, step
    log = (tmp_path / "bisect" / "git-bisect.log").read_text()
    assert "--term-old=broken" in log and "--term-new=fixed" in log
    assert git(repo, "rev-parse", "HEAD") == head
    assert subprocess.run(["git", "-C", str(repo), "bisect", "log"],
                          capture_output=True).returncode != 0
