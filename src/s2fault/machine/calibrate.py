"""Calibrating a hardware model: does the model predict the machine it stands for?

`s2fault calibrate --mode altra-max` measures the model with the line-by-line
kernel (fix-reverted) on the mode's nested host:

1. one vCPU faulting on an otherwise idle host: the cost of one 512M line-by-line
   invalidation in model time;
2. N vCPUs faulting together, N up to the hardware's vCPU count: the worst
   exec fault of each N (and the same for upstream, the reference).

It fits one time scale k (hardware-equivalent = k x model) on the single figure
alone, then predicts the worst case at the hardware's vCPU count. That prediction
is the test of the model and is reported as it comes out, beside the hardware's
own figure. The fit, the scaling and the pricing below are pure functions, so the
unit tests pin them without QEMU.

The contention model: under -icount all nested CPUs share one TCG thread and one
clock, round-robin, so N CPUs running the same invalidation at once each see about
N times the single cost (a fully serialized interconnect). `scaling()` measures how
far the model departs from that line.
"""

from __future__ import annotations

import json
import os
import re
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from s2fault import kernel, progress, project, runner
from s2fault import source as sources
from s2fault.errors import InfraError, InputError
from s2fault.judge import lines as workload_lines
from s2fault.machine import profiles

if TYPE_CHECKING:
    from s2fault.judge.verdict import ReportedSplat

VARIANT = "fix-reverted"  # the line-by-line invalidation: what the figures measure
REFERENCE = "upstream"  # the shipped kernel: the curve the fix gives
DEFAULT_VCPUS = (1, 8, 16, 32, 64)


@dataclass
class Point:
    """One run: N vCPUs faulting together on one kernel."""

    variant: str
    vcpus: int
    worst_ms: float | None  # model ms: the slowest vCPU's exec fault
    median_ms: float | None
    splats: list[str] = field(default_factory=list)  # "kind in function"
    stuck_s: list[int] = field(default_factory=list)  # soft lockups' "stuck for", model s
    icache: dict[str, Any] | None = None  # kprobe hits: guest_page, by_line (see init.c)
    wall_s: float | None = None
    verdict: str = ""
    console: str = ""

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__ | {}


def fit_scale(hardware_ms: float, model_ms: float) -> float:
    """k such that k x model = hardware, on the single-invalidation figure alone."""
    if not model_ms or model_ms <= 0:
        raise InputError(f"cannot fit a time scale on a model figure of {model_ms} ms")
    return hardware_ms / model_ms


def scaling(points: list[Point], single_ms: float, scale: float) -> list[dict[str, Any]]:
    """Worst exec fault against N, next to the serialized line N x single: where the
    model departs from "N concurrent invalidations cost N times one"."""
    rows = []
    for p in sorted(points, key=lambda p: (p.variant != VARIANT, p.variant, p.vcpus)):
        if p.worst_ms is None:
            rows.append({"variant": p.variant, "vcpus": p.vcpus, "model_ms": None})
            continue
        linear = p.vcpus * single_ms
        rows.append({
            "variant": p.variant,
            "vcpus": p.vcpus,
            "model_ms": round(p.worst_ms, 1),
            "hw_equivalent_ms": round(p.worst_ms * scale, 1),
            "serialized_ms": round(linear, 1) if p.variant == VARIANT else None,
            "vs_serialized": round(p.worst_ms / linear, 3) if p.variant == VARIANT else None,
            "per_vcpu_ms": round(p.worst_ms / p.vcpus, 1),
        })
    return rows


def whole_cache_invalidations(icache: dict[str, Any] | None) -> int | None:
    """Stage-2 I-cache invalidations that did not go line by line: every entry to
    invalidate_icache_guest_page ends in icache_inval_pou or in a whole-cache
    invalidation (see init.c), so the whole-cache ones are the difference."""
    if not isinstance(icache, dict):
        return None
    entries, by_line = icache.get("guest_page"), icache.get("by_line")
    if entries is None or by_line is None:
        return None
    return max(0, int(entries) - int(by_line))


def price_fault(point: Point, scale: float, inval_all_us: float) -> dict[str, Any]:
    """Hardware-equivalent cost of the worst exec fault, with each whole-cache
    invalidation charged at the hardware's figure instead of the model's (one
    instruction: TCG keeps the I-cache coherent itself, so `ic ialluis` costs it
    nothing). Charged serially, as the contention model charges everything: the
    worst case for the reviewer's "a full invalidation would not be worse"."""
    whole = whole_cache_invalidations(point.icache)
    base = point.worst_ms * scale if point.worst_ms is not None else None
    priced = None
    if base is not None and whole is not None:
        priced = base + whole * inval_all_us / 1000.0
    return {
        "variant": point.variant,
        "vcpus": point.vcpus,
        "whole_cache_invalidations": whole,
        "by_line_invalidations": (point.icache or {}).get("by_line")
        if isinstance(point.icache, dict) else None,
        "worst_fault_hw_ms": round(base, 3) if base is not None else None,
        "worst_fault_priced_hw_ms": round(priced, 3) if priced is not None else None,
    }


@dataclass
class Calibration:
    model: profiles.HardwareModel
    profile: profiles.Profile
    points: list[Point]

    def single(self) -> Point:
        for p in self.points:
            if p.variant == VARIANT and p.vcpus == 1 and p.worst_ms is not None:
                return p
        raise InfraError("calibration: the one-vCPU run measured no exec fault")

    def at(self, variant: str, vcpus: int) -> Point | None:
        return next((p for p in self.points if p.variant == variant and p.vcpus == vcpus),
                    None)

    @property
    def scale(self) -> float:
        return fit_scale(self.model.inval_512m_ms, self.single().worst_ms or 0)

    def summary(self) -> dict[str, Any]:
        """The issue's JSON: the fitted k, the model's figures in hardware-equivalent
        ms at the hardware's vCPU count, and the hardware's."""
        k = self.scale
        top = self.at(VARIANT, self.model.vcpus)
        worst = top.worst_ms * k if top and top.worst_ms is not None else None
        return {
            "scale": round(k, 4),
            "model": {
                "vcpus": self.model.vcpus,
                "inval_512m_ms": round((self.single().worst_ms or 0) * k, 1),
                "worst_fault_ms": round(worst, 1) if worst is not None else None,
            },
            "hardware": {
                "inval_512m_ms": _number(self.model.inval_512m_ms),
                "worst_fault_ms": _number(self.model.worst_fault_ms),
            },
        }

    def details(self) -> dict[str, Any]:
        k = self.scale
        single = self.single().worst_ms or 0
        t_model = self.model.thresholds.in_model(k)
        return self.summary() | {
            "note": "a model (-icount time dilation calibrated on one figure), not a "
                    "measurement of the hardware",
            "mode": self.model.mode,
            "hardware_source": self.model.source,
            "model_single_ms": single,
            "profile_scale": self.model.scale,
            "icount_shift": self.profile.icount_shift,
            "smp": self.profile.smp,
            "thresholds_hw_s": self.model.thresholds.__dict__,
            "thresholds_model_s": t_model.__dict__,
            "thresholds_applied_s": applied_thresholds(self.profile),
            "scaling": scaling(self.points, single, k),
            "pricing": [price_fault(p, k, self.model.inval_all_us) for p in self.points
                        if p.vcpus == self.model.vcpus],
            "points": [p.to_dict() for p in self.points],
        }


def _number(x: float) -> float | int:
    """579.0 -> 579: the hardware's figures as the report gives them."""
    return int(x) if float(x).is_integer() else x


def applied_thresholds(prof: profiles.Profile) -> dict[str, Any]:
    """The thresholds the runs used (model seconds, from the profile's k)."""
    return {"watchdog_thresh": prof.watchdog_thresh,
            "rcu_cpu_stall_timeout": prof.rcu_stall_timeout,
            "hung_task_timeout": prof.hung_task_timeout}


def sweep(variant: str, counts: list[int], prof: profiles.Profile, results: Path,
          source: sources.Source | str | None = None) -> list[Point]:
    """One boot of `variant`, one VMM run per vCPU count in `counts` (s2fault.sweep,
    init.c): each in a new VM on the same idle host, so a whole curve costs one boot."""
    build = kernel.build(variant, source)
    outdir = runner.new_run_dir(results, f"{variant}-sweep")
    swept = prof.with_(sweep=",".join(map(str, counts)), vcpus=max(counts))
    v = runner.run_kernel(build.image, swept, outdir, f"{variant}/sweep", build.config)
    text = Path(v.artifacts["console_log"]).read_text(errors="replace")
    return split_runs(variant, counts, text, v.splats, v.machine.get("seconds"),
                      v.artifacts["console_log"])


def split_runs(variant: str, counts: list[int], text: str, splats: Sequence[ReportedSplat],
               wall_s: float | None = None, console: str = "") -> list[Point]:
    """The points of a sweep's console: each run's result line, the splats printed
    while it ran (after the previous run's S2FAULT-POST) and its kprobe hits (the
    POST counts are cumulative over the boot)."""
    results: list[tuple[int, dict[str, Any]]] = []
    posts: list[tuple[int, dict[str, Any]]] = []
    for no, line in enumerate(text.splitlines(), 1):
        for marker, into in (("S2FAULT-RESULT", results), ("S2FAULT-POST", posts)):
            if marker in line:
                obj = workload_lines.json_after(line, marker)
                if obj is not None:
                    into.append((no, obj))
    points = []
    previous_end = 0
    previous_icache: dict[str, Any] | None = {"guest_page": 0, "by_line": 0}
    for i, n in enumerate(counts):
        result = results[i][1] if i < len(results) else None
        end = posts[i][0] if i < len(posts) else len(text.splitlines()) + 1
        icache = posts[i][1].get("icache") if i < len(posts) else None
        mine = [s for s in splats if previous_end < s.start_line <= end]
        worst = median = None
        if result and int(result.get("vcpus") or 0) == n:
            ms = workload_lines._latency(result.get("rounds") or [result], "exec_fault_us")
            worst, median = ms.max, ms.median
        run_icache = None
        if isinstance(icache, dict) and isinstance(previous_icache, dict):
            run_icache = {k: int(icache.get(k) or 0) - int(previous_icache.get(k) or 0)
                          for k in ("guest_page", "by_line")}
        points.append(Point(
            variant=variant, vcpus=n, worst_ms=worst, median_ms=median,
            splats=[f"{s.kind} in {s.function}" for s in mine],
            stuck_s=[s.stuck_s for s in mine if s.stuck_s is not None],
            icache=run_icache if run_icache is not None else icache, wall_s=wall_s,
            verdict="measured" if worst is not None else "no result", console=console))
        previous_end, previous_icache = end, icache
    return points


def run(mode: str, vcpu_counts: tuple[int, ...], results: Path, reference: bool = True,
        source: sources.Source | str | None = None) -> Calibration:
    model = profiles.hardware_model(mode)
    # Once for both variants: the ratio compares two kernels of one source.
    source = sources.pin(source, project.cache_dir())
    prof = profiles.mode(mode)
    # 1 first: the single figure is measured on a freshly booted, idle host.
    counts = sorted(set(vcpu_counts) | {1, model.vcpus})
    # More vCPUs than nested CPUs is allowed (the hardware's 64 on the model's host):
    # then only as many invalidate at once as there are CPUs, which the table shows.
    progress.stage("calibrate", f"{VARIANT}, vCPUs {counts}")
    points = sweep(VARIANT, counts, prof, results, source)
    if points[0].worst_ms is None:
        raise InfraError(f"calibration: the one-vCPU run measured nothing (console "
                         f"{points[0].console})")
    if reference:
        progress.stage("calibrate", f"{REFERENCE}, vCPUs {counts}")
        points += sweep(REFERENCE, counts, prof, results, source)
    progress.clear()
    return Calibration(model, prof, points)


def table(cal: Calibration) -> str:
    """Model, hardware-equivalent and hardware side by side; then the scaling."""
    k = cal.scale
    d = cal.details()
    single = cal.single().worst_ms or 0
    top = cal.at(VARIANT, cal.model.vcpus)
    hw = cal.model
    t_hw, t_m = hw.thresholds, hw.thresholds.in_model(cal.profile.scale or k)
    lines = [
        f"{hw.name}",
        f"  figures: {hw.source}",
        "  THE MODEL IS A MODEL: -icount time dilation calibrated on one figure, "
        "not a hardware measurement",
        "",
        f"scale k = {k:.4f} hardware-equivalent s per model s "
        f"(fitted on the single invalidation only; profile has {hw.scale:g})",
        "",
        f"{'':34}{'model':>12}{'hw-equivalent':>16}{'hardware':>12}",
        f"{'one 512M invalidation, 1 vCPU':34}{single:>10.0f}ms{single * k:>14.0f}ms"
        f"{hw.inval_512m_ms:>10.0f}ms   (fitted)",
    ]
    if top and top.worst_ms is not None:
        lines.append(
            f"{f'worst exec fault, {hw.vcpus} vCPUs':34}{top.worst_ms:>10.0f}ms"
            f"{top.worst_ms * k:>14.0f}ms{hw.worst_fault_ms:>10.0f}ms   (predicted: "
            f"{top.worst_ms * k / hw.worst_fault_ms:.2f}x the report)")
        lockup = "soft lockup" if any(s.startswith("soft_lockup") for s in top.splats) \
            else "no soft lockup"
        lines.append(f"{'':34}{lockup:>12}{'':16}{'soft lockup' if hw.soft_lockup else '':>12}")
    lines += [
        "",
        f"thresholds applied (kernel defaults, hw s -> model s at the profile's k = "
        f"{cal.profile.scale or k:g}): watchdog_thresh {t_hw.watchdog_thresh}"
        f" -> {t_m.watchdog_thresh} (soft lockup after {t_m.soft_lockup_after} s model = "
        f"{t_m.soft_lockup_after * k:.1f} s hw-eq at the fitted k), RCU stall "
        f"{t_hw.rcu_cpu_stall_timeout} -> "
        f"{t_m.rcu_cpu_stall_timeout}, hung task {t_hw.hung_task_timeout} -> "
        f"{t_m.hung_task_timeout}",
        "",
        f"{'VARIANT':14}{'vCPUs':>6}{'model ms':>11}{'hw-eq ms':>11}{'N x one':>11}"
        f"{'ratio':>7}  splats",
    ]
    for row in d["scaling"]:
        p = cal.at(row["variant"], row["vcpus"])
        splats = ", ".join(sorted(set(p.splats))) if p and p.splats else "clean"
        if row.get("model_ms") is None:
            lines.append(f"{row['variant']:14}{row['vcpus']:>6}{'-':>11}  {splats}")
            continue
        lin = row.get("serialized_ms")
        ratio = row.get("vs_serialized")
        lines.append(
            f"{row['variant']:14}{row['vcpus']:>6}{row['model_ms']:>11.1f}"
            f"{row['hw_equivalent_ms']:>11.1f}{(f'{lin:.0f}' if lin else ''):>11}"
            f"{(f'{ratio:.2f}' if ratio else ''):>7}  {splats}")
    priced = [x for x in d["pricing"] if x["worst_fault_hw_ms"] is not None]
    if priced:
        lines += ["", f"cost per fault at {hw.vcpus} vCPUs, hardware-equivalent ms, each "
                  f"whole-cache invalidation priced at {hw.inval_all_us:g} us:"]
        for x in priced:
            whole = x["whole_cache_invalidations"]
            extra = (f" + {whole} x {hw.inval_all_us:g} us = "
                     f"{x['worst_fault_priced_hw_ms']:.2f} ms" if whole is not None
                     else " (invalidations not counted)")
            lines.append(f"  {x['variant']:14} worst {x['worst_fault_hw_ms']:.2f} ms"
                         f" ({x['by_line_invalidations']} by line){extra}")
    return "\n".join(lines)


def write(cal: Calibration, results: Path, json_path: Path | None) -> None:
    from s2fault.report import page, plots

    results.mkdir(parents=True, exist_ok=True)
    details = cal.details()
    (results / "calibration.json").write_text(json.dumps(details, indent=2) + "\n")
    page.write_calibration_html(details, results / "calibration.html")
    (results / "scaling.svg").write_text(plots.scaling_svg(details) + "\n")
    if json_path:
        json_path.write_text(json.dumps(cal.summary(), indent=2) + "\n")


_SCALE_LINE = re.compile(r"^scale = [0-9.]+[^\n]*$", re.M)
_CALIBRATED_LINE = re.compile(r"^calibrated = \"[^\"\n]*\"[^\n]*$", re.M)


def write_scale(mode: str, scale: float, how: str) -> Path:
    """Put a fitted k into profiles/<mode>.toml ([model] scale, and calibrated = how it
    was measured), in place of the old one: the runs after it use it. Written to a
    temporary file and renamed, so an interrupted write leaves the old profile."""
    path = profiles.profiles_dir() / f"{mode}.toml"
    text = path.read_text()
    model = text.find("\n[model]")
    end = text.find("\n[", model + 1)
    end = len(text) if end < 0 else end
    section = text[model:end]
    if model < 0 or not _SCALE_LINE.search(section):
        raise InputError(f"{path}: no [model] table with a 'scale = ' line to update")
    section = _SCALE_LINE.sub(f"scale = {scale:.4g}", section, count=1)
    line = f'calibrated = "{time.strftime("%Y-%m-%d")}, {how}"'
    if _CALIBRATED_LINE.search(section):
        section = _CALIBRATED_LINE.sub(line.replace("\\", "\\\\"), section, count=1)
    else:
        section = _SCALE_LINE.sub(lambda m: m.group(0) + "\n" + line, section, count=1)
    new = text[:model] + section + text[end:]
    tomllib.loads(new)  # what is written must load
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(new)
    os.replace(tmp, path)
    return path


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")
