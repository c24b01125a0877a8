"""The s2fault command line. Every subcommand is a thin door onto the same engine.

Exit codes (errors.py; README's table): 0 pass, 1 the kernel misbehaved (or a variant
did not show what it declares), 2 could not judge (bad input, infrastructure), 4 every
run was skipped (the path under test cannot run here), 125 bisect skip, 130 interrupted.
Every option is checked (options.py) before anything is built or booted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from s2fault import __version__, options, progress
from s2fault import bisection as bisect
from s2fault.bisection import step as bisect_step
from s2fault.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_PASS, S2Error
from s2fault.machine import profiles

if TYPE_CHECKING:
    from s2fault.judge.verdict import ReportedSplat, Verdict
    from s2fault.source import Source


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


def _check_via(args: argparse.Namespace, workload_names: list[str]) -> None:
    if getattr(args, "via", "qemu") != "host-run":
        return
    from s2fault.errors import InputError
    from s2fault.machine import hostrun

    mode = getattr(args, "mode", None)
    models = [m for m in ([mode] if isinstance(mode, str) else mode or []) if m != "functional"]
    if models:
        # Dilation and the hardware models are QEMU models of a slow CPU; host-run is
        # what a real host runs, and arms no lockup detector of its own.
        raise InputError(f"--via host-run runs the functional workload, as on a real "
                         f"host: --mode {models[0]} is the nested runner's (--via qemu)")
    for name in workload_names:
        hostrun.check_workload(name)


def _profile(args: argparse.Namespace) -> profiles.Profile:
    from s2fault.guest import workloads
    from s2fault.machine import profiles

    wl = workloads.get(args.workload)
    if args.mode not in wl.modes:
        from s2fault.errors import InputError

        raise InputError(f"workload {wl.name} does not run in mode {args.mode} "
                         f"(its modes: {', '.join(wl.modes)})")
    base = profiles.mode(args.mode).with_(workload=wl.name, **wl.profile_changes(args.mode))
    return base.with_(
        vcpus=args.vcpus, cpu=args.cpu, smp=args.smp, memory_mb=args.memory,
        accel=args.accel, kvm_mode=args.kvm_mode, icount_shift=args.icount_shift,
        no_output_timeout=args.no_output_timeout, rounds=args.rounds, runner=args.via,
        append=args.append, timeout_overrides=profiles.parse_timeouts(args.timeouts) or None,
        shell=args.shell or None, gdb_port=args.gdb,
    )


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "cpu": args.cpu, "smp": args.smp, "memory_mb": args.memory, "accel": args.accel,
        "kvm_mode": args.kvm_mode, "icount_shift": args.icount_shift,
        "no_output_timeout": args.no_output_timeout, "rounds": args.rounds,
        "runner": args.via,
    }


def _source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", help="debian (default), a kernel tree, a git repository (path or "
                   "URL) with --ref, REPO@REF, a tarball, or URL#sha256=HEX")
    p.add_argument("--ref", help="commit, branch or tag of a git --source")
    p.add_argument("--offline", action="store_true",
                   help="never touch the network; fail naming what is not cached "
                   "(also S2FAULT_OFFLINE=1)")


def _source_spec(args: argparse.Namespace) -> str | None:
    from s2fault import source

    if args.offline:
        # The environment carries the switch to every stage and every child process.
        os.environ[source.OFFLINE_ENV] = "1"
    return source.with_ref(args.source, args.ref)


def _resolved_source(args: argparse.Namespace) -> Source:
    """The command's source, resolved once: everything the command builds (every
    variant, every cell, the selftests) is built from this one Source, so a
    `REPO@branch` that moves while the command runs does not split it."""
    from s2fault import project, source

    return source.resolve(_source_spec(args), project.cache_dir())


def cmd_build(args: argparse.Namespace) -> int:
    from s2fault import hosttools, kernel
    from s2fault.kernel import kconfig, variants

    hosttools.preflight(*hosttools.KERNEL_BUILD)
    fragments = kconfig.fragments_for(args.pages, args.fragment)
    variants.load(args.variant)  # an unknown variant is refused before the source is had
    b = kernel.build(args.variant, _resolved_source(args), fragments, runtime=args.runtime)
    progress.clear()
    state = "cached" if b.cached else "built"
    print(f"{b.variant}: {state} in {b.seconds:.1f} s")
    print(f"  image:  {b.image}")
    print(f"  config: {b.config}")
    print(f"  key:    {b.key}")
    return EXIT_PASS


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


def cmd_run(args: argparse.Namespace) -> int:
    from s2fault import hosttools, runner
    from s2fault.guest import workloads
    from s2fault.judge import stacktrace
    from s2fault.kernel import builddir
    from s2fault.machine import profiles

    if args.qemu:
        # The environment carries the choice to every stage and every child process.
        os.environ[profiles.QEMU_ENV] = str(Path(args.qemu).absolute())
    if args.gdb is not None:
        hosttools.preflight(*hosttools.GDB)
    config = Path(args.config) if args.config else None
    vmlinux = None
    if args.build_dir:
        built = builddir.open_build_dir(Path(args.build_dir))
        kernel_path, vmlinux = built.kernel.path, built.kernel.vmlinux
        config = config or built.config
        if vmlinux:
            hosttools.preflight(stacktrace.ADDR2LINE)
    else:
        kernel_path = Path(args.kernel)
    _check_via(args, [args.workload])
    prof = _profile(args)
    # The same --source/--ref/--offline handling as build and check (it only matters
    # to a workload built from the kernel's source: kvm-selftests), resolved once for
    # every repetition, and only when the workload builds from it.
    _source_spec(args)  # --ref and --offline are checked and applied whatever the workload
    wl = workloads.get(prof.workload)
    src = _resolved_source(args) if wl.needs_source else None
    code = EXIT_PASS
    verdicts = []
    for i in range(args.repeat):
        outdir = runner.new_run_dir(Path(args.results) if args.results else None, "run")
        v = runner.run_kernel(kernel_path, prof, outdir, "run", config,
                              extra_initramfs=wl.extra_initramfs(src), vmlinux=vmlinux)
        verdicts.append(v)
        progress.clear()
        _print_verdict(v, f"[{i + 1}/{args.repeat}] " if args.repeat > 1 else "")
    from s2fault.outcome import exit_code_of

    code = exit_code_of([v.verdict for v in verdicts])
    if args.repeat > 1:
        code = _repeat_summary(verdicts, code)
    if args.json:
        from s2fault import report

        data = verdicts[-1].to_dict() if len(verdicts) == 1 else {
            "runs": [v.to_dict() for v in verdicts]}
        data = {"schema_version": report.SCHEMA_VERSION} | data
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    return code


def _print_verdict(v: Verdict, prefix: str = "") -> None:
    print(f"{prefix}{v.verdict.upper()}: {v.reason}")
    for key, value in v.versions.items():
        if key == "s2fault" or value is None:
            continue
        print(f"  {key}: {value}", end="")
    print()
    from s2fault.judge.verdict import incidents

    for lead, consequences in incidents(v.splats):  # culprit first, its knock-on under it
        print(f"  {lead.kind}: {lead.title}")
        _print_frames(lead)
        for c in consequences:
            print(f"    consequence ({c.why}): {c.kind}: {c.title}")
    if v.artifacts.get("frames_not_decoded"):
        print(f"  frames not decoded: {v.artifacts['frames_not_decoded']}")
    if v.workload and v.workload.exec_fault_ms.per_vcpu:
        print(f"  exec-fault latency per vCPU (ms): {v.workload.exec_fault_ms.per_vcpu}")
    # host-run on a host has no reproducer: nothing was booted
    for label, key in (("console", "console_log"), ("reproducer", "reproducer")):
        if v.artifacts.get(key):
            print(f"  {label}: {v.artifacts[key]}")


def cmd_host_run(args: argparse.Namespace) -> int:
    """The workload on this host's running kernel (machine/hostrun.py): no QEMU, no build."""
    from s2fault import report, runner
    from s2fault.guest import workloads
    from s2fault.machine import hostrun, profiles
    from s2fault.matrix import cell as cells

    # Before anything else: on x86 (or without root) this is the whole output.
    hostrun.require_host()
    hostrun.check_workload(args.workload)
    wl = workloads.get(args.workload)
    prof = profiles.mode("functional").with_(workload=wl.name,
                                              **wl.profile_changes("functional"))
    prof = prof.with_(vcpus=args.vcpus, rounds=args.rounds, runner=profiles.HOST_RUN)
    outdir = runner.new_run_dir(Path(args.results) if args.results else None, "host-run")
    v = hostrun.run(prof, outdir)
    progress.clear()
    if args.verdict_line:
        # The nested proof (guests/host_run.c): the verdict for the outer side, whole.
        line = "\n" + runner.HOST_RUN_LINE + " " + json.dumps(
            v.to_dict(), separators=(",", ":")) + "\n"
        os.write(sys.stdout.fileno(), line.encode())
    _print_verdict(v)
    cell = cells.host_cell(v, wl.name)
    rows = [cell.to_dict()]
    if args.json:
        data = {"schema_version": report.SCHEMA_VERSION} | v.to_dict()
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    if args.junit:
        report.write_junit(rows, Path(args.junit))
    if args.ktap:
        report.write_ktap(rows, Path(args.ktap))
    return cells.exit_code([cell])


def _print_frames(splat: ReportedSplat) -> None:
    """A splat's frames decoded to file:line (run --build-dir with a vmlinux)."""
    for f in splat.decoded or ():
        print(f"    {f.frame}" + (f" ({f.where})" if f.where else ""))


def _repeat_summary(verdicts: list[Verdict], code: int) -> int:
    from collections import Counter

    n = len(verdicts)
    seen: Counter[str] = Counter()
    for v in verdicts:
        seen.update({f"{s.kind} in {s.function}" for s in v.splats})
    outcomes = Counter(v.verdict for v in verdicts)
    print(f"{n} runs: " + ", ".join(f"{k} {c}/{n}" for k, c in sorted(outcomes.items())))
    for key, count in sorted(seen.items()):
        flaky = " (flaky)" if count != n else ""
        print(f"  {key}: {count}/{n}{flaky}")
    return code


def cmd_check(args: argparse.Namespace) -> int:
    from s2fault import matrix, report
    from s2fault.guest import workloads
    from s2fault.kernel import kconfig, variants
    from s2fault.matrix.cell import exit_code, table
    from s2fault.outcome import summary_line
    from s2fault.report import page as report_html

    chosen = [w.name for w in workloads.select(args.workload)]
    _check_via(args, chosen)
    modes = args.mode or (["functional"] if args.via == "host-run"
                          else list(variants.DEFAULT_MODES))
    # A check that would judge nothing is refused before anything is built.
    matrix.check_plan(modes, matrix.RunOptions(workloads=tuple(chosen)))
    _preflight_check(chosen, args.via)
    # A source that cannot be had stops the run here, once, not as an error in every
    # cell; the one it resolves to is what every variant and cell of the run uses.
    src = _resolved_source(args)
    names = args.variant or variants.names()
    default = Path("results") / f"check-{matrix.timestamp()}"
    results = Path(args.results) if args.results else default
    results.mkdir(parents=True, exist_ok=True)
    options = matrix.RunOptions(
        vcpus=args.vcpus, source=src,
        fragments=kconfig.fragments_for(args.pages, args.fragment), repeat=args.repeat,
        profile_overrides={k: v for k, v in _overrides(args).items() if v is not None},
        pages=args.pages, workloads=tuple(chosen), retries=args.retries,
    )
    cells = matrix.run_matrix(names, modes, results, options)
    rows = [c.to_dict() for c in cells]
    meta = {"variants": names, "modes": modes, "vcpus": args.vcpus, "repeat": args.repeat,
            "retries": args.retries,
            "pages": args.pages or "64k", "workloads": chosen,
            # What every cell was built from: the spec as given and what it resolved to.
            "source": src.spec, "source_identity": src.identity}
    report.write_json(rows, results / "check.json", meta)
    report_html.write_html(rows, results / "report.html", meta)
    if args.json:
        report.write_json(rows, Path(args.json), meta)
    if args.junit:
        report.write_junit(rows, Path(args.junit))
    if args.tap:
        report.write_tap(rows, Path(args.tap))
    report.write_ktap(rows, results / "check.ktap")
    if args.ktap:
        report.write_ktap(rows, Path(args.ktap))
    print(table(cells))
    print(f"{summary_line([c.outcome for c in cells])}; results in {results}")
    return exit_code(cells)


def _preflight_check(workload_names: list[str], via: str = "qemu") -> None:
    """Every host tool the matrix will need, before the first build or boot."""
    from s2fault import hosttools

    needs: list[str | Path] = [*hosttools.KERNEL_BUILD, *hosttools.GUEST, *hosttools.BOOT]
    if "kvm-selftests" in workload_names:
        needs += hosttools.SELFTESTS
    if via == "host-run":
        needs += hosttools.ROOTFS
    hosttools.preflight(*needs)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from s2fault import hosttools, matrix
    from s2fault.machine import calibrate

    hosttools.preflight(*hosttools.KERNEL_BUILD, *hosttools.GUEST, *hosttools.BOOT)
    src = _resolved_source(args)  # the calibrated variant and its reference: one source
    results = Path(args.results or Path("results") / f"calibrate-{matrix.timestamp()}")
    vcpus = tuple(int(n) for n in args.vcpus.split(",")) if args.vcpus \
        else calibrate.DEFAULT_VCPUS
    cal = calibrate.run(args.mode, vcpus, results, reference=not args.no_reference,
                        source=src)
    calibrate.write(cal, results, Path(args.json) if args.json else None)
    print(calibrate.table(cal))
    if args.write_scale:
        single = cal.single()
        path = calibrate.write_scale(args.mode, cal.scale, (
            f"{single.variant}, one vCPU on an idle {cal.profile.smp}-CPU nested host, "
            f"shift {cal.profile.icount_shift}: {single.worst_ms:g} ms, k {cal.scale:.4g}"))
        print(f"k = {cal.scale:.4g} written to {path}")
    print(f"results in {results}")
    return EXIT_PASS


def cmd_report(args: argparse.Namespace) -> int:
    from s2fault import report

    return report.report_main(args.results_dir)


def cmd_analyze(args: argparse.Namespace) -> int:
    from s2fault.judge import analyzer

    return analyzer.run_cli(args.logs, args.json)


def cmd_variants(args: argparse.Namespace) -> int:
    from s2fault.kernel import variants

    for name in variants.names():
        v = variants.load(name)
        print(f"{name}: {len(v.patches)} patch(es)" + (f" on {v.base}" if v.base else ""))
        for mode, exp in v.expect.items():
            print(f"  {mode}: {exp.describe()}")
    return EXIT_PASS


def cmd_workloads(args: argparse.Namespace) -> int:
    from s2fault.guest import workloads

    for wl in workloads.WORKLOADS.values():
        print(f"{wl.name} ({', '.join(wl.modes)}): {wl.question}")
    return EXIT_PASS


def cmd_variant_add(args: argparse.Namespace) -> int:
    from s2fault import lore

    return lore.cmd_variant_add(args)


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
    """`bisect` and `bisect-step` (bisection/__init__.py, bisection/step.py); their help's epilog is
    bisection/__init__.py's docstring."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("bisect", help="find the commit that brought a symptom in (git bisect)",
                       description="Bisect a kernel git repository with s2fault as the judge.",
                       epilog=bisect.__doc__, formatter_class=fmt)
    p.add_argument("--repo", help="kernel git repository (its work tree is checked out "
                   "commit by commit, then restored)")
    p.add_argument("--good", help="a commit without the symptom (with --fix: the newer one)")
    p.add_argument("--bad", help="a commit with the symptom (with --fix: the older one)")
    _bisect_args(p)
    p.add_argument("--dir", help="bisection directory (default results/bisect-<time>)")
    p.add_argument("--json", help="write the summary as JSON here")
    p.add_argument("--resume", action="store_true",
                   help="continue the bisection saved in --dir (its git-bisect.log)")
    p.set_defaults(func=bisect.cmd_bisect)

    p = sub.add_parser("bisect-step", help="judge HEAD of a repository for git bisect run "
                       "(0 good, 1 bad, 125 skip, 128 abort)",
                       description="Build and judge HEAD of a kernel repository; the exit "
                       "code is for `git bisect run`.", epilog=bisect.__doc__,
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
