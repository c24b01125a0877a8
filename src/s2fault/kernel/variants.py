"""Kernel variants: patches/<name>/ holds a quilt-style series and variant.toml.

variant.toml declares what the variant must show in each mode; the matrix
compares that with what a run observed. Adding a variant is adding a folder.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from s2fault import project
from s2fault.errors import InputError
from s2fault.guest import workloads
from s2fault.machine import profiles

if TYPE_CHECKING:  # the analyzer loads with the run stage, not with the CLI
    from s2fault.judge.analyzer import Splat

MODES = tuple(profiles.MODES)  # one per profiles/*.toml
# What `check` runs when no --mode is given: the modes every variant declares and the
# suite runs whole. A hardware model (altra-max: 64 CPUs) runs on request.
DEFAULT_MODES = ("functional", "dilated")
# `expectations_filled = false` in variant.toml: a variant imported from a mailing list
# whose expectations nobody has declared yet; check runs it but judges nothing.
FILLED_KEY = "expectations_filled"
PAGES = ("4k", "16k", "64k")
DEFAULT_PAGES = "64k"


@dataclass(frozen=True)
class SplatSpec:
    """One splat a variant must show. Omitted fields match anything."""

    kind: str
    subtype: str | None = None
    function: tuple[str, ...] = ()
    in_frames: tuple[str, ...] = ()
    task: str | None = None
    processes_min: int = 1  # seen in at least this many processes (distinct pids)
    # A regular expression searched in the source location the report names: the
    # might_sleep() of mutex_lock() (kernel/locking/mutex.c) and might_alloc()
    # (include/linux/sched/mm.h) print one message for different culprits.
    where: str | None = None

    def matches(self, splat: Splat) -> bool:
        if splat.kind != self.kind:
            return False
        if self.subtype and splat.subtype != self.subtype:
            return False
        if self.function and splat.function not in self.function:
            return False
        if self.in_frames:
            frames = set(splat.frames) | {splat.function}
            if not frames.intersection(self.in_frames):
                return False
        if self.task and splat.task != self.task:
            return False
        if self.where and not re.search(self.where, splat.where or ""):
            return False
        return True

    def describe(self) -> str:
        text = self.kind + (f":{self.subtype}" if self.subtype else "")
        if self.function:
            text += " in " + "|".join(self.function)
        if self.in_frames:
            text += " via " + "|".join(self.in_frames)
        if self.processes_min > 1:
            text += f" in >={self.processes_min} processes"
        if self.where:
            text += f" at /{self.where}/"
        return text


@dataclass(frozen=True)
class Expectation:
    splats: tuple[SplatSpec, ...] = ()
    clean: bool = True
    latency_ratio_min: float | None = None
    latency_reference: str | None = None
    # many-blocks: the slope of cost against the number of blocks, against the reference's
    slope_ratio_min: float | None = None
    # vCPUs released into their exec fault that never came back (alloc-failure);
    # None: either outcome, for a livelock that needs a race to lose ("may" in TOML)
    stuck: bool | None = False
    # slab allocations failed by fault injection in the fault path; None: not checked
    injected_failures: int | None = None
    unfilled: bool = False  # not declared yet: never judged, never a silent pass

    def describe(self) -> str:
        if self.unfilled:
            return "not filled in"
        parts = [s.describe() for s in self.splats]
        if self.clean and not self.splats:
            parts.append("clean")
        if self.latency_ratio_min:
            parts.append(f"latency>={self.latency_ratio_min:g}x {self.latency_reference}")
        if self.slope_ratio_min:
            parts.append(f"slope>={self.slope_ratio_min:g}x {self.latency_reference}")
        if self.injected_failures is not None:
            parts.append(f"{self.injected_failures} injected allocation failure(s)")
        if self.stuck:
            parts.append("vCPUs stuck in the fault")
        elif self.stuck is None:
            parts.append("vCPUs may be stuck (a race)")
        return ", ".join(parts) or "anything"

    def to_dict(self) -> dict[str, Any]:
        return {
            "splats": [s.__dict__ | {"function": list(s.function), "in_frames": list(s.in_frames)}
                       for s in self.splats],
            "clean": self.clean,
            "latency_ratio_min": self.latency_ratio_min,
            "latency_reference": self.latency_reference,
            "slope_ratio_min": self.slope_ratio_min,
            "stuck": self.stuck,
            "injected_failures": self.injected_failures,
            "unfilled": self.unfilled,
            "summary": self.describe(),
        }


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    folder: Path
    base: str | None
    patches: tuple[Path, ...]  # the whole chain, base first
    expect: dict[str, Expectation] = field(default_factory=dict)  # exec-fault, default pages
    # (mode, pages, workload) -> expectation, for every combination declared or implied
    combos: dict[tuple[str, str, str], Expectation] = field(default_factory=dict)

    def expectation(self, mode: str, pages: str | None = None,
                    workload: str | None = None) -> Expectation:
        """What this variant must show in `mode`, on a kernel with `pages` pages, under
        `workload`.

        The bug's size follows the block size (512M on 64K pages, 2M on 4K), so a
        variant may declare `[expect.<mode>.pages.4k]` to override keys there; a
        workload measures other things, so `[expect.<mode>.workload.<name>]` overrides
        keys for it (applied after the page-size override)."""
        return self.combos[(mode, pages or DEFAULT_PAGES, workload or workloads.DEFAULT)]


def names() -> list[str]:
    root = project.patches_dir()
    return sorted(p.parent.name for p in root.glob("*/variant.toml"))


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


def _expectation(data: dict[str, Any], where: str) -> Expectation:
    splats = []
    for raw in data.get("splats", []):
        if "kind" not in raw:
            raise InputError(f"{where}: a splat expectation has no 'kind'")
        splats.append(
            SplatSpec(
                kind=raw["kind"],
                subtype=raw.get("subtype"),
                function=_as_tuple(raw.get("function")),
                in_frames=_as_tuple(raw.get("in_frames")),
                task=raw.get("task"),
                processes_min=int(raw.get("processes_min", 1)),
                where=raw.get("where"),
            )
        )
    ratio = data.get("latency_ratio_min")
    return Expectation(
        splats=tuple(splats),
        clean=bool(data.get("clean", not splats)),
        latency_ratio_min=float(ratio) if ratio is not None else None,
        latency_reference=data.get(
            "latency_reference", "upstream" if ratio or data.get("slope_ratio_min") else None),
        slope_ratio_min=(float(data["slope_ratio_min"])
                         if data.get("slope_ratio_min") is not None else None),
        stuck=_stuck(data.get("stuck", False), where),
        injected_failures=(int(data["injected_failures"])
                           if data.get("injected_failures") is not None else None),
    )


def _stuck(value: Any, where: str) -> bool | None:
    if isinstance(value, bool):
        return value
    if value == "may":
        return None
    raise InputError(f"{where}: stuck must be true, false or \"may\", not {value!r}")


def _override(raw: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Keys of `over` replace those of `raw`; declaring splats without `clean` lets
    `clean` follow the new splats again."""
    merged = raw | over
    if "splats" in over and "clean" not in over:
        merged.pop("clean", None)
    return merged


def _series(folder: Path) -> list[Path]:
    series = folder / "series"
    if not series.is_file():
        return sorted(folder.glob("*.patch"))
    patches = []
    for line in series.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        path = folder / line.split()[0]
        if not path.is_file():
            raise InputError(f"variant {folder.name}: series names missing patch {line}")
        patches.append(path)
    return patches


def load(name: str, _chain: tuple[str, ...] = ()) -> Variant:
    folder = project.patches_dir() / name
    spec = folder / "variant.toml"
    if not spec.is_file():
        raise InputError(f"unknown variant '{name}' (valid: {', '.join(names()) or 'none'})")
    if name in _chain:
        raise InputError(f"variant {name}: base chain loops ({' -> '.join(_chain + (name,))})")
    try:
        data = tomllib.loads(spec.read_text())
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{spec}: {e}") from e
    base = data.get("base")
    filled = data.get(FILLED_KEY, True)
    if not isinstance(filled, bool):
        raise InputError(f"{spec}: {FILLED_KEY} must be true or false")
    patches: list[Path] = []
    if base:
        patches.extend(load(base, _chain + (name,)).patches)
    patches.extend(_series(folder))
    expect = {}
    combos = {}
    for mode in MODES:
        raw = dict(data.get("expect", {}).get(mode, {}))
        by_pages = raw.pop("pages", {})
        by_workload = raw.pop("workload", {})
        where = f"{spec} [expect.{mode}]"
        for pages in by_pages:
            if pages not in PAGES:
                raise InputError(f"{spec} [expect.{mode}.pages.{pages}]: pages must be one of "
                                 f"{', '.join(PAGES)}")
        for wl in by_workload:
            if wl not in workloads.WORKLOADS:
                raise InputError(f"{spec} [expect.{mode}.workload.{wl}]: unknown workload "
                                 f"(valid: {', '.join(workloads.WORKLOADS)})")
        expect[mode] = _expectation(raw, where)
        for pages in PAGES:
            paged = _override(raw, by_pages.get(pages, {}))
            for wl in workloads.WORKLOADS:
                label = where[:-1] + (f".pages.{pages}" if pages in by_pages else "") + (
                    f".workload.{wl}" if wl in by_workload else "") + "]"
                combos[(mode, pages, wl)] = _expectation(
                    _override(paged, by_workload.get(wl, {})), label)
    if not filled:
        expect = {k: replace(e, unfilled=True) for k, e in expect.items()}
        combos = {k: replace(e, unfilled=True) for k, e in combos.items()}
    return Variant(
        name=name,
        description=str(data.get("description", "")).strip(),
        folder=folder,
        base=base,
        patches=tuple(patches),
        expect=expect,
        combos=combos,
    )
