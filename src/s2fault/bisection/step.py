"""One step of a bisection (`s2fault bisect-step`, the command `git bisect run` runs):
build the repository's HEAD, run it, judge the runs (bisection/symptom.py) and exit with
git bisect run's code. Also the git helpers and the bisection directory's file names,
which the whole bisection (bisection/__init__.py) shares. See that module's docstring
for the contract.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from s2fault import cache, hosttools, progress, project
from s2fault.bisection.symptom import ERROR, Symptom, _settled, decide
from s2fault.errors import EXIT_BISECT_SKIP, BuildError, InputError, S2Error
from s2fault.kernel import kconfig, variants
from s2fault.machine import profiles

if TYPE_CHECKING:  # the build and run stages load when a step runs, not with the CLI
    from s2fault.judge.verdict import Verdict
    from s2fault.kernel import KernelBuild

EXIT_GOOD = 0
EXIT_BAD = 1
EXIT_SKIP = EXIT_BISECT_SKIP
EXIT_ABORT = 128  # git bisect run stops at an exit code >= 128
EXIT_OF = {"good": EXIT_GOOD, "bad": EXIT_BAD, "skip": EXIT_SKIP, "abort": EXIT_ABORT}
# --fix: git bisect's old/new terms. A commit still showing the symptom is old
# ("broken", exit 0 in a step), one without it is new ("fixed", exit 1).
FIX_TERMS = ("broken", "fixed")
FIX_EXIT_OF = EXIT_OF | {"bad": EXIT_GOOD, "good": EXIT_BAD}

REQUEST = "bisect.json"
LOG = "git-bisect.log"
RUN_LOG = "git-bisect-run.log"
REFERENCE = "reference.json"
ABORT = "abort.json"
STEP = "step.json"
# Bump when the layout of the persistent build directories changes.
# 2: the build tree of kernel.build (source copy with the objects inside it).
BUILD_DIR_RECIPE = "s2fault-bisect-build-2"


class _Abort(Exception):
    """Infrastructure trouble that survived its retry: stop the bisection."""


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


@dataclass(kw_only=True)
class Judging:
    """How a bisection judges each commit, the same for `bisect` and each `bisect-step`
    it runs: the mode and machine, the symptom looked for, how many runs, and the
    variant's series applied on top (None: the commit as it is)."""

    mode: str = "functional"
    expect: str = "any"
    repeat: int = 1
    variant: str | None = None
    vcpus: int | None = None
    cpu: str | None = None
    fix: bool = False  # looking for the commit that made the symptom go away

    @classmethod
    def of(cls, args: argparse.Namespace) -> dict[str, Any]:
        """The judging options of a parsed `bisect` or `bisect-step` command line."""
        return {f.name: getattr(args, f.name) for f in fields(Judging)}

    def step_flags(self) -> list[str]:
        """The same options as `bisect-step` flags."""
        flags = ["--mode", self.mode, "--expect", self.expect, "--repeat", str(self.repeat)]
        for opt, value in (("--variant", self.variant), ("--vcpus", self.vcpus),
                           ("--cpu", self.cpu)):
            if value is not None:
                flags += [opt, str(value)]
        return flags + (["--fix"] if self.fix else [])


@dataclass(kw_only=True)
class StepOptions(Judging):
    repo: Path
    bdir: Path
    reference_ms: float | None = None


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
    from s2fault import kernel, source

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
    from s2fault import runner

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


# --- command line: the handler of `bisect-step` (its parser is in cli/parser.py) ------------------


def cmd_bisect_step(args: argparse.Namespace) -> int:
    repo = Path(args.repo).resolve()
    bdir = Path(args.dir).resolve() if args.dir else (
        project.cache_dir() / "bisect-steps" / cache.key_of(str(repo)))
    opts = StepOptions(repo=repo, bdir=bdir, reference_ms=args.reference_ms,
                       **Judging.of(args))
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
