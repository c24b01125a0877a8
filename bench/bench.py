#!/usr/bin/env python3
"""Timings that the issues set targets for, printed as figures (never a timed test).

  cold build        a fresh cache and an empty ccache (target: part of < 6 min cold check)
  ccache-warm build a fresh s2fault cache, warm ccache (what a new variant costs)
  cached build      the same key again: a cache hit (seconds)
  boot + workload   upstream, 8 vCPUs on the 512M block (target < 10 s wall)

Usage: bench/bench.py [--skip-cold] [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from s2fault import kernel, profile, progress, runner  # noqa: E402


def timed(fn):
    start = time.monotonic()
    value = fn()
    return value, time.monotonic() - start


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-cold", action="store_true", help="skip the empty-ccache build")
    ap.add_argument("--runs", type=int, default=3, help="boot + workload repetitions")
    args = ap.parse_args()
    progress.set_quiet(True)
    figures = []
    if not args.skip_cold:
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as cc:
            os.environ["CCACHE_DIR"] = cc
            _, secs = timed(lambda: kernel.build("upstream", cache_root=Path(cache)))
            figures.append(("cold build (empty cache and ccache)", secs, "s"))
            del os.environ["CCACHE_DIR"]
    with tempfile.TemporaryDirectory() as cache:
        _, secs = timed(lambda: kernel.build("upstream", cache_root=Path(cache)))
        figures.append(("build, fresh cache, warm ccache", secs, "s"))
    build, secs = timed(lambda: kernel.build("upstream"))
    figures.append(("cached build (cache hit)", secs, "s"))
    walls = []
    with tempfile.TemporaryDirectory() as results:
        for i in range(args.runs):
            out = runner.new_run_dir(Path(results), f"bench-{i}")
            prof = profile.mode("functional")
            v, secs = timed(lambda o=out, p=prof: runner.run_kernel(build.image, p, o))
            if v.verdict != "pass":
                print(f"run {i}: {v.verdict}: {v.reason}", file=sys.stderr)
            walls.append(secs)
    figures.append(("boot + 8-vCPU workload, median wall", statistics.median(walls), "s"))
    figures.append(("boot + 8-vCPU workload, max wall", max(walls), "s"))
    width = max(len(name) for name, _, _ in figures)
    for name, value, unit in figures:
        print(f"{name.ljust(width)}  {value:8.1f} {unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
