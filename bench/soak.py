#!/usr/bin/env python3
"""Soak: run the functional matrix N times in a row and count what went wrong.

Prints, over all iterations: false positives on the variants declared clean (must be
0), missed detections on the known-bad variants (must be 0), cells that could not be
judged, QEMU processes left behind (must be 0), and wall time per iteration.

Usage: bench/soak.py [--iterations 20] [--mode functional]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from s2fault import matrix, progress
from s2fault.kernel import variants  # noqa: E402
from s2fault.machine import qemu_children  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--mode", default="functional", choices=list(variants.MODES))
    args = ap.parse_args()
    progress.set_quiet(True)
    names = variants.names()
    # Known-bad: the variant must show something (a splat, or a latency ratio).
    declared = {n: variants.load(n).expectation(args.mode) for n in names}
    bad = {n for n, exp in declared.items() if exp.splats or exp.latency_ratio_min}
    false_pos = missed = unjudged = leftovers = crashes = 0
    walls = []
    # Kept on disk: a failing iteration's console logs are the point of a soak.
    results = Path("results") / f"soak-{matrix.timestamp()}"
    print(f"results in {results}", flush=True)
    for i in range(args.iterations):
        start = time.monotonic()
        try:
            cells = matrix.run_matrix(names, [args.mode], results / f"it{i}")
        except Exception as e:  # noqa: BLE001 - a soak counts crashes, it does not stop
            print(f"iteration {i + 1}: harness crashed: {e!r}", file=sys.stderr)
            crashes += 1
            continue
        walls.append(time.monotonic() - start)
        for c in cells:
            if c.match is True:
                continue
            if c.match is None:
                unjudged += 1
            elif c.variant in bad:
                missed += 1
            else:
                false_pos += 1
            print(f"iteration {i + 1}: {c.variant}/{c.mode}: {c.why}", file=sys.stderr)
        leftovers += len(qemu_children(os.getpid()))
        print(f"iteration {i + 1}/{args.iterations}: {walls[-1]:.1f} s, "
              f"{sum(c.match is True for c in cells)}/{len(cells)} cells match", flush=True)
    print(f"mode {args.mode}, {args.iterations} iterations x {len(names)} variants")
    print(f"false positives on clean variants:   {false_pos}")
    print(f"missed detections on bad variants:   {missed}")
    print(f"cells that could not be judged:      {unjudged}")
    print(f"QEMU processes left behind:          {leftovers}")
    print(f"harness crashes:                     {crashes}")
    print(f"wall per iteration: median {statistics.median(walls):.1f} s, max {max(walls):.1f} s")
    return 0 if false_pos == missed == leftovers == crashes == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
