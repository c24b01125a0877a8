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
import re
import signal
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import cache, hosttools, kconfig, progress, project, variants
from . import profile as profiles
from .errors import EXIT_BISECT_SKIP, EXIT_ERROR, EXIT_PASS, BuildError, InputError, S2Error

if TYPE_CHECKING:  # the build and run stages load when a step runs, not with the CLI
    from .kernel import KernelBuild
    from .verdict import Verdict

EXIT_GOOD = 0
EXIT_BAD = 1
EXIT_SKIP = EXIT_BISECT_SKIP
EXIT_ABORT = 128  # git bisect run stops at an exit code >= 128
EXIT_OF = {"good": EXIT_GOOD, "bad": EXIT_BAD, "skip": EXIT_SKIP, "abort": EXIT_ABORT}
# --fix: git bisect's old/new terms. A commit still showing the symptom is old
# ("broken", exit 0 in a step), one without it is new ("fixed", exit 1).
FIX_TERMS = ("broken", "fixed")
FIX_EXIT_OF = EXIT_OF | {"bad": EXIT_GOOD, "good": EXIT_BAD}

# What one run says about the symptom; "error" is infrastructure, never good or bad.
BAD, GOOD, UNSURE, ERROR = "bad", "good", "inconclusive", "error"

REQUEST = "bisect.json"
LOG = "git-bisect.log"
RUN_LOG = "git-bisect-run.log"
REFERENCE = "reference.json"
ABORT = "abort.json"
STEP = "step.json"
# Bump when the layout of the persistent build directories changes.
# 2: the build tree of kernel.build (source copy with the objects inside it).
BUILD_DIR_RECIPE = "s2fault-bisect-build-2"

_SPLAT_SPEC = re.compile(
    r"^(?P<kind>[a-z0-9_]+)(?::(?P<subtype>[a-z0-9_]+))?(?:@(?P<function>[\w.$|]+))?$"
)
_LATENCY_SPEC = re.compile(r"^latency\s*>=\s*(?P<ratio>\d+(?:\.\d+)?)x?$")


class _Abort(Exception):
    """Infrastructure trouble that survived its retry: stop the bisection."""


@dataclass(frozen=True)
class Symptom:
    """What makes a commit bad (--expect)."""

    spec: str = "any"
    splat: variants.SplatSpec | None = None
    latency_ratio: float | None = None

    @classmethod
    def parse(cls, spec: str | None) -> Symptom:
        text = (spec or "any").strip()
        if text == "any":
            return cls()
        m = _LATENCY_SPEC.match(text)
        if m:
            ratio = float(m["ratio"])
            if ratio <= 1:
                raise InputError(f"--expect {text}: the ratio must be above 1")
            return cls(text, latency_ratio=ratio)
        m = _SPLAT_SPEC.match(text)
        if not m:
            raise InputError(
                f"--expect {text}: use any, KIND[:SUBTYPE][@FUNCTION] "
                "(e.g. soft_lockup@icache_inval_pou) or latency>=RATIO"
            )
        from .analyzer import FAMILIES

        kinds = sorted({f.kind for f in FAMILIES})
        if m["kind"] not in kinds:
            # A typo would make every commit good: refuse it.
            raise InputError(f"--expect {text}: unknown splat kind '{m['kind']}' "
                             f"(known: {', '.join(kinds)})")
        functions = tuple(m["function"].split("|")) if m["function"] else ()
        return cls(text, splat=variants.SplatSpec(m["kind"], m["subtype"], in_frames=functions))

    def describe(self) -> str:
        if self.latency_ratio:
            return f"exec-fault latency >= {self.latency_ratio:g}x the good ref's"
        if self.splat:
            return self.splat.describe()
        return "any splat or an incoherent I-cache"

    def judge(self, v: Verdict, reference_ms: float | None = None) -> tuple[str, str]:
        """(bad | good | inconclusive | error, why) for one run."""
        if self.splat:
            seen = [s for s in v.splats if self.splat.matches(s)]
            if seen:
                more = f" (x{len(seen)})" if len(seen) > 1 else ""
                return BAD, f"{seen[0].get('title') or seen[0]['kind']}{more}"
        if v.verdict in ("error", "skip"):  # a skip is this machine's, not the commit's
            return ERROR, v.reason
        if self.latency_ratio:
            ms = v.workload.get("exec_fault_ms", {}).get("max")
            if ms is None:
                return UNSURE, f"no exec-fault latency measured ({v.reason})"
            if not reference_ms:
                raise InputError("--expect latency needs the good ref's latency (--reference-ms)")
            ratio = ms / reference_ms
            why = f"exec fault {ms:g} ms, {ratio:.1f}x the good ref's {reference_ms:g} ms"
            return (BAD if ratio >= self.latency_ratio else GOOD), why
        if self.splat:
            if not _workload_finished(v, self.splat.kind):
                return UNSURE, f"no {self.splat.describe()}, but the workload did not get " \
                    f"far enough to show one ({v.reason})"
            other = f" (other: {v.reason})" if v.verdict == "fail" else ""
            return GOOD, f"no {self.splat.describe()}{other}"
        if v.verdict == "fail":
            return BAD, v.reason
        return GOOD, v.reason


def _workload_finished(v: Verdict, kind: str) -> bool:
    """Did the run get far enough that a missing splat means something?"""
    if v.workload.get("vcpus") is None:  # no result line: it never finished
        return False
    # With lockdep already off before the workload, no lockdep splat could be printed.
    return not (kind == "lockdep" and v.preconditions.get("debug_locks_before") == 0)


def decide(judgements: list[tuple[str, str]], repeat: int) -> tuple[str, str]:
    """Combine the runs of one commit: (good | bad | skip, why). See the module docstring."""
    n = len(judgements)
    bad = [why for j, why in judgements if j == BAD]
    unsure = [why for j, why in judgements if j == UNSURE]
    if len(bad) >= 2 or (repeat == 1 and bad):
        return "bad", bad[0] + (f" ({len(bad)}/{n} runs)" if repeat > 1 else "")
    if bad:
        return "skip", (f"flaky: 1 of {n} runs showed it ({bad[0]}); "
                        "not enough to call the commit bad, too much to call it good")
    if unsure:
        return "skip", (f"cannot tell: {len(unsure)} of {n} runs ended before the workload "
                        f"could show it ({unsure[0]})")
    return "good", judgements[-1][1] + (f" ({n}/{n} runs)" if repeat > 1 else "")


def _settled(judgements: list[tuple[str, str]]) -> bool:
    # Two bad runs make the commit bad whatever the rest show.
    return sum(1 for j, _ in judgements if j == BAD) >= 2


# --- git -----------------------------------------------------------------------------------


def _git(repo: Path, *args: str, check: bool = True) -> str:
    hosttools.require("git")
    r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        msg = [line for line in (r.stderr or r.stdout).strip().splitlines() if line.strip()]
        raise InputError(f"git {' '.join(args)} in {repo}: {msg[-1] if msg else r.returncode}")
    return r.stdout.strip()


def _commit(repo: Path, ref: str) -> str:
    return _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")


def _subject(repo: Path, commit: str) -> str:
    return _git(repo, "log", "-1", "--format=%s", commit)


def _bisecting(repo: Path) -> bool:
    return subprocess.run(["git", "-C", str(repo), "bisect", "log"],
                          capture_output=True).returncode == 0


def save_log(repo: Path, bdir: Path) -> None:
    """Keep `git bisect log` in the bisection directory (atomically: a step may be killed)."""
    r = subprocess.run(["git", "-C", str(repo), "bisect", "log"], capture_output=True, text=True)
    if r.returncode != 0 or not r.stdout.strip():
        return
    tmp = bdir / f".{LOG}.{os.getpid()}"
    tmp.write_text(r.stdout)
    os.replace(tmp, bdir / LOG)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _outcome(log: str, new_term: str = "bad"
             ) -> tuple[tuple[str, str] | None, list[tuple[str, str]]]:
    """(first new commit, possible first new commits) from a `git bisect log`; the new
    term is "bad", or "fixed" for --fix."""
    m = re.search(rf"^# first {new_term} commit: \[([0-9a-f]+)\] ?(.*)$", log, re.M)
    possible = re.findall(rf"^# possible first {new_term} commit: \[([0-9a-f]+)\] ?(.*)$",
                          log, re.M)
    return ((m[1], m[2]) if m else None), possible


# --- one step ------------------------------------------------------------------------------


@dataclass
class StepOptions:
    repo: Path
    bdir: Path
    mode: str = "functional"
    expect: str = "any"
    repeat: int = 1
    variant: str | None = None
    reference_ms: float | None = None
    vcpus: int | None = None
    cpu: str | None = None
    fix: bool = False


def _variant(name: str | None) -> variants.Variant:
    if name:
        return variants.load(name)
    return variants.Variant(name="source", description="the commit as it is",
                            folder=project.patches_dir(), base=None, patches=())


def build_root_for(repo: Path, variant: variants.Variant, fragments: list[Path],
                   cache_root: Path) -> Path:
    """The persistent build directory of one repository, variant and fragment set."""
    key = cache.key_of(BUILD_DIR_RECIPE, str(repo.resolve()), variant.name,
                       *(str(f.resolve()) for f in fragments))
    return cache_root / "bisect-build" / key


def build_head(repo: Path, variant_name: str | None, label: str) -> KernelBuild:
    """Build the repository's HEAD (its work tree) in the persistent build directory."""
    from . import kernel, source

    cache_root = project.cache_dir()
    variant = _variant(variant_name)
    fragments = kconfig.fragment_paths()
    root = build_root_for(repo, variant, fragments, cache_root)
    src = source.resolve(str(repo), cache_root)
    return kernel.build_incremental(src, variant, fragments, root, cache_root, label=label)


def _keep_build_log(repo: Path, variant_name: str | None, dest: Path) -> None:
    """Copy a failed build's tuxmake logs beside the step (the build root is reused)."""
    root = build_root_for(repo, _variant(variant_name), kconfig.fragment_paths(),
                          project.cache_dir())
    parts = [root / out / "build.log" for out in ("out-config", "out-kernel")]
    text = "".join(p.read_text(errors="replace") for p in parts if p.is_file())
    if text:
        dest.write_text(text)


def _new_step_dir(bdir: Path, commit: str) -> tuple[int, Path]:
    bdir.mkdir(parents=True, exist_ok=True)
    numbers = [int(m[1]) for p in bdir.glob("step-*") if (m := re.match(r"step-(\d+)-", p.name))]
    n = max(numbers, default=0) + 1
    while True:
        path = bdir / f"step-{n:02d}-{commit[:12]}"
        try:
            path.mkdir()
            return n, path
        except FileExistsError:
            n += 1


def _judged_run(build: KernelBuild, prof: profiles.Profile, symptom: Symptom,
                rundir: Path, label: str, reference_ms: float | None) -> tuple[Verdict, str, str]:
    """One run, judged; infrastructure trouble is retried once, then aborts."""
    from . import runner

    why = ""
    for attempt in (1, 2):
        outdir = rundir if attempt == 1 else rundir.with_name(rundir.name + "-retry")
        outdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            v = runner.run_kernel(build.image, prof, outdir, label, build.config)
        except S2Error as e:
            why = e.message
        else:
            judgement, why = symptom.judge(v, reference_ms)
            if judgement != ERROR:
                return v, judgement, why
        progress.clear()
        if attempt == 1:
            print(f"s2fault: {label}: could not judge ({why}); retrying once", file=sys.stderr)
    raise _Abort(f"{label}: {why} (it happened again on the retry)")


def _reference(opts: StepOptions) -> float | None:
    if opts.reference_ms:
        return opts.reference_ms
    try:
        return float(json.loads((opts.bdir / REFERENCE).read_text())["ms"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_step(opts: StepOptions) -> int:
    """Build and judge the repository's HEAD; the exit code is git bisect run's."""
    start = time.monotonic()
    repo = opts.repo
    symptom = Symptom.parse(opts.expect)
    commit = _commit(repo, "HEAD")
    subject = _subject(repo, commit)
    number, sdir = _new_step_dir(opts.bdir, commit)
    save_log(repo, opts.bdir)
    label = commit[:12]
    record: dict[str, Any] = {
        "step": number, "commit": commit, "subject": subject, "result": None, "why": "",
        "expect": symptom.spec, "mode": opts.mode, "variant": opts.variant,
        "repeat": opts.repeat, "build": {}, "verdicts": [], "run_seconds": [],
        "seconds": None, "dir": str(sdir), "fix": opts.fix,
    }
    try:
        reference_ms = _reference(opts)
        if symptom.latency_ratio and not reference_ms:
            raise _Abort("--expect latency needs the good ref's exec-fault latency: pass "
                         "--reference-ms (s2fault bisect measures it first)")
        record["reference_ms"] = reference_ms
        prof = profiles.mode(opts.mode).with_(vcpus=opts.vcpus, cpu=opts.cpu)
        build_start = time.monotonic()
        try:
            build = build_head(repo, opts.variant, label)
        except BuildError as e:
            _keep_build_log(repo, opts.variant, sdir / "build.log")
            record["build"] = {"error": e.message,
                               "seconds": round(time.monotonic() - build_start, 1)}
            record["result"], record["why"] = "skip", f"does not build: {e.message}"
            return _finish(record, start)
        record["build"] = {"key": build.key, "cached": build.cached,
                           "seconds": round(build.seconds, 1), "image": str(build.image)}
        judgements: list[tuple[str, str]] = []
        for i in range(1, opts.repeat + 1):
            run_start = time.monotonic()
            what = f"{label} run {i}/{opts.repeat}" if opts.repeat > 1 else f"{label} run"
            v, judgement, why = _judged_run(build, prof, symptom, sdir / f"run-{i}", what,
                                            reference_ms)
            record["run_seconds"].append(round(time.monotonic() - run_start, 1))
            record["verdicts"].append(v.to_dict() | {"judgement": judgement, "why": why})
            judgements.append((judgement, why))
            if _settled(judgements):
                break
        record["result"], record["why"] = decide(judgements, opts.repeat)
        return _finish(record, start)
    except (_Abort, S2Error) as e:
        reason = e.message if isinstance(e, S2Error) else str(e)
        record["result"], record["why"] = "abort", reason
        (opts.bdir / ABORT).write_text(json.dumps(
            {"step": number, "commit": commit, "subject": subject, "reason": reason}, indent=2)
            + "\n")
        progress.clear()
        print(f"s2fault: bisect-step: aborting at {commit[:12]}: {reason}", file=sys.stderr)
        return _finish(record, start)


def _finish(record: dict[str, Any], start: float) -> int:
    record["seconds"] = round(time.monotonic() - start, 1)
    sdir = Path(record["dir"])
    (sdir / STEP).write_text(json.dumps(record, indent=2) + "\n")
    progress.clear()
    build = record["build"]
    timing = [f"build {build['seconds']:g} s" + (" (cached)" if build.get("cached") else "")
              if "seconds" in build else "not built"]
    if record["run_seconds"]:
        timing.append("runs " + "+".join(f"{s:g}" for s in record["run_seconds"]) + " s")
    print(f"step {record['step']:02d} {record['commit'][:12]} {record['result']:<5} "
          f"{record['why']} [{', '.join(timing)}] {record['subject']}", flush=True)
    print(f"  artifacts: {sdir}", flush=True)
    return (FIX_EXIT_OF if record.get("fix") else EXIT_OF)[record["result"]]


def load_steps(bdir: Path) -> list[dict[str, Any]]:
    steps = []
    for path in bdir.glob(f"step-*/{STEP}"):
        try:
            steps.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return sorted(steps, key=lambda s: s["step"])


# --- the whole bisection -------------------------------------------------------------------


@dataclass
class Request:
    repo: str
    good: str
    bad: str
    mode: str = "functional"
    expect: str = "any"
    repeat: int = 1
    variant: str | None = None
    vcpus: int | None = None
    cpu: str | None = None
    fix: bool = False
    good_commit: str = ""
    bad_commit: str = ""

    def step_args(self, bdir: Path) -> list[str]:
        args = ["--repo", self.repo, "--dir", str(bdir), "--mode", self.mode,
                "--expect", self.expect, "--repeat", str(self.repeat)]
        for opt, value in (("--variant", self.variant), ("--vcpus", self.vcpus),
                           ("--cpu", self.cpu)):
            if value is not None:
                args += [opt, str(value)]
        return args + (["--fix"] if self.fix else [])

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
            ms = v.workload.get("exec_fault_ms", {}).get("max")
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
    here = str(Path(__file__).absolute().parents[1])
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


# --- command line: the handlers (their parsers are in cli.py) ----------------------------


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
                      mode=args.mode, expect=args.expect, repeat=args.repeat,
                      variant=args.variant, vcpus=args.vcpus, cpu=args.cpu, fix=args.fix)
    return run_bisect(req, bdir, Path(args.json) if args.json else None, args.resume, quiet)


def cmd_bisect_step(args: argparse.Namespace) -> int:
    repo = Path(args.repo).resolve()
    bdir = Path(args.dir).resolve() if args.dir else (
        project.cache_dir() / "bisect-steps" / cache.key_of(str(repo)))
    opts = StepOptions(repo=repo, bdir=bdir, mode=args.mode, expect=args.expect,
                       repeat=args.repeat, variant=args.variant,
                       reference_ms=args.reference_ms, vcpus=args.vcpus, cpu=args.cpu,
                       fix=args.fix)
    try:
        if opts.repeat < 1:
            raise InputError("--repeat must be at least 1")
        return run_step(opts)
    except S2Error as e:
        # Before a step exists (bad options, not a repository): never good or bad.
        progress.clear()
        print(f"s2fault: bisect-step: {e.message}", file=sys.stderr)
        return EXIT_ABORT
    except Exception:  # noqa: BLE001 - a crash exits 1, which git bisect run would call bad
        traceback.print_exc()
        return EXIT_ABORT
