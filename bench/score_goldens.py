#!/usr/bin/env python3
"""How well the analyzer names what the golden logs say, as figures (never a timed test).

For every tests/golden/*.log, compares analyze() with the header's expectation blocks:

  kind         the first splat's kind is the first block's KIND (a log with EXPECT: none
               must give no splat: that is the "negatives" figure instead)
  attribution  the first splat's culprit is the first block's FUNCTION: in `function`, or in
               the top TOP frames (a lock wrapper may sit above the function it serves)
  every splat  the same two checks over every expectation block, in order

The held-out evaluation of issue 19 uses the same three figures on logs this repository
never sees; this is the in-repository approximation.

    python3 bench/score_goldens.py [--src DIR] [--top N] [-v]

--src runs another checkout's analyzer on today's goldens (before/after comparisons).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# One reader of the golden format for the tests and this score.
sys.path.insert(0, str(ROOT / "tests"))
from goldenlog import GOLDEN, parse_golden  # noqa: E402


def attributed(splat: object, function: str, top: int) -> bool:
    want = None if function == "none" else function
    if want is None:
        return getattr(splat, "function", None) is None
    frames = tuple(getattr(splat, "frames", ()))[:top]
    return getattr(splat, "function", None) == want or want in frames


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", type=Path, default=ROOT / "src", help="where s2fault is")
    ap.add_argument("--top", type=int, default=3, help="top frames that count (default 3)")
    ap.add_argument("-v", "--verbose", action="store_true", help="name every miss")
    args = ap.parse_args()
    sys.path.insert(0, str(args.src))
    analyze = importlib.import_module("s2fault.judge.analyzer").analyze

    kind_ok = kind_n = attr_ok = attr_n = neg_ok = neg_n = 0
    all_ok = all_n = 0
    for path in sorted(GOLDEN.glob("*.log")):
        blocks, console = parse_golden(path)
        splats = analyze(console)
        if not blocks:
            neg_n += 1
            neg_ok += not splats
            if splats and args.verbose:
                print(f"  false positive: {path.name}: {splats[0].title}")
            continue
        first, got = blocks[0], splats[0] if splats else None
        if "KIND" in first:
            kind_n += 1
            ok = got is not None and got.kind == first["KIND"]
            kind_ok += ok
            if not ok and args.verbose:
                print(f"  kind: {path.name}: want {first['KIND']}, got {got and got.kind}")
        if "FUNCTION" in first:
            attr_n += 1
            ok = got is not None and attributed(got, first["FUNCTION"], args.top)
            attr_ok += ok
            if not ok and args.verbose:
                print(f"  culprit: {path.name}: want {first['FUNCTION']}, "
                      f"got {got and got.function}")
        for i, block in enumerate(blocks):
            s = splats[i] if i < len(splats) else None
            all_n += 1
            all_ok += s is not None and s.kind == block.get("KIND", s.kind) and (
                "FUNCTION" not in block or attributed(s, block["FUNCTION"], args.top)
            )

    def figure(name: str, ok: int, n: int) -> None:
        print(f"{name:<34} {ok / n if n else 0:6.3f}  ({ok}/{n})")

    print(f"golden logs: {GOLDEN.relative_to(ROOT)}, analyzer from {args.src}")
    figure("kind (first splat)", kind_ok, kind_n)
    figure(f"attribution (function or top {args.top})", attr_ok, attr_n)
    figure("negatives (no splat in clean logs)", neg_ok, neg_n)
    figure("every expected splat (kind+culprit)", all_ok, all_n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
