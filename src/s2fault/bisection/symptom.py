"""What makes a commit bad in a bisection (--expect, bisection/__init__.py's docstring): the
symptom, how one run is judged against it, and how a commit's runs are combined.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from s2fault.errors import InputError
from s2fault.kernel import variants
from s2fault.outcome import Outcome

if TYPE_CHECKING:  # the run stage loads when a step runs, not with the CLI
    from s2fault.judge.verdict import Verdict

# What one run says about the symptom; "error" is infrastructure, never good or bad.
BAD, GOOD, UNSURE, ERROR = "bad", "good", "inconclusive", "error"

_SPLAT_SPEC = re.compile(
    r"^(?P<kind>[a-z0-9_]+)(?::(?P<subtype>[a-z0-9_]+))?(?:@(?P<function>[\w.$|]+))?$"
)
_LATENCY_SPEC = re.compile(r"^latency\s*>=\s*(?P<ratio>\d+(?:\.\d+)?)x?$")


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
        from s2fault.judge.analyzer import FAMILIES

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
                return BAD, f"{seen[0].title or seen[0].kind}{more}"
        if v.verdict in (Outcome.ERROR, Outcome.SKIP):  # this machine's, not the commit's
            return ERROR, v.reason
        if self.latency_ratio:
            ms = v.exec_fault_max_ms
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
            other = f" (other: {v.reason})" if v.verdict is Outcome.FAIL else ""
            return GOOD, f"no {self.splat.describe()}{other}"
        if v.verdict is Outcome.FAIL:
            return BAD, v.reason
        return GOOD, v.reason


def _workload_finished(v: Verdict, kind: str) -> bool:
    """Did the run get far enough that a missing splat means something?"""
    if v.workload is None or v.workload.vcpus is None:  # no result line: it never finished
        return False
    # With lockdep already off before the workload, no lockdep splat could be printed.
    off = v.preconditions is not None and v.preconditions.debug_locks_before == 0
    return not (kind == "lockdep" and off)


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
