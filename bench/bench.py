#!/usr/bin/env python3
"""The timings issue 14 sets targets for, each printed beside its goal (a benchmark, never
a timed test). Run it on a quiet machine; it prints the load average it saw.

  edit loop      edit a .c file of a variant's series -> that variant's functional
                 verdict (`s2fault check`), the second edit, caches warm   goal <= 10 s
  warm matrix    `s2fault check`, 5 variants x 2 modes, nothing to build   goal <= 30 s
  cold check     `s2fault check` with an empty kernel cache and ccache     goal <= 5 min
                 (--cold; the set-up of a fresh machine, apt and venv, comes on top)
  .ci/run        `make test` sessions recorded on this machine by tests/conftest.py
                 (the newest cold and warm one)                  goal <= 30 min / <= 10 min

Usage: bench/bench.py [--cold] [--skip-matrix] [--variant NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from s2fault import kernel, project  # noqa: E402

GOALS = {"edit": 10.0, "matrix": 30.0, "cold": 300.0, "ci_cold": 1800.0, "ci_warm": 600.0}
SESSIONS = "test-sessions.json"  # written by tests/conftest.py


def s2fault(*args: str, env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    start = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "s2fault", "-q", *args], cwd=ROOT,
                       capture_output=True, text=True, env=os.environ | (env or {}))
    return time.monotonic() - start, r


def edit_home(tmp: Path, variant: str, tag: str) -> Path:
    """A checkout whose `edited` variant is `variant` plus one patch that edits
    arch/arm64/kvm/mmu.c (a new constant in the object code, so the edit is real)."""
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
        "--- a/arch/arm64/kvm/mmu.c\n"
        "+++ b/arch/arm64/kvm/mmu.c\n"
        "@@ -1,4 +1,5 @@\n"
        " // SPDX-License-Identifier: GPL-2.0-only\n"
        f'+static const char s2fault_edit[] __attribute__((used)) = "{tag}";\n'
        " /*\n"
        "  * Copyright (C) 2012 - Virtual Open Systems and Columbia University\n"
        "  * Author: Christoffer Dall <c.dall@virtualopensystems.com>\n"
    )
    (folder / "series").write_text("0001-edit.patch\n")
    return home


def edit_loop(variant: str) -> tuple[float, str]:
    with tempfile.TemporaryDirectory(prefix="s2fault-bench-") as tmp_name:
        tmp = Path(tmp_name)
        times = []
        for n in range(3):  # the first builds the tree; the second edit is the figure
            home = edit_home(tmp, variant, f"bench {time.time_ns()} {n}")
            secs, r = s2fault("check", "--variant", "edited", "--mode", "functional",
                              "--results", str(tmp / f"r{n}"), "--json", str(tmp / f"{n}.json"),
                              env={"S2FAULT_HOME": str(home)})
            if r.returncode != 0:
                return float("nan"), f"check failed ({r.returncode}): {r.stdout[-400:]}"
            times.append(secs)
            cells = json.loads((tmp / f"{n}.json").read_text())["cells"]
            build = next(c["build"] for c in cells if c["variant"] == "edited")
        meta = json.loads((Path(build["image"]).parent / "s2fault-build.json").read_text())
        note = (f"build {build['seconds']} s (sync {meta.get('sync_seconds')} s, make "
                f"{meta.get('make_seconds')} s, {meta.get('changed_files')} file changed), "
                f"runs {sum(c['run_seconds'] for c in cells):.1f} s; edits: "
                + ", ".join(f"{t:.1f}" for t in times) + " s")
        return times[-1], note


def warm_matrix() -> tuple[float, str]:
    with tempfile.TemporaryDirectory(prefix="s2fault-bench-") as tmp:
        s2fault("check", "--results", f"{tmp}/warmup")  # builds whatever is missing
        secs, r = s2fault("check", "--results", f"{tmp}/r", "--json", f"{tmp}/c.json")
        if r.returncode != 0:
            return secs, f"check exit {r.returncode}"
        cells = json.loads(Path(f"{tmp}/c.json").read_text())["cells"]
        runs = sum(c["run_seconds"] for c in cells)
        return secs, f"{len(cells)} cells, boots {runs:.0f} s of QEMU time in all"


def cold_check() -> tuple[float, str]:
    with tempfile.TemporaryDirectory(prefix="s2fault-bench-cold-") as tmp:
        env = {"S2FAULT_CACHE": f"{tmp}/cache", "CCACHE_DIR": f"{tmp}/ccache"}
        secs, r = s2fault("check", "--results", f"{tmp}/r", "--json", f"{tmp}/c.json", env=env)
        note = f"exit {r.returncode}"
        if Path(f"{tmp}/c.json").is_file():
            cells = json.loads(Path(f"{tmp}/c.json").read_text())["cells"]
            builds = {c["variant"]: c["build"].get("seconds") for c in cells}
            note += "; builds " + ", ".join(f"{k} {v} s" for k, v in builds.items())
        return secs, note


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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold", action="store_true", help="also time a cold check (minutes)")
    ap.add_argument("--skip-matrix", action="store_true")
    ap.add_argument("--variant", default="interval-tree-v1",
                    help="the variant whose series gets the edit (default: %(default)s)")
    args = ap.parse_args()
    load = os.getloadavg()
    rows: list[tuple[str, float | None, float, str]] = []
    kernel.build("upstream")  # the base tree, so the figures below are not a cold build
    secs, note = edit_loop(args.variant)
    rows.append(("edit a .c of a series -> functional verdict", secs, GOALS["edit"], note))
    if not args.skip_matrix:
        secs, note = warm_matrix()
        rows.append(("warm full matrix (10 cells)", secs, GOALS["matrix"], note))
    if args.cold:
        secs, note = cold_check()
        rows.append(("cold check, empty caches (set-up not included)", secs, GOALS["cold"],
                     note))
    else:
        rows.append(("cold check, empty caches", None, GOALS["cold"], "not run (--cold)"))
    sessions = recorded_sessions()
    for kind in ("cold", "warm"):
        s = sessions.get(kind)
        note = (f"{s['passed']} passed, {s['failed']} failed, {s['when']}" if s
                else "no whole `make test` recorded on this machine yet")
        rows.append((f".ci/run ({kind} caches)", s["seconds"] if s else None,
                     GOALS[f"ci_{kind}"], note))
    print(f"load average at start: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} "
          f"({os.cpu_count()} CPUs)")
    width = max(len(r[0]) for r in rows)
    for name, value, goal, note in rows:
        shown = "-" if value is None else _fmt(value)
        mark = "" if value is None else ("  ok" if value <= goal else "  OVER")
        print(f"{name.ljust(width)}  {shown:>9}  goal {_fmt(goal):>8}{mark}  {note}")
    return 0


def _fmt(seconds: float) -> str:
    if seconds != seconds:  # nan
        return "failed"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


if __name__ == "__main__":
    sys.exit(main())
