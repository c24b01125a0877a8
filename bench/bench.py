#!/usr/bin/env python3
"""The timings issue 14 sets targets for, each printed beside its goal (a benchmark, never
a timed test). Run it on a quiet machine; it prints the load average it saw.

  edit loop      edit a .c file of a variant's series -> that variant's functional
                 verdict (`s2fault check`), the second edit, caches warm   goal <= 10 s
  warm matrix    `s2fault check`, every variant x mode, nothing to build   goal <= 30 s
  cold check     `s2fault check` with an empty kernel cache and ccache     goal <= 5 min
                 (--cold; the set-up of a fresh machine, apt and venv, comes on top)
  .ci/run        `make test` sessions recorded on this machine by tests/conftest.py
                 (the newest cold and warm one)                  goal <= 30 min / <= 10 min

A figure over its goal is followed by what it is made of and its floor, what would
remain with nothing avoidable left (bench/floors.py does the arithmetic), measured:

  edit loop      its parts, with make split by running it again in the variant's tree
                 through tuxmake's reproducer: once with nothing changed (kbuild's walk)
                 and once with the edited file touched (a ccache hit, then the link);
                 floor = walk + the edited file's compile + link + one boot to a verdict
  warm matrix    floor = max(the longest cell, the cells' CPU-seconds / the host's CPUs)
  cold check     floor = the unpack + the base tree's make from an empty ccache + each
                 variant's make (one after another: each waits for the base tree) + the
                 last-built variant's longest cell
  .ci/run        the five largest test files of the session, and its floor: the tests
                 that build or boot (marked slow), which must stay real; and the
                 session's CPU time over the host's CPUs, the floor of any schedule

Usage: bench/bench.py [--cold] [--skip-matrix] [--variant NAME]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import floors  # noqa: E402  (beside this script: its directory is on sys.path)

from s2fault import kernel, project  # noqa: E402
from s2fault.kernel import buildtree  # noqa: E402
from s2fault.matrix.cores import cores_available  # noqa: E402

GOALS = {"edit": 10.0, "matrix": 30.0, "cold": 300.0, "ci_cold": 1800.0, "ci_warm": 600.0}
SESSIONS = "test-sessions.json"  # written by tests/conftest.py


def s2fault(*args: str, env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    start = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "s2fault", "-q", *args], cwd=ROOT,
                       capture_output=True, text=True, env=os.environ | (env or {}))
    return time.monotonic() - start, r


EDITED = "arch/arm64/kvm/mmu.c"  # the file the bench's one-patch series edits


def edit_home(tmp: Path, variant: str, tag: str) -> Path:
    """A checkout whose `edited` variant is `variant` plus one patch that edits
    EDITED (a new constant in the object code, so the edit is real)."""
    home = tmp / "home"
    if not home.exists():
        (home / "patches").mkdir(parents=True)
        for name in ("kernel_configs", "guests"):
            (home / name).symlink_to(ROOT / name)
        for folder in (ROOT / "patches").iterdir():
            (home / "patches" / folder.name).symlink_to(folder)
        (home / "patches" / "edited").mkdir()
    folder = home / "patches" / "edited"
    toml = (ROOT / "patches" / variant / "variant.toml").read_text()
    (folder / "variant.toml").write_text(f'base = "{variant}"\n' + "\n".join(
        line for line in toml.splitlines() if not line.startswith("base")) + "\n")
    (folder / "0001-edit.patch").write_text(
        f"--- a/{EDITED}\n"
        f"+++ b/{EDITED}\n"
        "@@ -1,4 +1,5 @@\n"
        " // SPDX-License-Identifier: GPL-2.0-only\n"
        f'+static const char s2fault_edit[] __attribute__((used)) = "{tag}";\n'
        " /*\n"
        "  * Copyright (C) 2012 - Virtual Open Systems and Columbia University\n"
        "  * Author: Christoffer Dall <c.dall@virtualopensystems.com>\n"
    )
    (folder / "series").write_text("0001-edit.patch\n")
    return home


def edit_loop(variant: str) -> tuple[float, str, list[str]]:
    """The second edit's seconds, a note, and (over the goal) its parts and floor."""
    with tempfile.TemporaryDirectory(prefix="s2fault-bench-") as tmp_name:
        tmp = Path(tmp_name)
        times = []
        for n in range(3):  # the first builds the tree; the second edit is the figure
            home = edit_home(tmp, variant, f"bench {time.time_ns()} {n}")
            secs, r = s2fault("check", "--variant", "edited", "--mode", "functional",
                              "--results", str(tmp / f"r{n}"), "--json", str(tmp / f"{n}.json"),
                              env={"S2FAULT_HOME": str(home)})
            if r.returncode != 0:
                return float("nan"), f"check failed ({r.returncode}): {r.stdout[-400:]}", []
            times.append(secs)
            cells = [c for c in json.loads((tmp / f"{n}.json").read_text())["cells"]
                     if c["variant"] == "edited"]
        build = cells[0]["build"]
        entry = Path(build["image"]).parent
        meta = json.loads((entry / "s2fault-build.json").read_text())
        runs = sum(c["run_seconds"] for c in cells)
        note = (f"build {build['seconds']} s (sync {meta.get('sync_seconds')} s, make "
                f"{meta.get('make_seconds')} s, {meta.get('changed_files')} file changed), "
                f"runs {runs:.1f} s; edits: " + ", ".join(f"{t:.1f}" for t in times) + " s")
        if times[-1] <= GOALS["edit"]:
            return times[-1], note, []
        tux = json.loads((entry / "metadata.json").read_text())
        target = tux["build"]["targets"][-1]
        tux_make = tux["results"]["targets"][target]["duration"]
        try:
            walk, replay = remake(entry / "reproducer", target, tmp)
        except RuntimeError as e:
            return times[-1], note, [f"no floor: {e}"]
        remade = (f"make again in the tree: nothing changed {walk.seconds:.1f} s "
                  f"({walk.ccache}), {EDITED} touched {replay.seconds:.1f} s "
                  f"({replay.ccache}); the edit's make {tux_make:.1f} s ({_ccache(tux)})")
        measured = floors.EditLoop(
            total=times[-1], build=build["seconds"], sync=meta["sync_seconds"],
            tuxmake=meta["make_seconds"], make_edit=tux_make,
            make_walk=walk.seconds, make_replay=replay.seconds, runs=runs,
            kernel_boot=sum(kernel_boot_seconds(Path(c["artifacts"]["console_log"]))
                            for c in cells))
    parts, floor = floors.edit_breakdown(measured)
    return times[-1], note, [
        "made of: " + ", ".join(f"{p.name} {p.seconds:.1f} s" for p in parts),
        remade,
        floor.describe(),
    ]


@dataclass(frozen=True)
class Make:
    """One tuxmake run of a build target: make's seconds, and its compiler calls."""

    seconds: float
    ccache: str


REMAKES = 2  # each make below is timed this many times, the fastest kept: a floor is
# what the work costs, not what a busy machine made of it once


def remake(reproducer: Path, target: str, tmp: Path) -> tuple[Make, Make]:
    """Make's seconds in the edited variant's tree, run again by its tuxmake reproducer
    (the command line and environment of the build): with nothing changed (kbuild's
    walk of an up-to-date tree), and with the edited file touched (its compile, a ccache
    hit now, and the link). Both leave the tree as the build left it: the same bytes,
    which the next edit builds on. RuntimeError when a run did not do what it was there
    to measure."""
    argv = shlex.split(reproducer.read_text())
    src = Path(argv[argv.index("--directory") + 1])
    obj = Path(argv[argv.index("--build-dir") + 1])
    edited = src / EDITED
    if edited.stat().st_nlink != 1:  # a link to the pristine tree: never touch that
        raise RuntimeError(f"{edited} is not the series' own copy")
    vmlinux = obj / "vmlinux"
    walks, replays = [], []
    # The tree's lock: no build of it runs meanwhile.
    with open(buildtree.Tree(src.parent).lock_path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for n in range(REMAKES):
            linked = vmlinux.stat().st_mtime_ns
            walks.append(_tuxmake(argv, target, tmp / f"walk{n}"))
            if vmlinux.stat().st_mtime_ns != linked:
                raise RuntimeError("make with nothing changed linked again: not a walk")
            os.utime(edited)
            replays.append(_tuxmake(argv, target, tmp / f"replay{n}"))
            if vmlinux.stat().st_mtime_ns == linked:
                raise RuntimeError(f"make after touching {EDITED} did not link")
    return min(walks, key=lambda m: m.seconds), min(replays, key=lambda m: m.seconds)


def _tuxmake(argv: list[str], target: str, out: Path) -> Make:
    """Run the reproducer's tuxmake with its output in `out`."""
    r = subprocess.run([*argv, "--output-dir", str(out)], capture_output=True, text=True)
    try:
        meta = json.loads((out / "metadata.json").read_text())
        result = meta["results"]["targets"][target]
    except (OSError, ValueError, KeyError):
        meta, result = {}, {"status": f"exit {r.returncode}"}
    if r.returncode != 0 or result["status"] != "PASS":
        raise RuntimeError(f"tuxmake {target} again: {result['status']} "
                           f"({(r.stdout + r.stderr).strip()[-200:]})")
    return Make(float(result["duration"]), _ccache(meta))


def _ccache(tux_metadata: dict) -> str:
    """The compiler calls of one tuxmake run: its wrapper zeroes ccache's counts first
    (they count any build beside it too, in the same ccache)."""
    counts = tux_metadata.get("ccache") or {}
    return f"ccache hits {counts.get('cache_hits', '?')}, misses {counts.get('cache_misses', '?')}"


def kernel_boot_seconds(console: Path) -> float:
    """The kernel's clock when it started /init: its boot. (The edit loop's runs are
    functional: the guest clock follows the host's.)"""
    for line in console.read_text(errors="replace").splitlines():
        found = re.match(r"\[\s*(\d+\.\d+)\] Run /init as init process", line)
        if found:
            return float(found.group(1))
    return 0.0


def warm_matrix() -> tuple[float, str, list[str], int | None]:
    """The warm matrix's seconds, a note, its floor, and how many cells it has."""
    with tempfile.TemporaryDirectory(prefix="s2fault-bench-") as tmp:
        s2fault("check", "--results", f"{tmp}/warmup")  # builds whatever is missing
        secs, r = s2fault("check", "--results", f"{tmp}/r", "--json", f"{tmp}/c.json")
        if r.returncode != 0:
            return secs, f"check exit {r.returncode}", [], None
        cells = json.loads(Path(f"{tmp}/c.json").read_text())["cells"]
    runs = sum(c["run_seconds"] for c in cells)
    retried = [f"{c['variant']}/{c['mode']}" for c in cells if c.get("retried")]
    # A dilated run the model starved runs again (matrix.retryable): its seconds count.
    note = (f"{len(cells)} cells, {runs:.0f} s of QEMU time in all"
            + (f"; run again: {', '.join(retried)}" if retried else ""))
    if secs <= GOALS["matrix"]:
        return secs, note, [], len(cells)
    host = cores_available()
    by_mode: dict[str, list[tuple[float, int]]] = {}
    for c in cells:
        prof = c["profile"]
        cpus = floors.cell_cpus(prof.get("icount_shift") is not None, prof.get("smp") or 1, host)
        by_mode.setdefault(c["mode"], []).append((c["run_seconds"], cpus))
    occupied = [cell for mode_cells in by_mode.values() for cell in mode_cells]
    floor, bound = floors.matrix_floor(occupied, host)
    cpu_seconds = sum(s * n for s, n in occupied)
    return secs, note, [
        "made of: " + "; ".join(
            f"{mode} {len(mc)} cells, {sum(s for s, _ in mc):.1f} s holding "
            + "/".join(str(n) for n in sorted({n for _, n in mc}))
            + (" CPU each" if {n for _, n in mc} == {1} else " CPUs each")
            for mode, mc in by_mode.items()),
        f"floor {floor:.1f} s = max(longest cell {max(s for s, _ in occupied):.1f} s, "
        f"{cpu_seconds:.1f} CPU-s / {host} CPUs = {cpu_seconds / host:.1f} s) "
        f"(largest: {bound}); {len(cells)} cells, {runs:.1f} s of QEMU in all",
    ], len(cells)


def cold_check() -> tuple[float, str, list[str]]:
    """A check from an empty kernel cache and an empty ccache: its seconds, a note, and
    (over the goal) its parts and floor, from what the check left in that cache: the
    source entry's unpack seconds and each build's s2fault-build.json."""
    with tempfile.TemporaryDirectory(prefix="s2fault-bench-cold-") as tmp:
        cache_root = Path(tmp) / "cache"
        env = {"S2FAULT_CACHE": str(cache_root), "CCACHE_DIR": f"{tmp}/ccache"}
        secs, r = s2fault("check", "--results", f"{tmp}/r", "--json", f"{tmp}/c.json", env=env)
        if not Path(f"{tmp}/c.json").is_file():
            return secs, f"exit {r.returncode}: {(r.stdout + r.stderr).strip()[-300:]}", []
        cells = json.loads(Path(f"{tmp}/c.json").read_text())["cells"]
        note = f"exit {r.returncode}, {len(cells)} cells"
        if r.returncode != 0 or secs <= GOALS["cold"]:
            return secs, note, []
        unpacks = [json.loads(m.read_text())["metadata"].get("unpack_seconds")
                   for m in (cache_root / "sources").glob("*/manifest.json")]
        builds: list[floors.VariantBuild] = []
        for c in cells:  # the builds ran one after another, in the cells' order
            if c["variant"] in {b.name for b in builds} or not c["build"].get("image"):
                continue
            meta = json.loads((Path(c["build"]["image"]).parent
                               / "s2fault-build.json").read_text())
            make = float(meta.get("make_seconds") or 0.0)
            base_make = float((meta.get("base_built") or {}).get("make_seconds") or 0.0)
            if not meta["patches"]:  # the base tree itself
                make, base_make = 0.0, make
            builds.append(floors.VariantBuild(
                c["variant"], float(meta["build_seconds"]), make,
                float(meta.get("seed_seconds") or 0.0), base_make))
    if not builds or None in unpacks or len(unpacks) != 1:
        return secs, note, [f"no floor: {len(builds)} builds, unpack seconds {unpacks}"]
    measured = floors.ColdCheck(
        total=secs, unpack=float(unpacks[0]), builds=tuple(builds),
        last_cells=tuple(c["run_seconds"] for c in cells if c["variant"] == builds[-1].name))
    parts, floor = floors.cold_breakdown(measured)
    runs = sum(c["run_seconds"] for c in cells)
    return secs, note, [
        "made of: " + ", ".join(f"{p.name} {_fmt(p.seconds)}" for p in parts),
        "builds, in order: " + ", ".join(
            f"{b.name} {b.seconds:.0f} s (make {b.make:.0f} s"
            + (f", base make {b.base_make:.0f} s" if b.base_make else "")
            + (f", seed {b.seed:.0f} s" if b.seed else "") + ")" for b in builds)
        + f"; {runs:.0f} s of QEMU beside and after them",
        floor.describe(),
    ]


def recorded_sessions() -> dict[str, dict]:
    try:
        sessions = json.loads((project.cache_dir() / SESSIONS).read_text())
    except (OSError, ValueError):
        return {}
    whole = [s for s in sessions if s.get("whole_suite")]
    out = {}
    for kind in ("cold", "warm"):
        of_kind = [s for s in whole if s.get("cold") == (kind == "cold")]
        if of_kind:
            out[kind] = of_kind[-1]
    return out


def session_floor(session: dict) -> list[str]:
    """What a recorded `make test` was made of (its largest files) and its floor: the
    tests that build or boot, which stay real (tests/conftest.py records both)."""
    files = session.get("files")
    if not files:
        return ["made of: not recorded (a session from before tests/conftest.py kept "
                "its seconds per file)"]
    top = floors.largest_files(files, session["seconds"])
    cpu_of = session.get("files_cpu") or {}

    def busy(name: str, secs: float) -> str:  # CPUs the file kept busy on average
        return f", {cpu_of[name] / secs:.1f} CPUs busy" if name in cpu_of and secs else ""

    lines = ["made of: " + ", ".join(f"{name} {_fmt(secs)} ({share:.0%}{busy(name, secs)})"
                                     for name, secs, share in top)
             + f"; {len(top)} of {len(files)} files, "
             f"{sum(share for _, _, share in top):.0%} of the session"]
    slow = session.get("slow_seconds")
    if slow is not None:
        lines.append(f"floor {_fmt(slow)}: the tests that build or boot (marked slow), "
                     f"{slow / session['seconds']:.0%} of the session, one after another")
    cpu, cpus = session.get("cpu_seconds"), session.get("cpus")
    if cpu is not None and cpus:
        # Run side by side, the tests could go no lower than their CPU time allows.
        spread = floors.cpu_floor(cpu, cpus)
        lines.append(f"CPU: {cpu / 60:.1f} CPU-min of pytest and what it waited for (QEMU, "
                     f"make, gcc) = {_fmt(spread)} on {cpus} CPUs, the floor of any "
                     f"schedule; the session kept them {spread / session['seconds']:.0%} busy")
    return lines


@dataclass(frozen=True)
class Row:
    """One target: its figure (None: not measured), its goal, a note, and, for a figure
    over its goal, what it is made of and its floor."""

    name: str
    value: float | None
    goal: float
    note: str
    floor: list[str] = field(default_factory=list)

    @property
    def over(self) -> bool:
        return self.value is not None and not self.value <= self.goal


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold", action="store_true", help="also time a cold check (minutes)")
    ap.add_argument("--skip-matrix", action="store_true")
    ap.add_argument("--variant", default="interval-tree-v1",
                    help="the variant whose series gets the edit (default: %(default)s)")
    args = ap.parse_args()
    load = os.getloadavg()
    stat_start, wall_start = cpu_times(), time.monotonic()
    rows: list[Row] = []
    kernel.build("upstream")  # the base tree, so the figures below are not a cold build
    secs, note, floor = edit_loop(args.variant)
    rows.append(Row("edit a .c of a series -> functional verdict", secs, GOALS["edit"], note,
                    floor))
    if not args.skip_matrix:
        secs, note, floor, n_cells = warm_matrix()
        rows.append(Row(f"warm full matrix ({n_cells or '?'} cells)", secs, GOALS["matrix"],
                        note, floor))
    if args.cold:
        secs, note, floor = cold_check()
        rows.append(Row("cold check, empty caches (set-up not included)", secs, GOALS["cold"],
                        note, floor))
    else:
        rows.append(Row("cold check, empty caches", None, GOALS["cold"], "not run (--cold)"))
    sessions = recorded_sessions()
    for kind in ("cold", "warm"):
        s = sessions.get(kind)
        goal = GOALS[f"ci_{kind}"]
        if s is None:
            rows.append(Row(f".ci/run ({kind} caches)", None, goal,
                            "no whole `make test` recorded on this machine yet"))
            continue
        rows.append(Row(f".ci/run ({kind} caches)", s["seconds"], goal,
                        f"{s['passed']} passed, {s['failed']} failed, {s['when']}",
                        session_floor(s) if s["seconds"] > goal else []))
    print(f"load average at start: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} "
          f"({os.cpu_count()} CPUs)")
    stolen = stolen_share(stat_start, cpu_times(), time.monotonic() - wall_start)
    if stolen is not None:
        # On a virtual machine, time the hypervisor gave the CPUs to other guests: every
        # figure below was that much slower than the same work on idle hardware.
        print(f"CPU steal during the bench: {stolen:.1%} of the CPUs' time")
    width = max(len(r.name) for r in rows)
    for r in rows:
        shown = "-" if r.value is None else _fmt(r.value)
        mark = "" if r.value is None else ("  OVER" if r.over else "  ok")
        print(f"{r.name.ljust(width)}  {shown:>9}  goal {_fmt(r.goal):>8}{mark}  {r.note}")
        if r.over:
            for line in r.floor:
                print(f"    {line}")
    return 0


def cpu_times() -> list[int] | None:
    """The host's CPU time counters (/proc/stat "cpu" line, in clock ticks)."""
    try:
        with open("/proc/stat") as f:
            return [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None


def stolen_share(before: list[int] | None, after: list[int] | None,
                 seconds: float) -> float | None:
    """Steal time (the 8th counter) between two readings, as a share of all CPUs' time."""
    if not before or not after or len(before) < 8 or len(after) < 8 or seconds <= 0:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (after[7] - before[7]) / ticks / (seconds * (os.cpu_count() or 1))


def _fmt(seconds: float) -> str:
    if seconds != seconds:  # nan
        return "failed"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


if __name__ == "__main__":
    sys.exit(main())
