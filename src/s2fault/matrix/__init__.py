"""The variant matrix: build each variant, run its cells (matrix/cell.py) in each mode, as far
side by side as the cores allow (matrix/cores.py), run again what the model could not judge,
and compare observed with declared.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from s2fault import kernel, progress, project, runner, source
from s2fault.errors import InputError, S2Error
from s2fault.guest import workloads
from s2fault.judge.rules import NEVER_REACHED_INIT
from s2fault.judge.starved_model import MODEL_STARVED
from s2fault.judge.verdict import Verdict
from s2fault.kernel import variants
from s2fault.machine import profiles
from s2fault.matrix.cell import Cell, judge_cells
from s2fault.matrix.cores import Cores, cores_available
from s2fault.options import DEFAULT_RETRIES
from s2fault.outcome import Outcome


@dataclass(frozen=True)
class RunOptions:
    """What every cell of one matrix run shares."""

    vcpus: int | None = None
    # The source every variant is built from: a spec (resolved once, by run_matrix or
    # run_variant) or the command's resolved Source, which every build and cell shares.
    source: source.Source | str | None = None
    fragments: tuple[str, ...] | list[str] | None = None
    repeat: int = 1
    profile_overrides: dict[str, Any] = field(default_factory=dict)
    pages: str | None = None  # the page size the fragments select (picks declarations)
    workloads: tuple[str, ...] = (workloads.DEFAULT,)
    cores: int | None = None  # CPUs the run may keep busy (default: S2FAULT_CORES or all)
    # Runs again, per repetition, after a run the time-dilated model could not judge
    # because it starved the kernel's housekeeping (retryable); each attempt is
    # kept in the cell's "retried".
    retries: int = DEFAULT_RETRIES


def with_references(names: list[str], modes: list[str] | tuple[str, ...] = variants.MODES,
                    pages: str | None = None,
                    workload_names: tuple[str, ...] = (workloads.DEFAULT,)) -> list[str]:
    """Add the variants that the latency expectations of these modes are measured against."""
    out = list(names)
    for name in names:
        var = variants.load(name)
        for exp in (var.expectation(mode, pages, wl) for mode in modes for wl in workload_names):
            ref = exp.latency_reference
            if (exp.latency_ratio_min or exp.slope_ratio_min) and ref and ref not in out:
                out.insert(0, ref)
    return out


def run_matrix(names: list[str], modes: list[str], results_dir: Path,
               options: RunOptions | None = None) -> list[Cell]:
    """Build and run every variant under every workload in every mode, then compare.

    Builds run one after another in this thread while the cells of the variants already
    built boot in worker threads: variant N boots while N+1 builds, and independent
    cells run side by side as far as the cores allow (see cores.Cores). (The builds stay in
    the main thread so that an interrupt stops the running build at once.)"""
    options, unbuildable = pinned(options or RunOptions())
    names = with_references(names or variants.names(), modes, options.pages, options.workloads)
    unapplied = {} if unbuildable else kernel.series_problems(names, options.source)
    cores = Cores(options.cores or cores_available())
    cells: list[Cell] = []
    # A thread per waiting cell, not per core: with one per core a functional cell
    # waiting for the whole machine would hold up the dilated cell queued behind it,
    # which could run beside the one that is running. Cores decides what runs.
    with ThreadPoolExecutor(_MAX_WAITING, thread_name_prefix="s2fault-run") as runs:
        try:
            pending: list[Future[None]] = []
            for name in names:
                if unbuildable:
                    cells += unbuilt(name, modes, options, f"build: {unbuildable}")
                    continue
                if name in unapplied:
                    cells += not_applying(name, modes, options, unapplied[name])
                    continue
                variant_cells, tasks = _variant_cells(name, modes, results_dir, options, cores)
                cells += variant_cells
                pending += [runs.submit(task) for task in tasks]
            for done in pending:
                done.result()
        except BaseException:
            runs.shutdown(cancel_futures=True)  # the running QEMUs end on their own
            raise
    judge_cells(cells)
    progress.clear()
    return cells


def pinned(options: RunOptions) -> tuple[RunOptions, str | None]:
    """The options with their source resolved, once for the whole run: every variant is
    built from, and every cell run against, that one Source (a `REPO@branch` pinned to
    the commit it named now). When the source cannot be had: the options as they are
    and why, which every cell then reports (could not judge, nothing built)."""
    if isinstance(options.source, source.Source):
        return options, None
    try:
        return replace(options, source=source.resolve(options.source, project.cache_dir())), None
    except S2Error as e:
        return options, e.message


_MAX_WAITING = 64  # threads are started as cells are submitted, up to this many


def _build(name: str, options: RunOptions, cores: Cores) -> kernel.KernelBuild:
    with cores.take(cores.for_build()):
        progress.stage(name, "build")
        return kernel.build(name, options.source, list(options.fragments or []) or None)


def not_applying(name: str, modes: list[str], options: RunOptions, why: str) -> list[Cell]:
    """The cells of a variant whose series does not apply to the source: checked
    before the first build, so none is built for it; could not judge, never failed."""
    return unbuilt(name, modes, options, f"could not judge: {why}")


def unbuilt(name: str, modes: list[str], options: RunOptions, why: str) -> list[Cell]:
    """The cells of a variant that was not built, each with `why` (none is run)."""
    var = variants.load(name)
    return [Cell(name, mode, var.expectation(mode, options.pages, wl.name),
                 why=why, workload=wl.name, vcpus=options.vcpus, pages=options.pages)
            for wl, mode in _plan(modes, options)]


def _plan(modes: list[str], options: RunOptions) -> list[tuple[workloads.Workload, str]]:
    return [(workloads.get(wl), mode) for wl in options.workloads for mode in modes
            if mode in workloads.get(wl).modes]


def check_plan(modes: list[str], options: RunOptions) -> None:
    """Refuse a matrix with no cell before anything is built: a check that judged
    nothing would otherwise read as a pass."""
    if _plan(modes, options):
        return
    asked = ", ".join(f"{w} (modes: {', '.join(workloads.get(w).modes)})"
                      for w in options.workloads)
    raise InputError(f"no cell to run: no workload asked for runs in mode "
                     f"{', '.join(modes)}; asked for {asked}")


def run_variant(name: str, modes: list[str], results_dir: Path,
                options: RunOptions | None = None) -> list[Cell]:
    """Build one variant and run it under each workload in each of the workload's modes;
    the cells are not compared yet (a latency expectation needs its reference cell:
    see judge_cells())."""
    options, unbuildable = pinned(options or RunOptions())
    if unbuildable:
        return unbuilt(name, modes, options, f"build: {unbuildable}")
    cells, tasks = _variant_cells(name, modes, results_dir, options,
                                  Cores(options.cores or cores_available()))
    for task in tasks:  # one after another: the caller asked for one variant
        task()
    return cells


def _variant_cells(name: str, modes: list[str], results_dir: Path, options: RunOptions,
                   cores: Cores) -> tuple[list[Cell], list[Callable[..., None]]]:
    """Build the variant; its cells, in plan order, and one task per cell that runs it
    (its repeats one after another)."""
    var = variants.load(name)
    plan = _plan(modes, options)
    try:
        build = _build(name, options, cores)
    except S2Error as e:
        return unbuilt(name, modes, options, f"build: {e.message}"), []
    build_info = {
        "key": build.key, "cached": build.cached,
        "seconds": round(build.seconds, 1), "image": str(build.image),
        "config": str(build.config),
    }
    cells, tasks = [], []
    for wl, mode in plan:
        prof = profiles.mode(mode).with_(workload=wl.name, **wl.profile_changes(mode))
        prof = prof.with_(vcpus=options.vcpus, **options.profile_overrides)
        cell = Cell(name, mode, var.expectation(mode, options.pages, wl.name), build=build_info,
                    workload=wl.name, vcpus=options.vcpus, pages=options.pages)
        cells.append(cell)
        tasks.append(lambda c=cell, p=prof, w=wl: _run_cell(c, p, w, build, results_dir,
                                                            options, cores))
    return cells, tasks


def _run_cell(cell: Cell, prof: profiles.Profile, wl: workloads.Workload,
              build: kernel.KernelBuild, results_dir: Path, options: RunOptions,
              cores: Cores) -> None:
    name, mode = cell.variant, cell.mode
    suffix = "" if wl.name == workloads.DEFAULT else f"-{wl.name}"
    for i in range(options.repeat):
        label = f"{name}-{mode}{suffix}" + (f"-{i + 1}" if options.repeat > 1 else "")
        try:
            extra = wl.extra_initramfs(options.source)
            for attempt in range(options.retries + 1):
                with cores.take(cores.for_run(prof)):
                    outdir = runner.new_run_dir(results_dir, label)
                    what = "run" + (f" {i + 1}/{options.repeat}" if options.repeat > 1 else "")
                    what += f" (again: {attempt} of {options.retries})" if attempt else ""
                    progress.stage(f"{name}/{mode}{'/' + wl.name if suffix else ''}", what)
                    v = runner.run_kernel(build.image, prof, outdir, label, build.config,
                                          extra_initramfs=extra)
                if not retryable(v) or attempt == options.retries:
                    break
                cell.retried.append({"dir": str(outdir), "reason": v.reason})
            cell.verdicts.append(v)
        except S2Error as e:
            cell.why = e.message
            cell.outcome = Outcome.SKIP if e.kind == "skip" else Outcome.ERROR
            break


def retryable(v: Verdict) -> bool:
    """A run worth running again: the model failed, not the kernel or the set-up. A
    starved model, or a time-dilated boot that stalled before init without a report."""
    if v.verdict is not Outcome.ERROR:
        return False
    if v.reason.startswith(MODEL_STARVED):
        return True
    dilated = (v.profile or {}).get("icount_shift") is not None
    return dilated and v.reason.startswith(NEVER_REACHED_INIT) and not v.splats


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")
