"""Bisection: find the commit of a kernel git repository that brought a symptom in.

    s2fault bisect --repo PATH --good REF --bad REF [--mode functional|dilated]
                   [--expect SPEC] [--repeat N] [--variant NAME] [--dir DIR] [--json OUT]
    s2fault bisect --fix --repo PATH --bad OLD --good NEW [...]
    s2fault bisect --resume --dir DIR
    s2fault bisect-step [--repo .] [--mode M] [--expect SPEC] [--repeat N] [--variant NAME]
                        [--fix]

`bisect` wraps `git bisect start/run/reset`, and the command it gives `git bisect run`
is `s2fault bisect-step`: the one a user gives their own `git bisect run`.

A step builds HEAD of the repository, with the variant's patches on top, incrementally
(one persistent build directory per repository, fragments and variant; ccache); the
kernel cache keys by commit, so a commit visited twice is built once. It boots the
kernel under the mode's profile and judges each run against the symptom (--expect):

  any (default)          the run failed: any splat, or an incoherent I-cache
  KIND[:SUBTYPE][@FUNC]  a splat of that kind (and subtype), blamed on FUNC or with FUNC
                         in its trace (FUNC may be A|B): soft_lockup@icache_inval_pou,
                         lockdep:invalid_wait_context
  latency>=R             exec-fault latency at least R times the good ref's; `bisect`
                         measures the good ref first, `bisect-step` takes --reference-ms

--repeat N judges each commit N times:
  bad   if at least 2 runs show the symptom (or 1 of 1); it stops at the second
  good  only if no run shows it and every run got far enough to show it
  skip  otherwise, and the step says why: 1 of N >= 2 is a flaky signal, and a run
        that ended before the workload could show the symptom decides nothing

--fix finds the commit that made the symptom go away: --bad OLD shows it, --good NEW
(a later commit) does not, so "bad" and "good" keep their meaning. Underneath, git bisect
runs with the terms old = broken, new = fixed; a step's good and bad are judged as
always, and only its exit code is turned around (0 broken, 1 fixed) for git bisect run.
The last line is `first fixed commit: <sha> <subject>`; the JSON field `first_fixed`.

Exit codes of a step (git bisect run's contract): 0 good, 1 bad, 125 skip (the commit
does not build, a patch does not apply, or the runs cannot tell), 128 abort.
Infrastructure trouble (the verdict "error": QEMU died, no output, the path under test
never ran) is retried once; if it persists the step exits 128, `git bisect run` stops,
and `bisect` prints the reason. Infrastructure is never recorded as good or bad.

The bisection directory (default results/bisect-<time>/) holds bisect.json (the
request), git-bisect.log (saved after every step: `git bisect replay` it, or continue
with `s2fault bisect --resume --dir DIR`), git-bisect-run.log, reference-<sha12>/ (for
latency), and per step step-NN-<sha12>/: step.json (result, why, timings, verdicts),
build.log when the build failed, run-K/ per run (console.log, qmp.log, result.json).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from s2fault import cache, hosttools, progress, project
from s2fault.bisection.step import (
    ABORT,
    FIX_TERMS,
    LOG,
    REFERENCE,
    REQUEST,
    RUN_LOG,
    Judging,
    _Abort,
    _bisecting,
    _commit,
    _git,
    _judged_run,
    _outcome,
    _read,
    _variant,
    build_head,
    load_steps,
    save_log,
)
from s2fault.bisection.symptom import Symptom
from s2fault.errors import EXIT_ERROR, EXIT_PASS, BuildError, InputError
from s2fault.kernel import kconfig
from s2fault.machine import profiles

# The symptom and its judgement are in bisection/symptom.py, one step (bisect-step) in
# bisection/step.py; here the whole bisection, which runs `git bisect run` over the steps.


@dataclass(kw_only=True)
class Request(Judging):
    """A bisection as asked for, saved in its directory (REQUEST) for --resume."""

    repo: str
    good: str
    bad: str
    good_commit: str = ""
    bad_commit: str = ""

    def step_args(self, bdir: Path) -> list[str]:
        return ["--repo", self.repo, "--dir", str(bdir), *self.step_flags()]

    @property
    def new_term(self) -> str:
        """git bisect's name for the commits after the change looked for."""
        return FIX_TERMS[1] if self.fix else "bad"


def _validate(req: Request) -> Symptom:
    symptom = Symptom.parse(req.expect)
    profiles.mode(req.mode)
    _variant(req.variant)
    kconfig.fragment_paths()
    if req.repeat < 1:
        raise InputError("--repeat must be at least 1")
    return symptom


def measure_reference(req: Request, bdir: Path, quiet: bool = False) -> float:
    """The good ref's exec-fault latency (median over --repeat runs), for latency>=R."""
    repo = Path(req.repo)
    commit = req.good_commit
    rdir = bdir / f"reference-{commit[:12]}"
    rdir.mkdir(parents=True, exist_ok=True)
    head = _commit(repo, "HEAD")
    # The bisection has checked out its first commit; build the good ref in the same
    # work tree (and build directory), then put the bisection's commit back.
    _git(repo, "checkout", "-q", "--detach", commit)
    try:
        label = f"{commit[:12]} (good ref)"
        try:
            build = build_head(repo, req.variant, label)
        except BuildError as e:
            raise InputError(f"the good ref {commit[:12]} does not build: {e.message}") from e
        prof = profiles.mode(req.mode).with_(vcpus=req.vcpus, cpu=req.cpu)
        values: list[float] = []
        verdicts: list[dict[str, Any]] = []
        for i in range(1, req.repeat + 1):
            try:
                v, _, why = _judged_run(build, prof, Symptom(), rdir / f"run-{i}", label, None)
            except _Abort as e:
                raise InputError(f"measuring the good ref: {e}") from e
            ms = v.exec_fault_max_ms
            if ms is None:
                raise InputError(f"the good ref {commit[:12]} showed no exec-fault latency: "
                                 f"{v.reason}")
            values.append(ms)
            verdicts.append(v.to_dict())
    finally:
        _git(repo, "checkout", "-q", "--detach", head)
    ms = statistics.median(values)
    (bdir / REFERENCE).write_text(json.dumps(
        {"commit": commit, "ms": ms, "values_ms": values, "dir": str(rdir),
         "verdicts": verdicts}, indent=2) + "\n")
    if not quiet:
        progress.clear()
        print(f"reference {commit[:12]}: exec fault {ms:g} ms (median of {len(values)})",
              flush=True)
    return ms


def _step_command(req: Request, bdir: Path, quiet: bool) -> list[str]:
    return [sys.executable, "-m", "s2fault", *(["-q"] if quiet else []), "bisect-step",
            *req.step_args(bdir)]


def _bisect_run(req: Request, bdir: Path, quiet: bool) -> int:
    """`git bisect run s2fault bisect-step ...`; step lines are echoed, all is logged."""
    repo = Path(req.repo)
    env = dict(os.environ)
    # The steps run this very package, wherever it was imported from.
    here = str(project.PACKAGE.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    # Its own session: on an interrupt the whole step (and its QEMU) is stopped here.
    proc = subprocess.Popen(
        ["git", "-C", str(repo), "bisect", "run", *_step_command(req, bdir, quiet)],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env,
        start_new_session=True,
    )
    assert proc.stdout is not None
    try:
        with open(bdir / RUN_LOG, "a") as log:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                if line.startswith(("step ", "Bisecting:")):
                    progress.clear()
                    print(line.rstrip(), flush=True)
        return proc.wait()
    except BaseException:
        _stop_group(proc)
        raise


def _stop_group(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the step's session (git, the step, its QEMU), give the step time to stop
    QEMU over QMP, then SIGKILL whatever is left."""
    pgid = proc.pid
    for sig, grace in ((signal.SIGTERM, 60.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            continue
        break
    proc.wait()


def run_bisect(req: Request, bdir: Path, json_out: Path | None = None, resume: bool = False,
               quiet: bool = False) -> int:
    start = time.monotonic()
    hosttools.require("git")
    repo = Path(req.repo)
    symptom = _validate(req)
    gitdir = Path(_git(repo, "rev-parse", "--absolute-git-dir"))
    bdir.mkdir(parents=True, exist_ok=True)
    with cache.locked(gitdir / "s2fault-bisect.lock"):
        if resume:
            if not (bdir / LOG).is_file():
                raise InputError(f"nothing to resume: {bdir / LOG} does not exist")
            (bdir / ABORT).unlink(missing_ok=True)
            _git(repo, "bisect", "replay", str(bdir / LOG))
        else:
            if _bisecting(repo):
                raise InputError(f"a bisection is already in progress in {repo}: end it with "
                                 "'git bisect reset' (or continue one with --resume --dir DIR)")
            if _git(repo, "status", "--porcelain", "--untracked-files=no"):
                raise InputError(f"{repo} has uncommitted changes: commit or stash them first")
            try:
                req.good_commit, req.bad_commit = _commit(repo, req.good), _commit(repo, req.bad)
            except InputError as e:
                raise InputError(f"--good/--bad: {e.message}") from e
            (bdir / REQUEST).write_text(json.dumps(asdict(req), indent=2) + "\n")
            # Commit ids, not refs, so the saved log replays the same range later.
            # git bisect start takes the new commit first: --bad, or --good for --fix.
            if req.fix:
                out = _git(repo, "bisect", "start", f"--term-old={FIX_TERMS[0]}",
                           f"--term-new={FIX_TERMS[1]}", req.good_commit, req.bad_commit)
            else:
                out = _git(repo, "bisect", "start", req.bad_commit, req.good_commit)
            for line in out.splitlines():
                if line.startswith("Bisecting:"):
                    print(line, flush=True)
        try:
            save_log(repo, bdir)
            found, _ = _outcome(_read(bdir / LOG), req.new_term)
            if found is None:
                if symptom.latency_ratio and not (bdir / REFERENCE).is_file():
                    measure_reference(req, bdir, quiet)
                _bisect_run(req, bdir, quiet)
        finally:
            save_log(repo, bdir)
            if _bisecting(repo):
                _git(repo, "bisect", "reset", check=False)
    return _report(req, bdir, symptom, json_out, time.monotonic() - start)


def _report(req: Request, bdir: Path, symptom: Symptom, json_out: Path | None,
            seconds: float) -> int:
    found, possible = _outcome(_read(bdir / LOG), req.new_term)
    steps = load_steps(bdir)
    abort = None
    if (bdir / ABORT).is_file():
        abort = json.loads((bdir / ABORT).read_text())
    summary: dict[str, Any] = {
        f"first_{req.new_term}": found[0] if found else None,
        "subject": found[1] if found else None,
        "fix": req.fix,
        "candidates": [{"commit": c, "subject": s} for c, s in possible],
        "aborted": abort,
        "repo": req.repo, "good": req.good_commit, "bad": req.bad_commit,
        "expect": symptom.spec, "mode": req.mode, "repeat": req.repeat, "variant": req.variant,
        "dir": str(bdir), "seconds": round(seconds, 1),
        "steps": steps,
    }
    if (bdir / REFERENCE).is_file():
        summary["reference"] = json.loads((bdir / REFERENCE).read_text())
    (bdir / "bisect-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if json_out:
        json_out.write_text(json.dumps(summary, indent=2) + "\n")
    progress.clear()
    counts = {r: sum(1 for s in steps if s["result"] == r) for r in ("good", "bad", "skip")}
    print(f"{len(steps)} steps ({', '.join(f'{n} {r}' for r, n in counts.items())}) in "
          f"{seconds:.0f} s; results in {bdir}")
    what = f"first {req.new_term} commit"
    if found:
        tested = {s["commit"] for s in steps}
        newest, option, before = ((req.good_commit, "--good", "still showed the symptom")
                                  if req.fix else (req.bad_commit, "--bad", "was good"))
        if found[0] == newest and found[0] not in tested:
            print(f"note: {found[0][:12]} ({option}) was never tested; every commit before it "
                  f"{before}, so it is {what} by your word")
        print(f"{what}: {found[0]} {found[1]}")
        return EXIT_PASS
    if abort:
        print(f"bisection aborted at {abort['commit'][:12]}: {abort['reason']}")
        print(f"after fixing the cause: s2fault bisect --resume --dir {bdir}")
    elif possible:
        print(f"only skipped commits are left; the {what} is one of:")
        for commit, subject in possible:
            print(f"  {commit} {subject}")
    print(f"{what}: not found")
    return EXIT_ERROR


# --- command line: the handler of `bisect` (its parser is in cli/parser.py) -----------------------


def cmd_bisect(args: argparse.Namespace) -> int:
    quiet = bool(getattr(args, "quiet", False))
    if args.resume:
        if not args.dir:
            raise InputError("--resume needs --dir (the bisection directory to continue)")
        bdir = Path(args.dir).resolve()
        try:
            req = Request(**json.loads((bdir / REQUEST).read_text()))
        except (OSError, ValueError, TypeError) as e:
            raise InputError(f"cannot resume: {bdir / REQUEST}: {e}") from e
    else:
        missing = [o for o in ("repo", "good", "bad") if not getattr(args, o)]
        if missing:
            raise InputError("bisect needs " + ", ".join(f"--{o}" for o in missing))
        stamp = time.strftime("%Y%m%d-%H%M%S")
        bdir = Path(args.dir or f"results/bisect-{stamp}").resolve()
        req = Request(repo=str(Path(args.repo).resolve()), good=args.good, bad=args.bad,
                      **Judging.of(args))
    return run_bisect(req, bdir, Path(args.json) if args.json else None, args.resume, quiet)
