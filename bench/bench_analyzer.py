#!/usr/bin/env python3
"""Throughput of the console analyzer on a large synthetic console.

Builds about 100 MB of console text from the golden logs: the clean ones (boot chatter,
user-space output, lines that mention detectors without being their reports) repeated as
filler, and every golden splat dropped in at intervals. Then runs analyzer.analyze() on the
bytes, as analyze_file() would, and prints seconds and MB/s. The target is 100 MB in under
10 s on one core; this is a measurement to look at, not a test that fails.

    PYTHONPATH=src python3 bench/bench_analyzer.py [--mb 100] [--splat-every-kb 64]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from s2fault.judge.analyzer import analyze  # noqa: E402

GOLDEN = ROOT / "tests" / "golden"


def console_part(path: Path) -> tuple[int, bytes]:
    """(splats the golden header expects, console bytes) from a golden file."""
    data = path.read_bytes()
    header, _, console = data.partition(b"\n\n")
    if not console.endswith(b"\n"):
        console += b"\n"
    expected = sum(line.startswith(b"KIND:") for line in header.splitlines())
    return expected, console


def build(target: int, splat_every: int) -> tuple[bytes, int]:
    """The console, and how many splats the golden headers say it holds."""
    clean: list[bytes] = []
    splats: list[tuple[int, bytes]] = []
    for path in sorted(GOLDEN.glob("*.log")):
        expected, console = console_part(path)
        if expected:
            splats.append((expected, console))
        else:
            clean.append(console)
    if not clean or not splats:
        raise SystemExit(f"need clean and splat logs in {GOLDEN}")
    filler = b"".join(clean)
    parts: list[bytes] = []
    size = 0
    inserted = 0
    since = 0
    i = 0
    while size < target:
        parts.append(filler)
        size += len(filler)
        since += len(filler)
        if since >= splat_every:
            expected, log = splats[i % len(splats)]
            parts.append(log)
            size += len(log)
            inserted += expected
            since = 0
            i += 1
    return b"".join(parts), inserted


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=100.0, help="console size in MB (default 100)")
    ap.add_argument(
        "--splat-every-kb",
        type=float,
        default=64.0,
        help="clean text between two golden splat logs, in KB (default 64)",
    )
    args = ap.parse_args()

    t0 = time.perf_counter()
    data, expected = build(int(args.mb * 1e6), int(args.splat_every_kb * 1e3))
    built = time.perf_counter() - t0
    mb = len(data) / 1e6
    lines = data.count(b"\n")
    print(f"console: {mb:.1f} MB, {lines} lines, {expected} splats planted ({built:.1f} s)")

    t0 = time.perf_counter()
    splats = analyze(data)
    took = time.perf_counter() - t0
    print(f"analyze: {took:.2f} s, {mb / took:.1f} MB/s, {len(splats)} splats found")
    if len(splats) != expected:
        print("warning: found a different number of splats than planted", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
