"""The four outcomes of a run, a cell or a command, and the exit code each stands for.

  pass   the kernel booted, ran the workload on the path under test, coherent, no splat
  fail   the kernel misbehaved: a splat, a lockup, a wrong value from the guest
  skip   the path under test cannot run here (CTR_EL0.DIC=1, kvm-arm.mode refused, no
         memory for the hugepage): kselftest's SKIP, JUnit's <skipped>, Avocado's CANCEL
  error  the run could not be judged: infrastructure, bad input, a kernel without what
         the workload needs (lockdep, KVM, the lockup detector a dilated run arms).
Neither skip nor error is ever a pass.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from s2fault.errors import EXIT_ERROR, EXIT_FAIL, EXIT_PASS, EXIT_SKIP, InputError


class Outcome(enum.StrEnum):
    """The four outcomes of a run, a cell or a command (above), each with the
    exit code it stands for. A str: it compares, prints and serializes as its name."""

    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"

    @property
    def exit_code(self) -> int:
        return _EXIT[self]

    @property
    def table_word(self) -> str:
        """As the verdict table and the reports show it: what needs a look in capitals."""
        return "pass" if self is Outcome.PASS else self.name


_EXIT = {Outcome.PASS: EXIT_PASS, Outcome.FAIL: EXIT_FAIL, Outcome.SKIP: EXIT_SKIP,
         Outcome.ERROR: EXIT_ERROR}
EXIT_CODES = {o.value: o.exit_code for o in Outcome}
OUTCOMES = tuple(o.value for o in Outcome)


def exit_code_of(outcomes: Sequence[str]) -> int:
    """The worst outcome's exit code: a failure, then an error (or no outcome at all);
    skips alone exit as a skip, skips beside passes as a pass."""
    unknown = sorted(set(outcomes) - set(OUTCOMES))
    if unknown:
        raise InputError(f"unknown outcome {unknown[0]!r} (one of {', '.join(OUTCOMES)})")
    seen = {Outcome(o) for o in outcomes}
    if Outcome.FAIL in seen:
        return Outcome.FAIL.exit_code
    if Outcome.ERROR in seen or not seen:
        return Outcome.ERROR.exit_code
    if seen == {Outcome.SKIP}:
        return Outcome.SKIP.exit_code
    return Outcome.PASS.exit_code


def summary_line(outcomes: Sequence[str]) -> str:
    """"PASS: 3 pass, 1 skip of 4 cells": the word is the exit code's, the counts each
    outcome's, so a skip is never hidden inside a pass."""
    word = {EXIT_PASS: "PASS", EXIT_FAIL: "FAIL", EXIT_ERROR: "ERROR",
            EXIT_SKIP: "SKIP"}[exit_code_of(outcomes)]
    counts = ", ".join(f"{outcomes.count(o)} {o}" for o in OUTCOMES if o in outcomes)
    if not outcomes:
        return f"{word}: no cell was run"
    return f"{word}: {counts} of {len(outcomes)} cell{'s' if len(outcomes) > 1 else ''}"
