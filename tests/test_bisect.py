"""Bisection, for real: a git history made from Debian's kernel source, a bad commit
somewhere in it, `s2fault bisect` through `git bisect run`, real builds and real QEMU.

The pristine tree is committed once per tarball (a cache entry keyed by its sha256);
the histories on top are made with git plumbing (no checkout, fixed dates), so they
have the same commit ids every session and a rerun finds their kernels in the cache.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT, s2fault
from s2fault import cache, project, source
from s2fault.bisection import symptom as bisect_symptom
from s2fault.errors import InputError
from s2fault.judge import lines as workload
from s2fault.judge.rules import judge
from s2fault.judge.verdict import Verdict
from s2fault.machine import MachineRun

# Fixed identity and dates: the same edits give the same commit ids on every machine.
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "s2fault fixture", "GIT_AUTHOR_EMAIL": "fixture@s2fault.invalid",
    "GIT_COMMITTER_NAME": "s2fault fixture", "GIT_COMMITTER_EMAIL": "fixture@s2fault.invalid",
    "GIT_AUTHOR_DATE": "2024-11-17T12:00:00+00:00",
    "GIT_COMMITTER_DATE": "2024-11-17T12:00:00+00:00",
}
BASE_TAG = "base"


def git_bytes(repo: Path, *args: str, env: dict | None = None, data: bytes | None = None) -> bytes:
    r = subprocess.run(
        ["git", "-C", str(repo), *args], input=data, capture_output=True, check=False,
        env=os.environ | _GIT_ENV | (env or {}),
    )
    if r.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {r.stderr.decode(errors='replace')}")
    return r.stdout


def git(repo: Path, *args: str, env: dict | None = None, data: bytes | None = None) -> str:
    return git_bytes(repo, *args, env=env, data=data).decode(errors="replace").strip()


def fixture_repo() -> Path:
    """A git repository whose commit `base` is Debian's linux-source-6.12 as shipped.

    Made once per tarball: `git add -f` because Debian's .gitignore ignores everything."""
    cache_root = project.cache_dir()
    src = source.resolve("debian", cache_root)
    digest = src.identity.rsplit(":", 1)[-1]
    repo = cache_root / "bisect-fixture" / f"linux-{digest[:16]}"
    with cache.locked(cache_root / "locks" / f"bisect-fixture-{digest[:16]}.lock"):
        if (repo / ".git").is_dir():
            git(repo, "config", "pack.window", "0")  # a fixture made before it was set
            return repo
        repo.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=repo.parent))
        try:
            # A real copy, not hard links: the histories' checkouts must never write
            # through into the shared source cache.
            subprocess.run(["cp", "-a", f"{src.tree}/.", str(tmp)], check=True)
            git(tmp, "init", "-q")
            # Made once per machine, but on a fresh one it is in the way of the first
            # bisection: zlib level 1 writes the 80k objects several times faster than the
            # default, and with no delta search a fetch from it (tests/test_sources.py's
            # shallow fetch through file://) packs what it sends without comparing 80k
            # blobs with each other. A few hundred MB more on disk.
            for key, value in (("gc.auto", "0"), ("core.autocrlf", "false"),
                               ("advice.detachedHead", "false"), ("core.compression", "1"),
                               ("pack.window", "0")):
                git(tmp, "config", key, value)
            git(tmp, "add", "-f", ".")
            git(tmp, "commit", "-q", "-m", f"linux-source-6.12 as shipped ({digest[:12]})")
            git(tmp, "tag", BASE_TAG)
            os.rename(tmp, repo)
        finally:
            subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return repo


@dataclass(frozen=True)
class Change:
    """One commit of a fixture history: file edits (path -> text function) or patches."""

    subject: str
    edits: tuple[tuple[str, Callable[[str], str]], ...] = ()
    patches: tuple[Path, ...] = ()


def _append(line: str) -> Callable[[str], str]:
    return lambda text: text + line


_BROKEN = "\nint s2fault_fixture_build_break = ;\n"
_ICACHE_FIX = "if (icache_is_aliasing() || size > __invalidate_icache_max_range())"


def _drop_icache_fix(text: str) -> str:
    # Undo 909b583f81b5's effect: without the size check, a 512M block is invalidated
    # line by line (8M `ic ivau`), the path that soft-locks under dilation.
    assert _ICACHE_FIX in text, "the 6.12 I-cache fix is not where it was expected"
    return text.replace(_ICACHE_FIX, "if (icache_is_aliasing())")


_MUTEX_DECL = "\n/* s2fault fixture: serialise exec faults (wrongly: a mutex under mmu_lock) */\n" \
    "static DEFINE_MUTEX(s2fault_exec_fault_mutex);\n"
_EXEC_PROT = "\tif (exec_fault)\n\t\tprot |= KVM_PGTABLE_PROT_X;\n"
_EXEC_PROT_LOCKED = (
    "\tif (exec_fault) {\n\t\tprot |= KVM_PGTABLE_PROT_X;\n"
    "\t\tmutex_lock(&s2fault_exec_fault_mutex);\n"
    "\t\tmutex_unlock(&s2fault_exec_fault_mutex);\n\t}\n"
)


def _mutex_under_mmu_lock(text: str) -> str:
    # The v1 review's bug in miniature: a sleeping lock taken inside
    # read_lock(&kvm->mmu_lock) on the exec-fault path -> "BUG: Invalid wait context".
    assert text.count(_EXEC_PROT) == 1, "user_mem_abort()'s exec_fault branch moved"
    anchor = '#include "trace.h"\n'
    assert anchor in text
    text = text.replace(anchor, anchor + _MUTEX_DECL, 1)
    return text.replace(_EXEC_PROT, _EXEC_PROT_LOCKED)


def _note(n: int, where: str, tag: str) -> Callable[[str], str]:
    if where.endswith(".rst"):
        return _append(f"\n.. s2fault fixture note {n}{tag}: harmless documentation change.\n")
    return _append(f"\n/* s2fault fixture note {n}{tag}: a harmless comment. */\n")


def harmless(n: int, tag: str = "") -> Change:
    """A commit that changes nothing a kernel does; `tag` makes it (and its kernel) new."""
    paths = ("arch/arm64/kvm/guest.c", "Documentation/virt/kvm/arm/hyp-abi.rst",
             "arch/arm64/kvm/arm.c", "Documentation/virt/kvm/arm/pvtime.rst",
             "arch/arm64/kvm/reset.c")
    path = paths[n % len(paths)]
    area = "Documentation: kvm/arm" if path.endswith(".rst") else "KVM: arm64"
    return Change(f"{area}: fixture note {n}{tag} in {Path(path).name}",
                  ((path, _note(n, path, tag)),))


ICACHE_BUG = Change(
    "KVM: arm64: invalidate the guest I-cache line by line (fixture: the soft lockup)",
    (("arch/arm64/include/asm/kvm_mmu.h", _drop_icache_fix),),
)
BUILD_BREAK = Change("KVM: arm64: mmu: fixture build break",
                     (("arch/arm64/kvm/mmu.c", _append(_BROKEN)),))
BUILD_FIX = Change("KVM: arm64: mmu: fix the fixture build break",
                   (("arch/arm64/kvm/mmu.c", lambda t: t.replace(_BROKEN, "")),))


def locking_bug() -> Change:
    """The v1 interval-tree series when patches/interval-tree-v1/ has it, else its bug
    in miniature (a mutex taken under read_lock(&kvm->mmu_lock))."""
    folder = ROOT / "patches" / "interval-tree-v1"
    patches = tuple(sorted(folder.glob("*.patch"))) if folder.is_dir() else ()
    if patches:
        return Change("KVM: arm64: serialise exec faults with an interval tree (fixture: v1)",
                      patches=patches)
    return Change(
        "KVM: arm64: serialise exec faults with a mutex (fixture: invalid wait context)",
        (("arch/arm64/kvm/mmu.c", _mutex_under_mmu_lock),),
    )


def make_history(repo: Path, branch: str, changes: list[Change],
                 start: str = BASE_TAG) -> list[str]:
    """Commit `changes` on top of `start` as `branch`, without touching the work tree
    (a private index, hash-object, commit-tree), and return the new commit ids."""
    commits = []
    parent = git(repo, "rev-parse", f"{start}^{{commit}}")
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git(repo, "read-tree", parent, env=env)
        for change in changes:
            for path, edit in change.edits:
                old = git_bytes(repo, "cat-file", "blob", f"{parent}:{path}").decode()
                blob = git(repo, "hash-object", "-w", "--stdin", "--path", path,
                           data=edit(old).encode())
                mode = git(repo, "ls-files", "-s", "--", path, env=env).split()[0]
                git(repo, "update-index", "--cacheinfo", f"{mode},{blob},{path}", env=env)
            for patch in change.patches:
                git(repo, "apply", "--cached", str(patch), env=env)
            tree = git(repo, "write-tree", env=env)
            parent = git(repo, "commit-tree", tree, "-p", parent, "-m", change.subject)
            commits.append(parent)
    git(repo, "branch", "-f", branch, parent)
    return commits


# --- what "bad" means, on verdicts judged from real consoles (no QEMU) -----------------------

_UPSTREAM_CONSOLE = ROOT / "tests" / "data" / "upstream-functional-console.log"


def _judged(console: str, tmp_path: Path, outcome: str = "exited") -> Verdict:
    """A verdict as the engine reaches it, from a console text."""
    log = tmp_path / "console.log"
    log.write_text(console)
    run = MachineRun(outcome=outcome, reason="QEMU exited" if outcome == "exited" else outcome,
                     exit_code=0, seconds=1.0, console_log=log, qmp_log=log, stderr_log=log,
                     argv=[])
    return judge(run, console, workload.parse(console))


def _golden_body(name: str) -> str:
    """The console part of a golden log (after its header and blank line)."""
    return (ROOT / "tests" / "golden" / name).read_text().split("\n\n", 1)[1]


def _with_splat(golden: str) -> str:
    """The upstream console with a golden splat printed just before the workload's result."""
    lines = _UPSTREAM_CONSOLE.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if "S2FAULT-RESULT" in line)
    return "".join(lines[:at]) + _golden_body(golden) + "".join(lines[at:])


def test_symptom_specs():
    assert bisect_symptom.Symptom.parse(None).describe() == "any splat or an incoherent I-cache"
    s = bisect_symptom.Symptom.parse("soft_lockup@icache_inval_pou")
    assert (s.splat.kind, s.splat.subtype, s.splat.in_frames) == (
        "soft_lockup", None, ("icache_inval_pou",))
    s = bisect_symptom.Symptom.parse("lockdep:invalid_wait_context")
    assert (s.splat.kind, s.splat.subtype) == ("lockdep", "invalid_wait_context")
    assert bisect_symptom.Symptom.parse("latency>=10").latency_ratio == 10.0
    assert bisect_symptom.Symptom.parse("latency >= 2.5x").latency_ratio == 2.5
    for bad in ("softlockup", "latency>=1", "latency>10", "soft lockup", "lockdep:"):
        with pytest.raises(InputError):
            bisect_symptom.Symptom.parse(bad)


def test_symptom_judges_real_consoles(tmp_path):
    clean = _judged(_UPSTREAM_CONSOLE.read_text(), tmp_path)
    assert clean.verdict == "pass"
    lockup = _judged(_with_splat("arm64-soft-lockup-icache-inval-pou.log"), tmp_path)
    lockdep = _judged(_with_splat("arm64-lockdep-invalid-wait-context.log"), tmp_path)
    soft = bisect_symptom.Symptom.parse("soft_lockup@icache_inval_pou")
    wait = bisect_symptom.Symptom.parse("lockdep:invalid_wait_context")
    anything = bisect_symptom.Symptom.parse("any")
    assert soft.judge(lockup)[0] == "bad"
    assert soft.judge(clean)[0] == "good"
    # Another splat is not this symptom: the commit is good for this bisection.
    assert soft.judge(lockdep)[0] == "good"
    assert wait.judge(lockdep)[0] == "bad" and wait.judge(lockup)[0] == "good"
    assert anything.judge(lockup)[0] == "bad" and anything.judge(clean)[0] == "good"
    # The run ended before the workload's result: no splat there proves nothing.
    cut = _UPSTREAM_CONSOLE.read_text().split("S2FAULT-RESULT")[0]
    unfinished = _judged(cut, tmp_path, outcome="no_output")
    assert unfinished.verdict == "error"
    assert soft.judge(unfinished)[0] == "error"
    # QEMU died before printing anything: infrastructure, never good or bad.
    assert anything.judge(_judged("", tmp_path, outcome="qemu_failed"))[0] == "error"
    ms = clean.workload.exec_fault_ms.max
    ratio = bisect_symptom.Symptom.parse("latency>=10")
    assert ratio.judge(clean, reference_ms=ms)[0] == "good"
    assert ratio.judge(clean, reference_ms=ms / 20)[0] == "bad"


@pytest.mark.parametrize("runs, repeat, result", [
    (["bad"], 1, "bad"),
    (["good"], 1, "good"),
    (["inconclusive"], 1, "skip"),
    (["bad", "bad"], 3, "bad"),
    (["good", "bad", "bad"], 3, "bad"),
    (["good", "bad", "good"], 3, "skip"),
    (["good", "good", "good"], 3, "good"),
    (["good", "inconclusive", "good"], 3, "skip"),
    (["bad", "good"], 2, "skip"),
])
def test_repeat_rule(runs, repeat, result):
    got, why = bisect_symptom.decide([(r, f"run {i}") for i, r in enumerate(runs)], repeat)
    assert got == result, why
    if result == "skip":
        assert why.startswith(("flaky", "cannot tell"))


# --- real bisections ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def histories() -> dict:
    """The fixture repository with two histories on top of the pristine tree.

    icache:  note, note, BAD (I-cache fix removed), note, note        (dilated: soft lockup)
    locking: note, build break, build fix, BAD (v1 locking), note      (functional: lockdep)
    With 5 commits, git bisect tests the build break first, so the skip is exercised."""
    repo = fixture_repo()
    if subprocess.run(["git", "-C", str(repo), "bisect", "log"],
                      capture_output=True).returncode == 0:
        git(repo, "bisect", "reset")  # an interrupted earlier session
    git(repo, "reset", "-q", "--hard")
    icache = make_history(repo, "icache", [harmless(1), harmless(2), ICACHE_BUG, harmless(3),
                                           harmless(4)])
    locking = make_history(repo, "locking", [harmless(5), BUILD_BREAK, BUILD_FIX, locking_bug(),
                                             harmless(6)])
    return {"repo": repo, "icache": icache, "icache_bad": icache[2],
            "locking": locking, "locking_bad": locking[3], "break": locking[1]}


def _bisect(h: dict, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "bisect.json"
    r = s2fault("bisect", "--repo", str(h["repo"]), "--good", BASE_TAG, "--dir",
                str(tmp_path / "bisect"), "--json", str(out), *args)
    assert out.is_file(), r.stdout + r.stderr
    return r, json.loads(out.read_text())


def _check_steps(summary: dict, bdir: Path) -> None:
    for step in summary["steps"]:
        sdir = Path(step["dir"])
        assert sdir.parent == bdir and sdir.name.startswith(f"step-{step['step']:02d}-")
        assert (sdir / "step.json").is_file() and step["seconds"] > 0
        if step["result"] in ("good", "bad"):
            assert step["verdicts"], step
            assert (sdir / "run-1" / "console.log").stat().st_size > 0
            assert (sdir / "run-1" / "result.json").is_file()
    assert "git bisect start" in (bdir / "git-bisect.log").read_text()


@pytest.mark.slow
@pytest.mark.functional
def test_bisect_finds_the_icache_commit_under_dilation(histories, tmp_path):
    head = git(histories["repo"], "rev-parse", "HEAD")
    r, summary = _bisect(histories, tmp_path, "--bad", "icache", "--mode", "dilated",
                         "--expect", "soft_lockup@icache_inval_pou")
    bad = histories["icache_bad"]
    subject = git(histories["repo"], "log", "-1", "--format=%s", bad)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1] == f"first bad commit: {bad} {subject}"
    assert summary["first_bad"] == bad and summary["subject"] == subject
    assert {s["result"] for s in summary["steps"]} <= {"good", "bad"}
    _check_steps(summary, tmp_path / "bisect")
    # The work tree is back where it was, and no bisection is left behind.
    assert git(histories["repo"], "rev-parse", "HEAD") == head
    assert subprocess.run(["git", "-C", str(histories["repo"]), "bisect", "log"],
                          capture_output=True).returncode != 0


@pytest.mark.slow
@pytest.mark.functional
def test_bisect_skips_a_build_break_and_finds_the_locking_commit(histories, tmp_path):
    r, summary = _bisect(histories, tmp_path, "--bad", "locking", "--mode", "functional",
                         "--expect", "lockdep:invalid_wait_context")
    bad = histories["locking_bad"]
    subject = git(histories["repo"], "log", "-1", "--format=%s", bad)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1] == f"first bad commit: {bad} {subject}"
    assert summary["first_bad"] == bad
    skipped = [s for s in summary["steps"] if s["result"] == "skip"]
    assert [s["commit"] for s in skipped] == [histories["break"]], summary["steps"]
    assert skipped[0]["why"].startswith("does not build")
    assert "s2fault_fixture_build_break" in (Path(skipped[0]["dir"]) / "build.log").read_text()
    _check_steps(summary, tmp_path / "bisect")

    # --resume replays the saved log: the answer is already in it, so nothing is rebuilt.
    again = s2fault("bisect", "--resume", "--dir", str(tmp_path / "bisect"))
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.strip().splitlines()[-1] == f"first bad commit: {bad} {subject}"


@pytest.mark.slow
@pytest.mark.functional
def test_an_interrupted_bisection_resumes(histories, tmp_path):
    """SIGTERM in the middle of a step: the repository is given back, the log is kept,
    and --resume finishes the bisection from it."""
    repo, bdir = histories["repo"], tmp_path / "bisect"
    head = git(repo, "rev-parse", "HEAD")
    proc = subprocess.Popen(
        [sys.executable, "-m", "s2fault", "-q", "bisect", "--repo", str(repo), "--good",
         BASE_TAG, "--bad", "icache", "--mode", "dilated", "--expect",
         "soft_lockup@icache_inval_pou", "--dir", str(bdir)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 1800
    while not list(bdir.glob("step-02-*/run-1/console.log")):  # the second step is booting
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, out + err
    assert git(repo, "rev-parse", "HEAD") == head
    assert subprocess.run(["git", "-C", str(repo), "bisect", "log"],
                          capture_output=True).returncode != 0
    marks = re.findall(r"^git bisect (?:good|bad|skip) ", (bdir / "git-bisect.log").read_text(),
                       re.M)
    assert len(marks) == 1

    r = s2fault("bisect", "--resume", "--dir", str(bdir), "--json", str(tmp_path / "out.json"))
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads((tmp_path / "out.json").read_text())
    assert summary["first_bad"] == histories["icache_bad"]
    # Step 1 is the one from before the interruption; the interrupted step 2 left no result.
    numbers = [s["step"] for s in summary["steps"]]
    assert numbers[0] == 1 and 2 not in numbers and len(numbers) >= 2


@pytest.mark.slow
@pytest.mark.functional
def test_bisect_step_exit_codes(histories, tmp_path):
    """bisect-step on its own, as a user's `git bisect run` calls it."""
    repo = histories["repo"]
    head = git(repo, "rev-parse", "HEAD")
    try:
        git(repo, "checkout", "-q", "--detach", histories["locking_bad"])
        r = s2fault("bisect-step", "--repo", str(repo), "--dir", str(tmp_path),
                    "--expect", "lockdep:invalid_wait_context")
        assert r.returncode == 1, r.stdout + r.stderr
        assert r.stdout.startswith("step 01 ") and " bad " in r.stdout
        # A variant patch that does not apply is a skip, not good or bad: fix-reverted
        # edits the very line the icache commit already changed.
        git(repo, "checkout", "-q", "--detach", histories["icache_bad"])
        r = s2fault("bisect-step", "--repo", str(repo), "--dir", str(tmp_path),
                    "--variant", "fix-reverted")
        assert r.returncode == 125, r.stdout + r.stderr
        assert "does not build: patch fix-reverted/" in r.stdout
        # An option that cannot work aborts the bisection (>= 128), it is never bad.
        r = s2fault("bisect-step", "--repo", str(repo), "--dir", str(tmp_path),
                    "--expect", "latency>=10")
        assert r.returncode == 128 and "--reference-ms" in r.stderr, r.stdout + r.stderr
    finally:
        git(repo, "checkout", "-q", "--detach", head)


@pytest.mark.slow
@pytest.mark.functional
def test_bisect_by_latency_ratio(histories, tmp_path):
    """latency>=10: the good ref is measured first; the fix-reverted commit is ~30x slower."""
    r, summary = _bisect(histories, tmp_path, "--bad", "icache", "--mode", "functional",
                         "--expect", "latency>=10")
    assert r.returncode == 0, r.stdout + r.stderr
    assert summary["first_bad"] == histories["icache_bad"]
    assert summary["reference"]["ms"] > 0
    assert (tmp_path / "bisect" / "reference.json").is_file()
