"""A cell of the matrix (a variant, a workload, a mode): its runs' verdicts, and how
they compare with what the variant declares (variants.Expectation), which gives the
cell its outcome.

A known-bad variant that comes out clean is a mismatch, exactly like a clean
variant that splats: that is what makes the suite's "pass" worth anything.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from s2fault import __version__
from s2fault.guest import workloads
from s2fault.judge.measurements import Measurements
from s2fault.judge.rules import NO_LOCKDEP
from s2fault.judge.verdict import Preconditions, ReportedSplat, Verdict
from s2fault.kernel import variants
from s2fault.machine import profiles
from s2fault.outcome import Outcome, exit_code_of


@dataclass
class Cell:
    variant: str
    mode: str
    declared: variants.Expectation
    verdicts: list[Verdict] = field(default_factory=list)
    observed: str = ""
    why: str = ""
    flaky: bool = False
    build: dict[str, Any] = field(default_factory=dict)
    workload: str = workloads.DEFAULT
    # Set when judged (_compare): pass (every run as declared), fail (a run was not),
    # skip or error (no run could be judged). Before that: error, or skip when the
    # cell could not run here.
    outcome: Outcome = Outcome.ERROR
    vcpus: int | None = None  # as asked; None: the mode's default (names the cell)
    pages: str | None = None
    retried: list[dict[str, Any]] = field(default_factory=list)  # attempts run again, and why

    @property
    def verdict(self) -> Verdict | None:
        return self.verdicts[-1] if self.verdicts else None

    @property
    def test_id(self) -> str:
        """The cell's stable name, the same in every run and every report:
        variant.workload.mode, plus vCPUs and page size only when asked for other
        than the defaults (so CI jobs of one matrix never share a name). Never a
        measurement: dashboards (LAVA, SQUAD, KCIDB) key their history on it."""
        return stable_id(self.variant, self.workload, self.mode, self.vcpus, self.pages)

    def max_latency_ms(self) -> float | None:
        values = [ms for v in self.verdicts if (ms := v.exec_fault_max_ms) is not None]
        return max(values) if values else None

    def slope_ms(self) -> float | None:
        """many-blocks: the cost of one more executable block (max over runs)."""
        values = [v.workload.blocks.slope_ms for v in self.verdicts
                  if v.workload and v.workload.blocks and v.workload.blocks.slope_ms is not None]
        return max(values) if values else None

    def splat_counts(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for v in self.verdicts:
            counts.update({_splat_key(s) for s in v.splats})
        return dict(counts)

    def to_dict(self) -> dict[str, Any]:
        # The last run's verdict, as its result.json says it; a cell never run has none
        # (who ran it: None, not known).
        run = self.verdict.to_dict() if self.verdict else {
            "verdict": Outcome.ERROR, "reason": self.why, "splats": [], "workload": {},
            "preconditions": {}, "artifacts": {}, "profile": {}, "versions": {},
            "runner": None}
        return {
            "test_id": self.test_id,
            "outcome": self.outcome,
            "variant": self.variant,
            "mode": self.mode,
            "workload_name": self.workload,  # "workload" is the run's measurements
            "declared": self.declared.to_dict(),
            "observed": self.observed,
            # check.json's older encoding of the outcome: None when not judged
            "match": _MATCH_JSON.get(self.outcome),
            "why": self.why,
            "flaky": self.flaky,
            "runs": len(self.verdicts),
            "retried": self.retried,
            "run_seconds": round(sum(v.machine.get("seconds") or 0 for v in self.verdicts), 2),
            "splat_counts": self.splat_counts(),
            "verdict": run["verdict"],
            "reason": run["reason"],
            "splats": run["splats"],
            "workload": run["workload"],
            "preconditions": run["preconditions"],
            "artifacts": run["artifacts"],
            "profile": run["profile"],
            "build": self.build,
            # who ran the workload: qemu (init ran the VMM) or host-run
            "runner": run["runner"],
            # Every cell names them, also one that never booted (None: not known).
            "versions": {"s2fault": __version__, "qemu": None, "cpu": None, "kernel": None}
            | run["versions"],
        }


_MATCH_JSON = {Outcome.PASS: True, Outcome.FAIL: False}


def stable_id(variant: str, workload: str, mode: str, vcpus: int | None = None,
              pages: str | None = None) -> str:
    name = f"{variant}.{workload}.{mode}"
    if vcpus is not None and vcpus != profiles.mode(mode).vcpus:
        name += f".{vcpus}vcpus"
    if pages and pages != "64k":
        name += f".{pages}"
    return name


def _splat_key(s: ReportedSplat) -> str:
    key = s.kind + (f":{s.subtype}" if s.subtype else "")
    return key + (f" in {s.function}" if s.function else "")


def host_cell(v: Verdict, workload: str) -> Cell:
    """`s2fault host-run`'s one cell: the host's running kernel, which no variant
    declares, judged as a clean kernel is (named host.WORKLOAD.host-run in reports)."""
    cell = Cell("host", "host-run", variants.Expectation(), verdicts=[v], workload=workload)
    judge_cells([cell])
    return cell


def judge_cells(cells: list[Cell]) -> None:
    """Compare every cell with its declaration (references looked up among `cells`)."""
    by_key = {(c.variant, c.workload, c.mode): c for c in cells}
    for cell in cells:
        _compare(cell, by_key)


def _not_judged(cell: Cell) -> Outcome:
    """A cell none of whose runs could be judged: a skip when each was skipped (or the
    cell could not run here), else an error."""
    if cell.verdicts:
        skipped = all(v.verdict is Outcome.SKIP for v in cell.verdicts)
    else:
        skipped = cell.outcome is Outcome.SKIP
    return Outcome.SKIP if skipped else Outcome.ERROR


def _compare(cell: Cell, by_key: dict[tuple[str, str, str], Cell]) -> None:
    ref = cell.declared.latency_reference
    ref_cell = by_key.get((ref, cell.workload, cell.mode)) if ref else None
    if cell.declared.unfilled:  # imported, not declared yet: show what it did, judge nothing
        cell.outcome = _not_judged(cell)
        cell.observed = observed_summary(cell.verdict) if cell.verdict else "not run"
        cell.why = cell.why or f"could not judge: expectations of {cell.variant} not filled in"
        return
    runs = [compare(cell.declared, v, ref_cell) for v in cell.verdicts]
    if not runs:
        cell.outcome = _not_judged(cell)
        cell.observed = "not run"
        return
    seen = {o for o, _, _ in runs}
    cell.observed = runs[-1][1]
    if seen == {Outcome.PASS}:
        cell.outcome, cell.why = Outcome.PASS, ""
    elif Outcome.PASS not in seen and Outcome.FAIL not in seen:
        cell.outcome, cell.why = _not_judged(cell), runs[-1][2]
    else:
        # A run that was not as declared, or runs as declared beside runs that could
        # not be judged: neither is a pass.
        failing = [w for o, _, w in runs if o is Outcome.FAIL]
        cell.outcome = Outcome.FAIL
        cell.why = failing[0] if failing else runs[-1][2]
        if Outcome.PASS in seen:
            cell.flaky = True
            n_ok = sum(1 for o, _, _ in runs if o is Outcome.PASS)
            cell.why = f"flaky: matched in {n_ok}/{len(runs)} runs; {cell.why}"


def observed_summary(v: Verdict, ref_ms: float | None = None,
                     ref_slope: float | None = None) -> str:
    parts = [_splat_key(s) for s in v.splats]
    uniq = list(dict.fromkeys(parts))
    text = ", ".join(uniq[:4]) + (f" +{len(uniq) - 4}" if len(uniq) > 4 else "")
    text = text or ("clean" if v.verdict is Outcome.PASS else v.verdict)
    measured = v.workload or Measurements()
    ms = v.exec_fault_max_ms
    if ms is not None:
        text += f"; max {ms:g} ms"
        if ref_ms:
            text += f" ({ms / ref_ms:.1f}x)"
    hw = measured.hardware_equivalent
    if hw and hw.worst_fault_ms is not None:
        text += f" = {hw.worst_fault_ms:g} ms hw-eq"
        if hw.whole_cache_invalidations:
            text += (f" (+{hw.whole_cache_invalidations} whole-cache inval. = "
                     f"{hw.whole_cache_ms:g} ms)")
    slope = measured.blocks.slope_ms if measured.blocks else None
    if slope is not None:
        text += f"; {slope:g} ms/block"
        if ref_slope:
            text += f" ({slope / ref_slope:.1f}x)"
    storm = measured.storm.iteration_max_ms if measured.storm else None
    if storm is not None:
        text += f"; storm {storm:g} ms/iter"
    injected = measured.fault_injection.failures if measured.fault_injection else None
    if injected is not None:
        text += f"; {injected} injected failure(s)"
    stuck = measured.stuck_vcpus
    if stuck:
        text += f"; {len(stuck)} vCPU(s) stuck"
    tests = measured.selftests
    if tests:
        counts = Counter(t.get("status") for t in tests)
        text += "; selftests " + " ".join(f"{k} {n}" for k, n in sorted(counts.items()))
    return text


def _process_of(pid: int | None, measured: Measurements) -> str:
    """The VMM process a splat's task id belongs to: a lockup report names the vCPU
    thread, and each VMM process reports its pid and its vCPU threads' ids."""
    for vm in measured.per_vm:
        if pid is not None and (pid == vm.pid or pid in vm.vcpu_tids):
            return f"VM {vm.vm}"
    return f"pid {pid}"


@dataclass(frozen=True)
class Ratio:
    """A declared minimum ratio of a measured figure to the reference variant's (in the
    same run): what the figure is, and why there can be none."""

    what: str  # "exec-fault latency"
    unmeasured: str  # the reason when the run measured none
    figure: str  # what the reference lacks when it has none: "latency"

    def short_of(self, value: float | None, reference: float | None, reference_name: str | None,
                 minimum: float) -> tuple[Outcome, str] | None:
        """(error, why) when either figure is missing, (fail, why) when the ratio is
        under `minimum`, None when it is as declared."""
        if value is None:
            return Outcome.ERROR, self.unmeasured
        if not reference:
            return Outcome.ERROR, f"reference {reference_name} has no {self.figure} in this run"
        if value / reference < minimum:
            return Outcome.FAIL, (
                f"{self.what} {value:g} ms is {value / reference:.1f}x {reference_name}'s "
                f"{reference:g} ms, expected >= {minimum:g}x")
        return None


LATENCY_RATIO = Ratio("exec-fault latency", "no exec-fault latency measured", "latency")
SLOPE_RATIO = Ratio("cost per block", "no per-block cost measured (a many-blocks run needs >= 2)",
                    "slope")


def compare(
    exp: variants.Expectation, v: Verdict, ref_cell: Cell | None
) -> tuple[Outcome, str, str]:
    """(outcome, observed summary, why) for one run against its declared expectation:
    pass when it is as declared, fail when it is not, skip or error when it cannot
    be judged (the run was skipped; it could not be judged, or the declaration cannot
    be checked on it)."""
    ref_ms = ref_cell.max_latency_ms() if ref_cell else None
    ref_slope = ref_cell.slope_ms() if ref_cell else None
    observed = observed_summary(v, ref_ms, ref_slope)
    if v.verdict in (Outcome.ERROR, Outcome.SKIP):
        return v.verdict, observed, v.reason
    lacking = _lacking_detector(exp, v)
    if lacking:
        return Outcome.ERROR, observed, lacking
    measured = v.workload or Measurements()
    stuck = measured.stuck_vcpus
    if exp.stuck is not None and bool(stuck) != exp.stuck:
        return Outcome.FAIL, observed, (
            f"vCPU(s) {', '.join(map(str, stuck))} never came back from the exec fault"
            if stuck else "expected vCPUs stuck in the exec fault; every vCPU came back")
    # A vCPU stuck in its fault returned no value: that is the livelock, not a stale
    # I-cache; a wrong value is incoherence whatever else happened.
    if measured.coherent is False and (not stuck or measured.stale):
        return Outcome.FAIL, observed, v.reason
    if exp.injected_failures is not None:
        injected = measured.fault_injection.failures if measured.fault_injection else None
        if injected is None:
            return Outcome.ERROR, observed, "fault injection reported no failure count"
        if injected != exp.injected_failures:
            return Outcome.FAIL, observed, (
                f"{injected} allocation(s) failed by fault injection in the fault path, "
                f"expected {exp.injected_failures}")
    missing = [s.describe() for s in exp.splats if not any(s.matches(x) for x in v.splats)]
    if missing:
        return Outcome.FAIL, observed, "expected but not seen: " + "; ".join(missing)
    for spec in exp.splats:
        seen = {_process_of(x.pid, measured) for x in v.splats if spec.matches(x)}
        if len(seen) < spec.processes_min:
            return Outcome.FAIL, observed, (
                f"{spec.describe()}: seen in {len(seen)} process(es) "
                f"({', '.join(sorted(seen))})")
    if exp.clean:
        extra = [x for x in v.splats if not any(s.matches(x) for s in exp.splats)]
        if extra:
            return Outcome.FAIL, observed, f"unexpected {extra[0].kind}: {extra[0].title}"
    slope = measured.blocks.slope_ms if measured.blocks else None
    for minimum, ratio, value, reference in (
            (exp.latency_ratio_min, LATENCY_RATIO, v.exec_fault_max_ms, ref_ms),
            (exp.slope_ratio_min, SLOPE_RATIO, slope, ref_slope)):
        if minimum:
            short = ratio.short_of(value, reference, exp.latency_reference, minimum)
            if short:
                return short[0], observed, short[1]
    return Outcome.PASS, observed, ""


def _lacking_detector(exp: variants.Expectation, v: Verdict) -> str:
    """An expected splat the kernel has no detector for can never be seen, so the cell
    cannot pass or fail: it is an error naming the option."""
    pre = v.preconditions or Preconditions()
    kinds = {s.kind for s in exp.splats}
    if "soft_lockup" in kinds and pre.softlockup_detector is False:
        return ("could not judge: soft_lockup is expected but the kernel has no soft-lockup "
                "detector (needs CONFIG_SOFTLOCKUP_DETECTOR=y)")
    if "lockdep" in kinds and v.runner == "host-run" and not pre.debug_locks_before:
        # A host's production kernel: lockdep expectations are never passed.
        return (f"{NO_LOCKDEP}: a lockdep report is expected but the host kernel has "
                "no lockdep (or it was off before the workload)")
    if "lockdep" in kinds and pre.debug_locks_before is None:
        return ("could not judge: a lockdep report is expected but lockdep is not built in "
                "(needs CONFIG_PROVE_LOCKING=y)")
    return ""


def exit_code(cells: list[Cell]) -> int:
    """1 a cell failed; 2 a cell could not be judged, or there was no cell at all;
    4 every cell was skipped (kselftest's KSFT_SKIP); else 0 (passes, maybe with
    skips, which every report names)."""
    return exit_code_of([c.outcome for c in cells])


def table(cells: list[Cell]) -> str:
    """The verdict table; a WORKLOAD column when the run had more than exec-fault."""
    show_wl = any(c.workload != workloads.DEFAULT for c in cells)
    head = ("VARIANT",) + (("WORKLOAD",) if show_wl else ()) + ("MODE", "DECLARED", "OBSERVED")
    rows = [head + ("RESULT",)]
    for c in cells:
        result = c.outcome.table_word
        if c.flaky:
            result += " (flaky)"
        rows.append((c.variant,) + ((c.workload,) if show_wl else ())
                    + (c.mode, c.declared.describe(), c.observed, result))
    n = len(head)
    widths = [min(max(len(r[i]) for r in rows), 60) for i in range(n)]
    lines = []
    for r in rows:
        lines.append("  ".join(r[i][:60].ljust(widths[i]) for i in range(n)) + "  " + r[n])
    for c in cells:
        if c.outcome is not Outcome.PASS and c.why:
            where = f"{c.variant}/{c.workload}/{c.mode}" if show_wl else f"{c.variant}/{c.mode}"
            lines.append(f"{where}: {c.why}")
    return "\n".join(lines)
