#!/usr/bin/env python3
"""Wall time of `s2fault bisect` over a 16-commit range (target: under 6 min on 2 cores).

The range is new on every run: 15 harmless commits carry a nonce, so every step is a
real incremental build, not a kernel-cache hit. One commit among them removes the
upstream I-cache fix. The range sits on the test fixture's repository (Debian's
linux-source-6.12 committed as a git history, see tests/test_bisect.py; the first use
commits it, ~2 min, not counted) and the bisection reuses that repository's persistent
build directory, as a user's next bisection of the same tree would. The first build of a
fresh build directory is a cold build (minutes): run the bisection tests, or this
bench, once before reading the figure.

Usage: bench/bench_bisect.py [--mode dilated|functional] [--position N] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from test_bisect import (  # noqa: E402
    BASE_TAG,
    ICACHE_BUG,
    fixture_repo,
    git,
    harmless,
    make_history,
)

from conftest import s2fault  # noqa: E402

RANGE = 16
SYMPTOM = {"dilated": "soft_lockup@icache_inval_pou", "functional": "latency>=10"}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=sorted(SYMPTOM), default="dilated")
    ap.add_argument("--position", type=int, default=11,
                    help=f"which of the {RANGE} commits is bad (1-{RANGE})")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    if not 1 <= args.position <= RANGE:
        ap.error(f"--position must be within 1-{RANGE}")

    repo = fixture_repo()
    nonce = f" [bench {time.strftime('%Y%m%d-%H%M%S')}]"
    changes = [harmless(n, nonce) for n in range(1, RANGE)]
    changes.insert(args.position - 1, ICACHE_BUG)
    commits = make_history(repo, "bench", changes)
    bad = commits[args.position - 1]

    with tempfile.TemporaryDirectory(prefix="bench-bisect-") as tmp:
        out = Path(tmp) / "bisect.json"
        start = time.monotonic()
        r = s2fault("bisect", "--repo", str(repo), "--good", BASE_TAG, "--bad", "bench",
                    "--mode", args.mode, "--expect", SYMPTOM[args.mode],
                    "--repeat", str(args.repeat), "--dir", str(Path(tmp) / "bisect"),
                    "--json", str(out))
        wall = time.monotonic() - start
        if not out.is_file():
            print(r.stdout + r.stderr, file=sys.stderr)
            return 2
        summary = json.loads(out.read_text())
    git(repo, "branch", "-D", "bench")

    print(f"bisect, {RANGE}-commit range, {args.mode}, --expect {SYMPTOM[args.mode]}:")
    if summary.get("reference"):
        print(f"  reference (good ref): {summary['reference']['ms']:g} ms")
    for s in summary["steps"]:
        build = s["build"].get("seconds")
        runs = "+".join(f"{x:g}" for x in s["run_seconds"]) or "-"
        print(f"  step {s['step']:02d} {s['commit'][:12]} {s['result']:<5} "
              f"build {build if build is not None else '-'} s, runs {runs} s, "
              f"total {s['seconds']:g} s")
    ok = summary["first_bad"] == bad
    print(f"  answer: {'right' if ok else 'WRONG'} ({(summary['first_bad'] or 'none')[:12]})")
    print(f"wall time: {wall:.0f} s ({wall / 60:.1f} min; target < 6 min)")
    return 0 if ok and r.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
