"""What each subcommand does, once its options are parsed and checked: thin doors onto
the engine (matrix, runner, bisection, lore, report), and how a verdict is printed."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from s2fault import progress
from s2fault.errors import EXIT_PASS
from s2fault.machine import profiles

if TYPE_CHECKING:
    from s2fault.judge.verdict import ReportedSplat, Verdict
    from s2fault.source import Source


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
