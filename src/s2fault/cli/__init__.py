"""The s2fault command line. Every subcommand is a thin door onto the same engine.

Exit codes (errors.py; README's table): 0 pass, 1 the kernel misbehaved (or a variant
did not show what it declares), 2 could not judge (bad input, infrastructure), 4 every
run was skipped (the path under test cannot run here), 125 bisect skip, 130 interrupted.
Every option is checked (options.py) before anything is built or booted. The parsers
are in cli/parser.py, what each subcommand does in cli/commands.py.
"""

from __future__ import annotations

import signal
import sys
from typing import NoReturn

from s2fault import options, progress
from s2fault.bisection import step as bisect_step
from s2fault.cli.parser import build_parser
from s2fault.errors import EXIT_ERROR, EXIT_INTERRUPTED, S2Error


def _on_signal(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    progress.set_quiet(args.quiet)
    # SIGTERM ends a run as ^C does (QEMU quit, scratch removed, exit 130), also when
    # SIGINT was inherited ignored (a script's background job): that disposition is
    # the caller's choice and stays as it is.
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        try:
            options.validate(args)
        except S2Error as e:
            if args.command == "bisect-step":
                # git bisect run reads 1-127 as "bad": a bad option must stop it.
                print(f"s2fault: bisect-step: {e.message}", file=sys.stderr)
                return bisect_step.EXIT_ABORT
            raise
        code: int = args.func(args)
        return code
    except S2Error as e:
        progress.clear()
        print(f"s2fault: error: {e.message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        progress.clear()
        print("s2fault: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
