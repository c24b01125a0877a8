"""The arithmetic of bench.py's floors: what a figure over its goal is made of, and what
would remain of it with nothing avoidable left. Pure functions of measured seconds (no
s2fault import, no I/O), so tests/test_bench_floors.py checks them without a kernel.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    name: str
    seconds: float


@dataclass(frozen=True)
class Floor:
    """A floor as the sum of its parts."""

    parts: tuple[Part, ...]

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.parts)

    @property
    def largest(self) -> Part:
        return max(self.parts, key=lambda p: p.seconds)

    def describe(self) -> str:
        """"floor 6.1 s: walk 2.0 s + link 1.1 s + boot 3.0 s (largest: boot)"."""
        return (f"floor {self.seconds:.1f} s: "
                + " + ".join(f"{p.name} {p.seconds:.1f} s" for p in self.parts)
                + f" (largest: {self.largest.name})")


def difference(a: float, b: float) -> float:
    """a - b for a part known only as the difference of two measurements taken apart:
    noise can make it negative, and a part never costs less than nothing."""
    return max(0.0, a - b)


@dataclass(frozen=True)
class EditLoop:
    """One edit's seconds as the bench measures them (see bench.edit_loop)."""

    total: float  # `s2fault check` of the edited variant, wall clock
    build: float  # the cell's build seconds (kernel.build)
    sync: float  # bringing the tree's source to the series (buildtree.sync)
    tuxmake: float  # the tuxmake run and the artifacts' copy, wall clock (make_seconds)
    make_edit: float  # make inside that run (tuxmake's duration of the build target)
    make_walk: float  # make again, nothing changed: kbuild's walk of an up-to-date tree
    make_replay: float  # make again after touching the edited file: ccache hit + link
    runs: float  # QEMU seconds of the cells
    kernel_boot: float  # of those, the kernel's own boot to /init


def edit_breakdown(m: EditLoop) -> tuple[list[Part], Floor]:
    """Every part of the figure, in the order they happen, and the floor: the walk,
    the edited file's compile, the link, and one boot to a verdict. The rest (the CLI
    and Python around the build, tuxmake's setup and metadata, the sync) could go."""
    walk = m.make_walk
    link = difference(m.make_replay, m.make_walk)  # with the edited file's ccache hit
    compile_ = difference(m.make_edit, m.make_replay)  # a miss less a hit
    parts = [
        Part("CLI, Python and judging", difference(m.total, m.build + m.runs)),
        Part("build bookkeeping", difference(m.build, m.sync + m.tuxmake)),
        Part("sync", m.sync),
        Part("tuxmake around make", difference(m.tuxmake, m.make_edit)),
        Part("walk", walk),
        Part("compile", compile_),
        Part("link", link),
        Part("boot to /init", m.kernel_boot),
        Part("workload and power-off", difference(m.runs, m.kernel_boot)),
    ]
    return parts, Floor((Part("walk", walk), Part("compile", compile_), Part("link", link),
                         Part("boot", m.runs)))


@dataclass(frozen=True)
class VariantBuild:
    """One variant's build in a cold check, from its s2fault-build.json."""

    name: str
    seconds: float  # kernel.build, wall clock (the cell's build seconds)
    make: float  # its own tree's make (tuxmake), on top of the tree it was seeded from
    seed: float = 0.0  # copying the built tree it was seeded from
    base_make: float = 0.0  # the base tree's make, when this build paid for it


@dataclass(frozen=True)
class ColdCheck:
    """A check from empty caches (see bench.cold_check): the builds run one after
    another in the order given, the cells beside them and after."""

    total: float  # `s2fault check`, wall clock
    unpack: float  # the source tarball into the cache
    builds: tuple[VariantBuild, ...]
    last_cells: tuple[float, ...]  # run seconds of the last-built variant's cells


def cold_breakdown(m: ColdCheck) -> tuple[list[Part], Floor]:
    """Every part of the figure, and the floor: what every run waits on, one step after
    another (the unpack, the base tree's make from an empty ccache, each variant's make
    in its own tree), and then the last-built variant's longest cell. The seeds, the
    bookkeeping and any cell that did not fit beside the builds could go; the makes are
    make's own work at `--jobs` of the host's CPUs, and a later one cannot start before
    the base tree is built."""
    base = sum(b.base_make for b in m.builds)
    makes = sum(b.make for b in m.builds)
    seeds = sum(b.seed for b in m.builds)
    built = sum(b.seconds for b in m.builds)
    last_cell = max(m.last_cells, default=0.0)
    parts = [
        Part("unpack", m.unpack),
        Part("base make", base),
        Part("variants' makes", makes),
        Part("seeds", seeds),
        Part("build bookkeeping", difference(built, base + makes + seeds)),
        Part("CLI, cells after the last build, judging", difference(m.total, m.unpack + built)),
    ]
    return parts, Floor((Part("unpack", m.unpack), Part("base make", base),
                         Part("variants' makes", makes), Part("last cell", last_cell)))


def cpu_floor(cpu_seconds: float, cpus: int) -> float:
    """No schedule does `cpu_seconds` of work on `cpus` CPUs in less time than this."""
    return cpu_seconds / max(1, cpus)


def cell_cpus(dilated: bool, smp: int, host_cpus: int) -> int:
    """CPUs a matrix cell holds while it runs, as matrix.Cores gives them: a dilated run
    one (-icount is one TCG thread), a functional run the CPUs it emulates, capped by
    the host's."""
    return 1 if dilated else max(1, min(smp, host_cpus))


def matrix_floor(cells: list[tuple[float, int]], host_cpus: int) -> tuple[float, str]:
    """The floor of a matrix whose cells are (run seconds, CPUs held): no schedule ends
    before its longest cell, nor before the host's CPUs have done every cell's
    CPU-seconds. Returns it and which of the two bounds it is."""
    longest = max((s for s, _ in cells), default=0.0)
    spread = sum(s * n for s, n in cells) / max(1, host_cpus)
    return (longest, "longest cell") if longest >= spread else (spread, "CPUs")


def largest_files(files: dict[str, float], total: float, n: int = 5
                  ) -> list[tuple[str, float, float]]:
    """The `n` test files that took longest: (file, seconds, share of `total`)."""
    top = sorted(files.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return [(name, secs, secs / total if total > 0 else 0.0) for name, secs in top]
