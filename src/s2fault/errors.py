"""Outcome classes and the exit-code contract shared by every front end.

0 pass, 1 the kernel misbehaved, 2 the run could not be judged (bad input,
infrastructure, not applicable), 125 for `git bisect run` when a commit
cannot be built.
"""

from __future__ import annotations

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_ERROR = 2
EXIT_BISECT_SKIP = 125


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


class BuildError(S2Error):
    """The kernel did not build, or a patch did not apply, or a symbol was dropped.

    For bisection this is "skip this commit" (125), never good or bad.
    """

    kind = "build"
