"""Outcome classes and the exit-code contract shared by every front end.

One vocabulary everywhere (CLI table, JSON, JUnit, TAP, KTAP, Avocado, bisect):

  pass   0    the kernel showed what it should
  fail   1    the kernel misbehaved, or a variant did not show what it declares
  error  2    could not judge: bad input, infrastructure, a kernel lacking what the
              workload needs
  skip   4    the path under test cannot run here (DIC=1, kvm-arm.mode refused, no
              memory for the hugepage); 4 only when everything asked was skipped, as
              kselftest's KSFT_SKIP
  125         (bisect) this commit cannot be built or judged: skip it
  130         interrupted (SIGINT, SIGTERM)
"""

from __future__ import annotations

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_ERROR = 2
EXIT_SKIP = 4  # kselftest's KSFT_SKIP
EXIT_BISECT_SKIP = 125
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for ^C


class S2Error(Exception):
    """A one-line, user-facing error. The CLI prints it without a traceback."""

    exit_code = EXIT_ERROR
    kind = "error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InputError(S2Error):
    """Bad input from the user: a path, a variant name, an option."""

    kind = "input"


class InfraError(S2Error):
    """The machine could not do its part: a missing tool, QEMU died, no memory."""

    kind = "infrastructure"


class NotApplicable(S2Error):
    """The path under test cannot run on this machine (e.g. no host memory for the
    guest's hugepage): a skip with this reason, never a pass, a fail or an error."""

    exit_code = EXIT_SKIP
    kind = "skip"


class BuildError(S2Error):
    """The kernel did not build, or a patch did not apply, or a symbol was dropped.

    For bisection this is "skip this commit" (125), never good or bad.
    """

    kind = "build"
