"""Every parser of the command line, in one place: the subcommands, their options and
their help. Each subcommand's function is in cli/commands.py."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from s2fault import __version__, bisection, options
from s2fault.bisection import step as bisect_step
from s2fault.cli.commands import (
    cmd_analyze,
    cmd_build,
    cmd_calibrate,
    cmd_check,
    cmd_host_run,
    cmd_report,
    cmd_run,
    cmd_variant_add,
    cmd_variants,
    cmd_workloads,
)
from s2fault.errors import EXIT_ERROR
from s2fault.machine import profiles


def _profile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", default="functional", choices=list(profiles.MODES),
                   help="functional: TCG at full speed; dilated: -icount time dilation; "
                   "altra-max: dilation calibrated on Ampere Altra Max (profiles/)")
    p.add_argument("--vcpus", type=int, help="vCPUs of the workload (default 8; dilated 2)")
    p.add_argument("--cpu", help="QEMU CPU model (default: by QEMU version, DIC=0)")
    p.add_argument("--smp", type=int, help="CPUs of the nested host")
    p.add_argument("--memory", type=int, metavar="MiB", help="memory of the nested host")
    p.add_argument("--accel", choices=["tcg", "kvm"], help="QEMU accelerator (default tcg)")
    p.add_argument("--kvm-mode", choices=options.KVM_MODES,
                   help="kvm-arm.mode= for the nested host (e.g. nvhe)")
    p.add_argument("--icount-shift", type=int, help="dilation: -icount shift=N")
    p.add_argument("--rounds", type=int, help="exec-fault rounds per boot (first is a warm-up)")
    p.add_argument("--no-output-timeout", type=float, help=argparse.SUPPRESS)
    p.add_argument("--workload", default="exec-fault", metavar="NAME",
                   help="what the guest does (see `s2fault workloads`; default exec-fault)")
    _via_arg(p)


def _via_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--via", default="qemu", choices=["qemu", "host-run"],
                   help="qemu: init runs the VMM (default); host-run: the nested host runs "
                   "`s2fault host-run` from an arm64 Python root filesystem")


def _source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", help="debian (default), a kernel tree, a git repository (path or "
                   "URL) with --ref, REPO@REF, a tarball, or URL#sha256=HEX")
    p.add_argument("--ref", help="commit, branch or tag of a git --source")
    p.add_argument("--offline", action="store_true",
                   help="never touch the network; fail naming what is not cached "
                   "(also S2FAULT_OFFLINE=1)")


def _dev_loop_args(p: argparse.ArgumentParser) -> None:
    """The kernel developer's loop (README "In the edit-build-boot loop")."""
    p.add_argument("--append", metavar="ARGS", help="more kernel command line, after s2fault's")
    p.add_argument("--qemu", metavar="PATH", help="the QEMU to run (also S2FAULT_QEMU; "
                   "default qemu-system-aarch64 on PATH); its version goes in the results")
    p.add_argument("--timeouts", metavar="KEY=S[,KEY=S]",
                   help="seconds: no-output (console silent), after-splat (silent after a "
                   "stack dump), total, qmp-connect, after-done (S2FAULT-DONE seen, QEMU "
                   "still up)")
    p.add_argument("--shell", action="store_true",
                   help="after the workload, or at the first splat, a shell on the console "
                   "(the workload's binaries in /bin; 'exit' powers off)")
    p.add_argument("--gdb", type=int, nargs="?", const=1234, metavar="PORT",
                   help="QEMU's gdbstub on 127.0.0.1:PORT (default 1234), halted at the "
                   "first instruction; prints the gdb-multiarch command line")


class _Parser(argparse.ArgumentParser):
    """A usage error is one line naming the option and the value, exit 2, like every
    other bad input (argparse would print the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        # git bisect run reads 1-127 as "bad": a usage error of a step must stop it.
        code = bisect_step.EXIT_ABORT if self.prog.endswith(" bisect-step") else EXIT_ERROR
        self.exit(code, f"s2fault: error: {message} (see {self.prog} --help)\n")


def _bisect_args(p: argparse.ArgumentParser) -> None:
    """The options `bisect` and `bisect-step` share (bisection/symptom.py judges with them)."""
    p.add_argument("--mode", default="functional", choices=list(profiles.MODES),
                   help="functional: TCG at full speed; dilated: -icount time dilation")
    p.add_argument("--expect", default="any", metavar="SPEC",
                   help="what makes a commit bad: any (default), KIND[:SUBTYPE][@FUNC], "
                   "latency>=R")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="runs per commit: bad if >= 2 show it (1 of 1), good if none, "
                   "else skip")
    p.add_argument("--variant", help="apply this variant's patch chain on top of each commit")
    p.add_argument("--vcpus", type=int, help="vCPUs of the workload (default: the mode's)")
    p.add_argument("--cpu", help="QEMU CPU model (default: by QEMU version, DIC=0)")
    p.add_argument("--fix", action="store_true",
                   help="find the commit that made the symptom go away: --bad OLD shows it, "
                   "--good NEW does not (git bisect's old/new terms underneath)")


def _add_bisect_parsers(sub: argparse._SubParsersAction[Any]) -> None:
    """`bisect` and `bisect-step` (bisection/__init__.py, bisection/step.py); their help's
    epilog is the bisection package's docstring."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("bisect", help="find the commit that brought a symptom in (git bisect)",
                       description="Bisect a kernel git repository with s2fault as the judge.",
                       epilog=bisection.__doc__, formatter_class=fmt)
    p.add_argument("--repo", help="kernel git repository (its work tree is checked out "
                   "commit by commit, then restored)")
    p.add_argument("--good", help="a commit without the symptom (with --fix: the newer one)")
    p.add_argument("--bad", help="a commit with the symptom (with --fix: the older one)")
    _bisect_args(p)
    p.add_argument("--dir", help="bisection directory (default results/bisect-<time>)")
    p.add_argument("--json", help="write the summary as JSON here")
    p.add_argument("--resume", action="store_true",
                   help="continue the bisection saved in --dir (its git-bisect.log)")
    p.set_defaults(func=bisection.cmd_bisect)

    p = sub.add_parser("bisect-step", help="judge HEAD of a repository for git bisect run "
                       "(0 good, 1 bad, 125 skip, 128 abort)",
                       description="Build and judge HEAD of a kernel repository; the exit "
                       "code is for `git bisect run`.", epilog=bisection.__doc__,
                       formatter_class=fmt)
    p.add_argument("--repo", default=".", help="kernel git repository (default: .)")
    _bisect_args(p)
    p.add_argument("--dir", help="where steps are kept (default: under the s2fault cache)")
    p.add_argument("--reference-ms", type=float,
                   help="the good ref's exec-fault latency, for --expect latency>=R")
    p.set_defaults(func=bisect_step.cmd_bisect_step)


def _add_variant_parsers(sub: argparse._SubParsersAction[Any]) -> None:
    """`variant add` (lore/__init__.py; `variants` lists them)."""
    p = sub.add_parser("variant", help="make a variant folder (variant add: from a patch series)")
    vsub = p.add_subparsers(dest="variant_command", required=True)
    a = vsub.add_parser(
        "add", help="turn a patch series (mbox or lore message-id) into patches/NAME/",
        description="Turn a patch series into patches/NAME/: b4 picks the newest revision, "
        "orders the patches and collects trailers from replies.")
    a.add_argument("name", metavar="NAME", help="the new variant's folder name")
    src = a.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-mbox", metavar="FILE", help="an mbox holding the series "
                     "(a thread, or one message); works offline")
    src.add_argument("--from-msgid", metavar="ID", help="a message-id of the series on lore "
                     "(git config b4.midmask points elsewhere)")
    a.add_argument("--base", metavar="VARIANT", help="apply that variant's series first")
    a.add_argument("--expect-like", metavar="VARIANT", help="copy that variant's expectations "
                   "(default: a template that check will not judge until filled in)")
    a.add_argument("--force", action="store_true", help="replace an existing NAME")
    a.set_defaults(func=cmd_variant_add)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="s2fault",
        description="Build arm64 kernel variants, boot them nested under QEMU, and judge "
        "the KVM stage-2 exec-fault path.",
    )
    parser.add_argument("--version", action="version", version=f"s2fault {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build", help="build a kernel variant into the cache")
    p.add_argument("--variant", default="upstream")
    _source_args(p)
    p.add_argument("--pages", choices=["4k", "16k", "64k"],
                   help="page size of the kernel (default 64k: 512M blocks)")
    p.add_argument("--fragment", action="append",
                   help="extra config fragment (kernel_configs/NAME.config or a path)")
    p.add_argument("--runtime", default="null", help="tuxmake runtime (null, docker, podman)")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("run", help="boot one arm64 Image and judge it")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--kernel", help="arm64 Image or Image.gz")
    which.add_argument("--build-dir", metavar="DIR",
                       help="a kernel build directory (O=): arch/arm64/boot/Image, .config "
                       "(checked before booting), vmlinux when present (splat frames to "
                       "file:line)")
    p.add_argument("--config", help="the kernel's .config, recorded with the result")
    p.add_argument("--json", help="write the verdict as JSON here")
    p.add_argument("--results", help="directory for run artifacts")
    p.add_argument("--repeat", type=int, default=1, help="run N times; report per-splat counts")
    _source_args(p)
    _profile_args(p)
    _dev_loop_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="run the variant matrix and compare with declarations")
    p.add_argument("--variant", action="append", help="variant (repeatable; default: all)")
    p.add_argument("--mode", action="append", choices=list(profiles.MODES),
                   help="mode (repeatable; default: functional and dilated)")
    p.add_argument("--vcpus", type=int, help="vCPUs of the workload in every mode")
    _source_args(p)
    p.add_argument("--pages", choices=["4k", "16k", "64k"],
                   help="page size of the kernel (default 64k: 512M blocks)")
    p.add_argument("--fragment", action="append",
                   help="extra config fragment (kernel_configs/NAME.config or a path)")
    p.add_argument("--repeat", type=int, default=1, help="runs per cell; differing runs are flaky")
    p.add_argument("--retries", type=int, default=options.DEFAULT_RETRIES, metavar="N",
                   help="run a cell again, up to N times, when the time-dilated model could "
                   "not judge it: the guest kernel's housekeeping starved, or its boot "
                   "stalled before init without a report (never a pass or fail; "
                   f"default {options.DEFAULT_RETRIES}, 0: never)")
    p.add_argument("--results", help="results directory (default: results/check-<time>)")
    p.add_argument("--json", help="also write the JSON report here")
    p.add_argument("--junit", help="write a JUnit XML report here")
    p.add_argument("--tap", help="write a TAP report here")
    p.add_argument("--ktap", help="write a KTAP (version 1) report here (also check.ktap "
                   "in the results directory)")
    for opt, kw in (("--cpu", {}), ("--smp", {"type": int}), ("--memory", {"type": int}),
                    ("--accel", {"choices": ["tcg", "kvm"]}),
                    ("--kvm-mode", {"choices": options.KVM_MODES}),
                    ("--icount-shift", {"type": int}), ("--rounds", {"type": int})):
        p.add_argument(opt, **kw)
    p.add_argument("--no-output-timeout", type=float, help=argparse.SUPPRESS)
    p.add_argument("--workload", action="append", metavar="NAME",
                   help="workload (repeatable, 'all' for every one; default exec-fault)")
    _via_arg(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("host-run", help="run the workload on this arm64 host's own kernel "
                       "(no QEMU; root; /dev/kvm)")
    p.add_argument("--workload", default="exec-fault", metavar="NAME",
                   help="what the VMM does (see `s2fault workloads`; default exec-fault)")
    p.add_argument("--vcpus", type=int, help="vCPUs of the workload (default 8)")
    p.add_argument("--rounds", type=int, help="exec-fault rounds (first is a warm-up)")
    p.add_argument("--json", help="write the verdict as JSON here")
    p.add_argument("--junit", help="write a JUnit XML report here")
    p.add_argument("--ktap", help="write a KTAP (version 1) report here")
    p.add_argument("--results", help="directory for run artifacts (default: the cache's runs/)")
    p.add_argument("--verdict-line", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_host_run, mode="functional")

    p = sub.add_parser("calibrate", help="fit a hardware model's time scale on one figure "
                       "and predict the rest (one vCPU, then N together)")
    p.add_argument("--mode", default="altra-max",
                   choices=[m for m in profiles.MODES if m in profiles.MODELS],
                   help="a mode that models hardware (profiles/*.toml with [hardware])")
    p.add_argument("--json", help="write {scale, model, hardware} here")
    p.add_argument("--vcpus", metavar="N,N,...",
                   help="vCPU counts to run (default 1,8,16,32,64; 1 and the hardware's "
                   "count are always run)")
    p.add_argument("--no-reference", action="store_true",
                   help="skip the upstream runs (the reference curve)")
    p.add_argument("--results", help="results directory (default: results/calibrate-<time>)")
    p.add_argument("--write-scale", action="store_true",
                   help="put the fitted k into profiles/MODE.toml ([model] scale), for "
                   "the runs after this one")
    _source_args(p)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("report", help="write JUnit, TAP and HTML reports of a results directory")
    p.add_argument("results_dir", metavar="RESULTS_DIR",
                   help="a `check --results` directory, or one holding several (CI)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("analyze", help="find splats in console logs (exit 1 when one is found)")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.add_argument("logs", nargs="+", metavar="LOG", help="console log ('-' for stdin)")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("variants", help="list variants and what each declares")
    p.set_defaults(func=cmd_variants)

    p = sub.add_parser("workloads", help="list the workloads and the question each answers")
    p.set_defaults(func=cmd_workloads)

    _add_bisect_parsers(sub)
    _add_variant_parsers(sub)
    return parser
